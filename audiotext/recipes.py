"""Whole workflows over the parts below. `make demo`: the reference's whole workflow on the built-in demo corpus, on both of its partitions.

1. Synthesise the corpus once and split it two ways: by clip (a test sentence was heard in
   training, read by another voice: the reference's main partition) and by script (no test sentence
   in training: the honest test of text).
2. For each partition, the text branch as the reference ran it: masked-LM pre-training on the
   training sentences (here of a small Korean BERT with a WordPiece vocabulary learned on them,
   since the packaged MiniLM reads no Korean), fine-tuning as the text-only classifier, and as the
   baseline it should beat, a linear layer on the frozen MiniLM.
3. The audio-only model, and the cross-modal model fed by the fine-tuned encoder, frozen.
4. Test every model on `test` and `test_stt` (recognizer transcripts) and print one table.

Everything lands in one folder: corpus/<partition>/, <partition>/text/{pretrained,finetuned}/,
<partition>/runs/<model>/ (each with eval/<split>/), results.csv, report.md. A rerun reuses the
corpus when it was built with the same seed and scripts.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from audiotext.config import AudioConfig, ModelConfig, RunConfig, TextConfig, TrainConfig
from audiotext.data.synthesis import DEFAULT_SPEAKERS, build_demo_corpora, load_demo_scripts
from audiotext.evaluation.evaluate import evaluate, evaluate_text_classifier
from audiotext.evaluation.metrics import format_results_table
from audiotext.features.cache import FeatureCache
from audiotext.io import atomic_path
from audiotext.training.loop import train
from audiotext.training.masked_lm import pretrain
from audiotext.training.text_classifier import finetune

PARTITIONS = {"clip": "clip", "script": "script (sentence-disjoint)"}
TEST_SETS = ("test", "test_stt")

# The reference's architecture and defaults, changed only so the whole demo fits in ten minutes
# on two CPU cores: its scripts' 8 kHz MFCCs (half the frames), fewer epochs, and no attention
# dropout, without which PyTorch runs its fused attention kernel, about five times faster on CPU.
DEMO_AUDIO = AudioConfig(resample_rate=8000)
DEMO_TRAINING = TrainConfig(num_epochs=8, when=3)
# The packaged MiniLM reads English: Korean reaches it as jamo, 30% of the words as [UNK]. So
# the demo builds its Korean BERT as a user without one would: a WordPiece vocabulary learned on the
# training sentences and a small BERT pre-trained on them (masked LM), then fine-tuned. 500 tokens
# are about the corpus's syllables: on the script split's dev sentences they fine-tuned to 66%
# accuracy, against 57% with 1000 tokens (whole words, which unseen sentences share less).
DEMO_PRETRAIN = dict(new_tokenizer_vocab_size=500, epochs=30, lr=1e-3, batch_size=32, max_len=48)
DEMO_FINETUNE = dict(epochs=20, lr=1e-3, batch_size=16, max_len=48)
# Features of the sentences an encoder was fine-tuned on already know their label; on the script
# split the cross-modal model must learn from features like those of unseen sentences, so there
# its training sentences get out-of-fold states (see `finetune`). On the clip split nearly every
# test sentence is a training sentence, and the reference's plain workflow is the right one.
# Three folds, not five: each fold is a whole fine-tuning run, and five took the demo past ten
# minutes on two cores (626 s; the script split's fine-tuning alone 172 s).
CROSS_FIT_FOLDS = {"clip": 0, "script": 3}
# A linear layer on frozen features costs nothing per epoch: train it to convergence, as a fair baseline.
FROZEN_TEXT_TRAINING = replace(DEMO_TRAINING, num_epochs=40)


@dataclass(frozen=True)
class DemoModel:
    title: str
    run: str  # folder under <partition>/runs/
    config: ModelConfig


FROZEN_TEXT = DemoModel("text-only: frozen MiniLM + linear", "text_frozen", ModelConfig(modality="text", out_dropout=0.1))
FINETUNED_TEXT_TITLE = "text-only: Korean BERT pre-trained + fine-tuned"
AUDIO = DemoModel(
    "audio-only", "audio", ModelConfig(modality="audio", attn_dropout=0.0, embed_dropout=0.1, out_dropout=0.1)
)
CROSS = DemoModel(
    "cross-modal (fine-tuned encoder)", "cross", ModelConfig(modality="cross", attn_dropout=0.0, out_dropout=0.1)
)


def run_demo(out: str | Path, seed: int = 0, cache: FeatureCache | None = None, progress: bool = True) -> list[dict]:
    """Runs the demo into `out`; features come from `cache` where it has them (None: in memory)."""
    out = Path(out)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    corpora = _corpora(out / "corpus", seed, progress)
    timings["corpus"] = time.perf_counter() - started
    rows = []
    for partition, corpus in corpora.items():
        rows += _run_partition(out / partition, partition, corpus, seed, cache, progress, timings)

    table = format_results_table(rows, rows[0]["metrics"]["labels"])
    seconds = time.perf_counter() - started
    _write_report(out, rows, table, timings, seconds)
    print(table)
    print(f"\nreport: {out / 'report.md'}  (demo took {seconds:.0f} s)")
    return rows


def _run_partition(
    folder: Path,
    partition: str,
    corpus: Path,
    seed: int,
    cache: FeatureCache | None,
    progress: bool,
    timings: dict[str, float],
) -> list[dict]:
    rows = []

    def add_rows(title: str, evaluations: dict[str, dict], model_dir: Path) -> None:
        for split, metrics in evaluations.items():
            rows.append({"model": title, "partition": PARTITIONS[partition], "test_set": split,
                         "metrics": metrics, "eval_dir": model_dir / "eval" / split})  # fmt: skip

    def timed(step: str):
        return _stopwatch(timings, f"{partition}: {step}")

    text_dir = folder / "text"
    _say(f"== [{partition}] WordPiece vocabulary and masked-LM pre-training on the training sentences ==", progress)
    with timed("pre-training"):
        pretrain([corpus / "train.pkl"], None, text_dir / "pretrained", seed=seed, progress=progress, **DEMO_PRETRAIN)
    _say(f"== [{partition}] fine-tuning the text-only classifier ==", progress)
    finetuned = text_dir / "finetuned"
    with timed("fine-tuning"):
        finetune(corpus, text_dir / "pretrained", finetuned, seed=seed, cross_fit_folds=CROSS_FIT_FOLDS[partition],
                 progress=progress, **DEMO_FINETUNE)  # fmt: skip
        add_rows(FINETUNED_TEXT_TITLE, {
            split: evaluate_text_classifier(finetuned, corpus, split, finetuned / "eval" / split) for split in TEST_SETS
        }, finetuned)  # fmt: skip

    for model in (FROZEN_TEXT, AUDIO, CROSS):
        encoder = str(finetuned.resolve()) if model is CROSS else ""
        cfg = RunConfig(
            name=model.run,
            data_path=str(corpus),
            audio=replace(DEMO_AUDIO),
            text=TextConfig(encoder=encoder),
            model=replace(model.config),
            train=replace(FROZEN_TEXT_TRAINING if model is FROZEN_TEXT else DEMO_TRAINING, seed=seed),
        )
        _say(f"== [{partition}] training {model.title} ==", progress)
        run_dir = folder / "runs" / model.run
        with timed(model.title):
            train(cfg, run_dir, results_csv=folder.parent / "results.csv", cache=cache, progress=progress)
            evaluations = {split: evaluate(run_dir, split, cache=cache, progress=progress) for split in TEST_SETS}
            add_rows(model.title, evaluations, run_dir)
    return rows


@contextlib.contextmanager
def _stopwatch(timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - started


def _corpora(folder: Path, seed: int, progress: bool) -> dict[str, Path]:
    """The corpus split both ways, reused when a finished build with this seed and these scripts exists."""
    wanted = {"seed": seed, "n_scripts": len(load_demo_scripts()), "speakers": DEFAULT_SPEAKERS}
    folders = {partition: folder / partition for partition in PARTITIONS}

    def matches(partition_folder: Path, partition: str) -> bool:
        description = partition_folder / "corpus.json"
        if not description.exists():
            return False
        built = json.loads(description.read_text(encoding="utf-8"))
        found = {"seed": built.get("seed"), "n_scripts": built.get("n_scripts"), "speakers": len(built.get("speakers", []))}
        return found == wanted and built.get("split_by") == partition

    if all(matches(path, partition) for partition, path in folders.items()):
        _say(f"reusing the demo corpus in {folder}", progress)
    else:
        _say(f"== synthesizing the demo corpus in {folder} ==", progress)
        build_demo_corpora(folders, seed=seed, n_speakers=DEFAULT_SPEAKERS, progress=progress)
    return folders


def _write_report(out: Path, rows: list[dict], table: str, timings: dict[str, float], seconds: float) -> None:
    lines = [
        "# audiotext demo report",
        "",
        "Korean emotional-speech demo corpus (350 scripts read by espeak-ng voices), split by clip and",
        "by script (no test sentence in training). `test_stt` holds the same clips as `test` with",
        "transcripts carrying speech-recognition errors. The text branch follows the reference:",
        "masked-LM pre-training of a small Korean BERT on the training sentences, fine-tuning as the text-only",
        "classifier, then the cross-modal model on the fine-tuned encoder, frozen.",
        "",
        table,
        "",
        "## Confusion matrices",
        "",
    ]
    for row in rows:
        png = (row["eval_dir"] / "confusion_matrix.png").relative_to(out)
        lines.append(f"- {row['partition']} · {row['model']} · {row['test_set']}: [{png}]({png})")
    lines += ["", "## Time per step", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {step} | {spent:.0f} |" for step, spent in timings.items()]
    lines += ["", f"Whole demo: {seconds:.0f} s."]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _say(message: str, progress: bool) -> None:
    if progress:
        print(message, flush=True)
