"""`audiotext compare`: the whole workflow on any prepared corpus, every model over several seeds (and
folds), with the uncertainty a choice between methods needs.

1. Corpora: the corpus as it is split, or with `folds` K speaker- or sentence-independent folds
   (each clip is then tested once per seed; `test_stt` exists only without folds).
2. Text encoder, once per corpus (seeds vary the models trained on it, not their feature extractor):
   optionally masked-LM pre-training on the training sentences and fine-tuning as the text-only
   classifier, its training sentences' states cross-fitted when no test sentence is a training
   sentence (their fine-tuned states would already know the label).
3. Every listed model with every seed, on the same cached features and the one engine; each run is
   tested on `test` (and `test_stt`).
4. Per test set and model: mean ± std over seeds and a 95% bootstrap interval over test sentences
   of accuracy, macro-F1 and weighted-F1; per-class F1; a paired randomisation test of the model
   best on dev (by mean dev macro-F1 of its runs) against each other one, its p also Holm-adjusted
   over the table's tests. A model trained with
   several seeds is also scored as their ensemble (mean class probabilities), one more model in
   every table. Written to comparison.md, comparison.csv and report.html, and printed.

Layout of `out`: compare.json, [folds/fold<i>/], text/<corpus>/{pretrained,finetuned}/,
runs/<corpus>/<model>/seed<s>/, results.csv, comparison.{md,csv}, report.html.

compare.json records what is compared (the settings, a digest of the corpus and of the starting
encoder) and which corpora's text encoders are trained, so that a killed comparison resumes
(`resume`): finished runs are kept, unfinished ones continue from their last checkpoint, and
nothing is reused once the settings, the corpus or an encoder it trained has changed.
"""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audiotext.config import FUSING, AudioConfig, ModelConfig, RunConfig, TextConfig, TrainConfig, modality_of
from audiotext.data.folds import write_fold_corpora
from audiotext.data.splits import FOLD_BY, sentence_units
from audiotext.data.corpus import Split
from audiotext.data.manifest import corpus_digest, has_split, load_any_split
from audiotext.errors import SettingError
from audiotext.evaluation.evaluate import evaluate, evaluate_text_classifier
from audiotext.evaluation.metrics import classification_metrics
from audiotext.evaluation.plots import confusion_pair_png, learning_curves_png, per_class_f1_png
from audiotext.evaluation.report import REPORT_FILE, image, read_epoch_log, table, write_report, write_run_report
from audiotext.evaluation.statistics import METRICS, Estimate, estimate, holm, paired_test, resample_weights
from audiotext.features.audio import samples_digest
from audiotext.features.cache import FeatureCache
from audiotext.io import atomic_path, first_difference, folder_digest, write_csv_rows, write_json
from audiotext.models.checkpoint import CONFIG_FILE, EPOCH_LOG, FINISHED_FILE, is_finished
from audiotext.training.loop import train
from audiotext.training.masked_lm import pretrain
from audiotext.training.run_folder import require_same_settings, without_resumable_changes
from audiotext.training.text_classifier import finetune

ALL_MODELS = ("linear", "audio", "text", "early", "late", "tfn", "lmf", "mult")
FUSING_MODELS = tuple(name for name in ALL_MODELS if modality_of(name) in FUSING)
# Chosen on dev for each fusing model (benchmarks/README, "Modality dropout per model"): `mult`
# gains beyond the spread between seeds with 0.8; with 0.6 or 0.8 the others gain nothing beyond it.
MODALITY_DROPOUT = {"early": 0.3, "late": 0.3, "tfn": 0.3, "lmf": 0.3, "mult": 0.8}
# Chosen on dev (benchmarks/README, "A moving average of the weights"): `mult`'s dev macro-F1 over
# 20 seeds, each with and without the average, rose by 1.32 (paired p 0.005); measured for no other.
EMA = {"mult": 0.995}
FINETUNED = "text (fine-tuned)"  # the fine-tuned classifier itself: one run per corpus, not per seed
TEST_SETS = ("test", "test_stt")
RESAMPLES = 1000
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}
RECORD_FILE = "compare.json"
OUTPUTS = ("results.csv", "comparison.md", "comparison.csv", REPORT_FILE)  # written when every run is done
WORK_FOLDERS = ("folds", "text", "runs")


@dataclass(frozen=True)
class TextPlan:
    """How the text encoder is made: from `encoder` ("" the packaged MiniLM), optionally pre-trained
    (keyword arguments of `pretrain`) and fine-tuned (of `finetune`)."""

    encoder: str = ""
    pretrain: dict | None = None
    finetune: dict | None = None
    cross_fit: int | None = None  # folds of cross-fitting; None: 3 when test sentences are unseen, else 0
    # Tokens per sentence, for the models' text features as for pre-training and fine-tuning: the
    # out-of-fold states of a cross-fitted encoder are cut at it, and so must every other sentence be.
    max_len: int = 48


@dataclass(frozen=True)
class CompareSettings:
    """What a comparison runs. The defaults are those that helped on the demo's script split over 5
    seeds (README, "What fusion needs"); no attention dropout, because without it PyTorch runs its
    fused attention kernel, about five times faster on CPU."""

    models: tuple[str, ...] = ALL_MODELS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    folds: int = 0
    split_by: str = "speaker"  # what never crosses folds: "speaker" or "sentence"
    audio: AudioConfig = field(default_factory=lambda: AudioConfig(features="mfcc+prosody"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(attn_dropout=0.0, out_dropout=0.1, merge_how="stats"))
    # Share of training clips that lose their audio or their text, per fusing model (the others have
    # one stream: none); a fusing model not named loses none.
    modality_dropout: dict[str, float] = field(default_factory=lambda: dict(MODALITY_DROPOUT))
    # Decay of the moving average of the weights that dev evaluates and a run keeps, per model; a
    # model not named keeps none.
    ema: dict[str, float] = field(default_factory=lambda: dict(EMA))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(num_epochs=40, when=3, select_by="macro_f1", early_stop=6, transcript_noise=0.3)
    )
    text: TextPlan = field(default_factory=TextPlan)
    text_features: str = "ngrams"  # or "encoder" (see TextConfig); the linear model always reads n-grams
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in ALL_MODELS]
        if not self.models or unknown:
            raise SettingError(f"models must be some of {', '.join(ALL_MODELS)}; got {', '.join(self.models) or 'none'}")
        repeated = sorted({m for m in self.models if self.models.count(m) > 1})
        if repeated:  # its one run would be counted as two seeds, and two members of its ensemble
            raise SettingError(f"models: {', '.join(repeated)} listed twice (mult, MULT, MulT and Transformer are one model)")
        if not self.seeds:
            raise SettingError("seeds: at least one")
        if self.folds and not (self.folds >= 3 and self.split_by in FOLD_BY):
            raise SettingError(f"--folds {self.folds} --split-by {self.split_by}: folds are 3 or more, by {' or '.join(FOLD_BY)}")
        if not self.labels:
            raise SettingError("labels: the class labels, in order, are needed")
        if self.model.modality_dropout:
            raise SettingError("model.modality_dropout is not read by a comparison: give modality_dropout, a share per model")
        not_fusing = [m for m in self.modality_dropout if m not in FUSING_MODELS]
        if not_fusing:
            raise SettingError(f"modality dropout is for the fusing models ({', '.join(FUSING_MODELS)}), not {', '.join(not_fusing)}")
        if self.train.ema:
            raise SettingError("train.ema is not read by a comparison: give ema, a decay per model")
        unknown = [m for m in self.ema if m not in ALL_MODELS]
        if unknown:
            raise SettingError(f"ema names models that do not exist: {', '.join(unknown)}")
        for name in {*self.modality_dropout, *self.ema}:
            model_config(name, self)  # a share or decay out of [0, 1) is refused here, before any work


def model_config(name: str, settings: CompareSettings) -> tuple[ModelConfig, TrainConfig]:
    """The settings each model trains with. Models on pooled features converge in a few steps per
    epoch: the linear ones train longer, faster and undropped, to convergence (a fair baseline)."""
    modality = modality_of(name)
    unfused = {} if modality in FUSING else {"wide": False, "utterance_stats": False}
    model = replace(settings.model, modality=modality, modality_dropout=settings.modality_dropout.get(name, 0.0), **unfused)
    training = replace(settings.train, ema=settings.ema.get(name, 0.0))
    if name == "linear":
        model = replace(model, out_dropout=0.0)
        training = replace(training, lr=0.01, num_epochs=max(training.num_epochs, 60), early_stop=10, when=5)
    elif name == "text":
        training = replace(training, num_epochs=max(training.num_epochs, 40))
    return model, training


def run_comparison(
    data_path: str | Path,
    out: str | Path,
    settings: CompareSettings,
    cache: FeatureCache | None = None,
    progress: bool = True,
    title: str = "",
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """Runs the comparison into `out`; returns {"tables": Markdown, "summary": rows of comparison.csv}.

    `out` may not hold another comparison: `resume` continues the one there (the same settings and
    corpus), `overwrite` starts it again (see `_claim`)."""
    out = Path(out)
    labels = list(settings.labels)
    record = _claim(out, Path(data_path), settings, resume, overwrite)
    corpora = _corpora(Path(data_path), out, settings, labels)
    # (model, test set) → corpus → per seed: class probabilities (N, C)
    predictions: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {}
    truths: dict[str, list[np.ndarray]] = {}
    sentences: dict[str, list[str]] = {}  # test set → each clip's sentence, whose clips are resampled together
    examples: dict[str, Path] = {}  # model → one run folder, for its learning curves
    runs: list[dict] = []  # each run's best dev figures, for results.csv
    for corpus_name, corpus in corpora.items():
        test_sets = [s for s in TEST_SETS if has_split(corpus, s)]
        for test_set in test_sets:
            heard = test_set == "test_stt"
            split = load_any_split(corpus, test_set, labels, settings.audio.sample_rate, with_audio=heard)
            truths.setdefault(test_set, []).append(split.labels)
            spoken = spoken_sentences(corpus, split, labels, settings.audio.sample_rate) if heard else split.sentences
            sentences.setdefault(test_set, []).extend(spoken)
        encoder, trained_before = _text_encoder(corpus, out / "text" / corpus_name, settings, labels, test_sets,
                                                predictions, progress, record["text"].get(corpus_name), resume)  # fmt: skip
        if encoder != settings.text.encoder and not trained_before:
            record["text"][corpus_name] = folder_digest(encoder)
            write_json(out / RECORD_FILE, record)
        # Runs trained on another encoder than this one are not kept.
        keep_runs = resume and trained_before
        for name in settings.models:
            model, training = model_config(name, settings)
            for seed in settings.seeds:
                run_dir = out / "runs" / corpus_name / name / f"seed{seed}"
                cfg = RunConfig(
                    name=name, data_path=str(corpus.resolve()), labels=labels, audio=replace(settings.audio),
                    text=TextConfig(encoder=encoder, features=settings.text_features, max_len_for_text=settings.text.max_len),
                    model=model,
                    train=replace(training, seed=seed),
                )  # fmt: skip
                if keep_runs and is_finished(run_dir):
                    say(f"== [{corpus_name}] {name}, seed {seed}: finished before, kept ==", progress)
                    require_same_settings(run_dir / CONFIG_FILE, cfg)
                    summary = json.loads((run_dir / FINISHED_FILE).read_text(encoding="utf-8"))
                else:
                    say(f"== [{corpus_name}] {name}, seed {seed} ==", progress)
                    summary = train(cfg, run_dir, cache=cache, progress=progress, resume=keep_runs, overwrite=not keep_runs)
                runs.append({"corpus": corpus_name, "model": name, "seed": seed, **summary})
                for test_set in test_sets:
                    evaluate(run_dir, test_set, corpus, cache=cache, progress=progress)
                    _collect(predictions, name, test_set, corpus_name, _probabilities(run_dir / "eval" / test_set, labels))
                write_run_report(run_dir)  # once, with every test set
                examples.setdefault(name, run_dir)

    # The reference of the paired tests is chosen on dev, as any choice is: picked on test, its
    # p-values would lean its way.
    on_dev = {name: float(np.mean([r["dev_macro_f1"] for r in runs if r["model"] == name])) for name in settings.models}
    reference = max(on_dev, key=on_dev.get)
    summary, sections, tables = [], [], []
    for test_set, per_corpus in truths.items():
        y_true = np.concatenate(per_corpus)
        models = _with_ensembles({m: _stack(p) for (m, t), p in predictions.items() if t == test_set})
        groups = sentence_units(pd.Series(sentences[test_set])).to_numpy()
        rows, text, section = _summarise(test_set, y_true, groups, models, labels, (reference, on_dev[reference]))
        summary += rows
        tables.append(text)
        sections.append(section)
    sections.append(_learning_curves(examples))
    write_csv_rows(out / "results.csv", runs)
    _write_outputs(out, title or f"audiotext comparison on {data_path}", settings, summary, tables, sections)
    return {"tables": "\n\n".join(tables), "summary": summary}


def _claim(out: Path, data_path: Path, settings: CompareSettings, resume: bool, overwrite: bool) -> dict:
    """The comparison's record (compare.json), written before any work: `resume` continues the one
    in `out` when its settings and data are these (else an error naming what changed); `overwrite`
    first removes what an earlier comparison left there; otherwise `out` must hold none, or one
    that stopped before it trained anything."""
    if resume and overwrite:
        raise SettingError("--resume continues a comparison and --overwrite starts it again: give one of them")
    record_file = out / RECORD_FILE
    record = {
        "settings": without_resumable_changes(dataclasses.asdict(settings)),
        "data": corpus_digest(data_path),
        "encoder": folder_digest(settings.text.encoder) if settings.text.encoder else "packaged MiniLM",
        "text": {},  # corpus → digest of the encoder trained on it
    }
    earlier = [name for name in (RECORD_FILE, *OUTPUTS, *WORK_FOLDERS) if (out / name).exists()]
    # Stopped before any training (its corpus or folds refused, say): nothing there to keep or resume.
    never_started = RECORD_FILE in earlier and set(earlier) <= {RECORD_FILE, "folds"}
    if resume and record_file.is_file() and not never_started:
        stored = json.loads(record_file.read_text(encoding="utf-8"))
        changed = first_difference({k: stored.get(k) for k in record if k != "text"},
                                    {k: v for k, v in record.items() if k != "text"})  # fmt: skip
        if changed:
            raise SettingError(f"--resume: {record_file} was made with {changed}; resume with the same settings "
                               f"and data, or --overwrite to start again")  # fmt: skip
        return {**record, "text": stored.get("text", {})}
    if earlier and not overwrite and not never_started:
        why = "it was made before comparisons could resume" if resume else "--resume continues it"
        raise FileExistsError(f"{out} holds a comparison ({', '.join(earlier)}): {why}; --overwrite runs it "
                              f"again, or choose another --out")  # fmt: skip
    for name in earlier:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    write_json(record_file, record)
    return record


def _corpora(data_path: Path, out: Path, settings: CompareSettings, labels: list[str]) -> dict[str, Path]:
    if not settings.folds:
        return {"corpus": data_path}
    paths = write_fold_corpora(data_path, labels, settings.audio.sample_rate, settings.folds, settings.split_by,
                               seed=settings.seeds[0], out=out / "folds")  # fmt: skip
    return {f"fold{i}": path for i, path in enumerate(paths)}


def _text_encoder(corpus: Path, folder: Path, settings: CompareSettings, labels, test_sets, predictions, progress,
                  trained: str | None, resume: bool) -> tuple[str, bool]:  # fmt: skip
    """The encoder folder the text-reading models use, pre-trained and fine-tuned as the plan says,
    and whether it was there before: the folder whose digest is `trained` (None: none was). With
    `resume`, a pre-training or fine-tuning job that was stopped continues."""
    plan = settings.text
    if plan.pretrain is None and plan.finetune is None:
        return plan.encoder, True
    final = folder / ("finetuned" if plan.finetune is not None else "pretrained")
    if trained is not None and final.is_dir() and folder_digest(final) == trained:
        say(f"== [{corpus}] the text encoder trained before, kept: {final} ==", progress)
        if plan.finetune is not None:
            _test_text_classifier(final, corpus, folder, labels, test_sets, predictions)
        return str(final.resolve()), True
    encoder = plan.encoder
    train = load_any_split(corpus, "train", labels, settings.audio.sample_rate, with_audio=False)
    seed = settings.seeds[0]
    if plan.pretrain is not None:
        sentences = folder / "train_sentences.txt"
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(sentences) as tmp:
            tmp.write_text("\n".join(train.sentences) + "\n", encoding="utf-8")
        say(f"== [{corpus}] masked-LM pre-training on the training sentences ==", progress)
        pretrain([sentences], encoder or None, folder / "pretrained", seed=seed, progress=progress, resume=resume,
                 **plan.pretrain)  # fmt: skip
        encoder = str((folder / "pretrained").resolve())
    if plan.finetune is not None:
        cross_fit = plan.cross_fit
        if cross_fit is None:
            test = load_any_split(corpus, "test", labels, settings.audio.sample_rate, with_audio=False)
            cross_fit = 0 if set(test.sentences) & set(train.sentences) else 3
        say(f"== [{corpus}] fine-tuning the text classifier (cross-fitting: {cross_fit or 'off'}) ==", progress)
        finetuned = folder / "finetuned"
        finetune(corpus, encoder or None, finetuned, labels=labels, seed=seed, cross_fit_folds=cross_fit,
                 progress=progress, resume=resume, **plan.finetune)  # fmt: skip
        _test_text_classifier(finetuned, corpus, folder, labels, test_sets, predictions)
        encoder = str(finetuned.resolve())
    return encoder, False


def _test_text_classifier(finetuned: Path, corpus: Path, folder: Path, labels, test_sets, predictions) -> None:
    """The fine-tuned classifier's own predictions on each test set, beside the models'."""
    for test_set in test_sets:
        evaluate_text_classifier(finetuned, corpus, test_set, finetuned / "eval" / test_set)
        _collect(predictions, FINETUNED, test_set, folder.name, _probabilities(finetuned / "eval" / test_set, labels))


def spoken_sentences(corpus: Path, heard: Split, labels: Sequence[str], sample_rate: int) -> list[str]:
    """The sentence each clip of a recognised test set (test_stt) reads: that of the clip of `test`
    with the same samples, where there is one, else what the recogniser heard. Grouped by what was
    heard, the three voices of a sentence would be resampled as nearly independent clips."""
    if not has_split(corpus, "test"):
        return heard.sentences
    test = load_any_split(corpus, "test", labels, sample_rate)
    said = {samples_digest(clip): sentence for clip, sentence in zip(test.audio, test.sentences)}
    return [said.get(samples_digest(clip), sentence) for clip, sentence in zip(heard.audio, heard.sentences)]


def _probabilities(eval_dir: Path, labels: Sequence[str]) -> np.ndarray:
    """(N, C): the class probabilities of predictions.csv, columns in the order of `labels`."""
    return pd.read_csv(eval_dir / "predictions.csv")[[f"p_{label}" for label in labels]].to_numpy()


def _collect(predictions: dict, model: str, test_set: str, corpus: str, probabilities: np.ndarray) -> None:
    per_corpus = predictions.setdefault((model, test_set), {})
    per_corpus.setdefault(corpus, []).append(probabilities)


def _stack(per_corpus: dict[str, list[np.ndarray]]) -> np.ndarray:
    """(S, N, C): seed s's probabilities for every corpus's test clips, corpora in order."""
    return np.stack([np.concatenate(seeds) for seeds in zip(*per_corpus.values())])


def _with_ensembles(probabilities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each model's predictions (S, N), and for a model with several seeds also its seed ensemble
    (1, N): the class of highest mean probability over the seeds. The deep models' scores move by
    several points from one seed to the next (the linear model's far less); averaging their seeds is
    the usual cure, and the ensemble is a model a user can deploy, so it is compared as one."""
    predictions = {}
    for model, p in probabilities.items():
        predictions[model] = p.argmax(-1)
        if len(p) > 1:
            predictions[f"{model} (ensemble of {len(p)})"] = p.mean(0).argmax(-1)[None]
    return predictions


def _summarise(test_set: str, y_true: np.ndarray, groups: np.ndarray, models: dict[str, np.ndarray], labels: list[str],
               reference: tuple[str, float]):  # fmt: skip
    """Rows of comparison.csv, the Markdown tables and the report section of one test set: `groups`
    (N,) names each clip's sentence, `reference` the model the others are tested against and its
    dev macro-F1."""
    n_classes = len(labels)
    weights = resample_weights(groups, RESAMPLES)
    estimates = {m: {k: estimate(y_true, p, n_classes, k, weights) for k in METRICS} for m, p in models.items()}
    per_seed = {m: [classification_metrics(y_true, seed, labels) for seed in p] for m, p in models.items()}
    per_class = {
        m: {label: float(np.mean([seed["per_class"][label]["f1"] for seed in seeds])) for label in labels}
        for m, seeds in per_seed.items()
    }
    best, on_dev = reference
    # Seeds of a model trained once (the fine-tuned classifier) repeat its predictions, so it pairs with any model.
    seeds = max(len(p) for p in models.values())
    tests = {
        m: paired_test(y_true, np.broadcast_to(models[best], (seeds, len(y_true))),
                       np.broadcast_to(p, (seeds, len(y_true))), n_classes, groups=groups)
        for m, p in models.items() if m != best
    }  # fmt: skip
    adjusted = dict(zip(tests, holm([t.p_value for t in tests.values()])))
    chosen = f"the model best on dev (macro-F1 {100 * on_dev:.2f}, mean over its runs)"

    def cell(e: Estimate, runs: int) -> str:
        spread = f" ± {100 * e.std:.2f}" if runs > 1 else ""  # one run has no spread over seeds
        return f"{100 * e.mean:.2f}{spread} [{100 * e.low:.1f}, {100 * e.high:.1f}]"

    header = ["model", "runs", *(f"{METRIC_NAMES[k]} mean ± std [95% CI]" for k in METRICS)]
    ranked = sorted(estimates, key=lambda m: -estimates[m]["macro_f1"].mean)
    body = [[m, len(models[m]), *(cell(estimates[m][k], len(models[m])) for k in METRICS)] for m in ranked]
    class_header = ["model", *(f"F1 {label}" for label in labels)]
    class_body = [[m, *(f"{100 * per_class[m][label]:.1f}" for label in labels)] for m in ranked]
    test_header = ["model", f"macro-F1 of {best} minus it", "p (paired randomisation)", f"p, Holm over the {len(tests)} tests"]
    # Two digits: p comes from random swaps, and its third digit from the swaps drawn.
    test_body = [[m, f"{100 * t.difference:+.2f}", f"{t.p_value:.2g}", f"{adjusted[m]:.2g}"]
                 for m, t in sorted(tests.items(), key=lambda x: x[1].difference)]  # fmt: skip

    text = "\n".join([
        f"### {test_set} ({len(y_true)} clips)", "", _markdown(header, body), "",
        "Per-class F1, mean over seeds:", "", _markdown(class_header, class_body), "",
        f"Paired tests of {best}, {chosen}:", "", _markdown(test_header, test_body),
    ])  # fmt: skip
    confusions = "".join(
        image(confusion_pair_png(np.sum([seed["confusion_matrix"] for seed in per_seed[m]], axis=0), labels,
                                 f"{m} · {test_set}" + (" (all seeds)" if len(per_seed[m]) > 1 else "")),
              f"confusion matrices of {m}")
        for m in ranked
    )  # fmt: skip
    section = "\n".join([
        f"<h2>{html.escape(test_set)} ({len(y_true)} clips)</h2>",
        table(header, body, bold_rows=[ranked.index(best)]),
        "<h3>Per-class F1 (mean over seeds)</h3>", table(class_header, class_body),
        image(per_class_f1_png(per_class, labels, f"F1 per class · {test_set}"), "per-class F1"),
        f"<h3>Paired tests of {html.escape(best)}</h3>", f"<p>{html.escape(best)} is {chosen}.</p>",
        table(test_header, test_body),
        "<h3>Confusion matrices (summed over seeds)</h3>", confusions,
    ])  # fmt: skip
    rows = [
        # One run has no spread over seeds: an empty std, not 0 (which says the seeds agreed).
        {"test_set": test_set, "model": m, "runs": len(models[m]), "metric": k, "mean": e.mean,
         "std": e.std if len(models[m]) > 1 else None,
         "ci_low": e.low, "ci_high": e.high,
         # The paired test is of macro-F1 only.
         "paired_difference": tests[m].difference if m in tests and k == "macro_f1" else None,
         "paired_p": tests[m].p_value if m in tests and k == "macro_f1" else None,
         "paired_p_holm": adjusted[m] if m in tests and k == "macro_f1" else None}
        for m in ranked for k, e in estimates[m].items()
    ]  # fmt: skip
    return rows, text, section


def _learning_curves(examples: dict[str, Path]) -> str:
    parts = ["<h2>Learning curves (first seed of the first corpus)</h2>"]
    for name, run_dir in examples.items():
        parts.append(image(learning_curves_png(read_epoch_log(run_dir / EPOCH_LOG), name), f"learning curves of {name}"))
    return "\n".join(parts)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def _write_outputs(out: Path, title: str, settings: CompareSettings, summary, tables, sections) -> None:
    folds = f"{settings.folds} folds by {settings.split_by}" if settings.folds else "the corpus's own split"
    facts = (f"Models {', '.join(settings.models)}; seeds {', '.join(map(str, settings.seeds))}; {folds}. "
             "Intervals: 95% percentile bootstrap of the seed mean over the test sentences, the clips of a "
             f"sentence resampled together (on test_stt, the sentence of the test clip with the same samples; {RESAMPLES} resamples). "
             "Paired tests: approximate randomisation, two-sided, swapping whole sentences, of the model best "
             "on dev (in bold in report.html) against each other, with p also Holm-adjusted over a table's tests "
             "(the chance of any false finding among them). "
             "'(ensemble of N)': a model's N seeds as one model, the class of highest mean probability.")  # fmt: skip
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(f"# {title}\n\n{facts}\n\n" + "\n\n".join(tables) + "\n", encoding="utf-8")
    with atomic_path(out / "comparison.csv") as tmp:
        pd.DataFrame(summary).to_csv(tmp, index=False)
    write_report(out / REPORT_FILE, title, [f"<p>{html.escape(facts)}</p>", *sections])


def say(message: str, progress: bool) -> None:
    if progress:
        print(message, flush=True)
