"""Command line: parses arguments and calls plain functions; nothing else lives here."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import threading
import warnings
from dataclasses import replace
from pathlib import Path

from audiotext.config import (
    LOWEST_CLIP_RATE, REFERENCE_LABELS, TEXT_ALPHABETS, AudioConfig, ModelConfig, RunConfig, ServiceLimits, TextConfig,
    TrainConfig, modality_of, plain_name, unread_flags,
)  # fmt: skip
from audiotext.data.manifest import MIN_LABEL_CLIPS, data_labels, is_manifest, read_label_set
from audiotext.errors import AudiotextError, SettingError, TrainingInterrupted
from audiotext.io import holds_files, writable_file
from audiotext.runtime import launcher_setting, leave_processes
from audiotext.data.synthesis import DEFAULT_SPEAKERS

# --model names; "mult" is stored as the modality "cross". The reference spelt it Transformer or MULT.
MODEL_NAMES = ("mult", "audio", "text", "early", "late", "tfn", "lmf", "linear")
_MULT_SPELLINGS = ("Transformer", "MULT", "MulT")

# Flags of the reference train.py that have no effect here, and why (see README, "Flags").
_NOT_APPLICABLE = {
    "bert_config_path": "the encoder's config is read from its directory (--bert_model_path)",
    "bert_args_path": "the encoder is frozen; its training arguments are not needed",
    "attn_dropout_v": "there is no visual stream",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of the reference train.py, same names, same meaning; defaults that learn."""
    m, t, a = ModelConfig(), TrainConfig(), AudioConfig()
    add = parser.add_argument
    add("--do_audio", action="store_true", help="use only the audio (MFCC) features")
    add("--do_text", action="store_true", help="use only the text features (frozen encoder + linear head)")
    add("--merge_how", default=m.merge_how, choices=["average", "last", "stats"],
        help="how to merge a sequence over time: masked mean, last real step, or mean and standard deviation")
    add("--model", default="mult", choices=[*MODEL_NAMES, *_MULT_SPELLINGS],
        help="mult: the cross-modal Transformer (default; the reference's Transformer/MULT); audio, text: one "
             "modality; early, late, tfn, lmf: fusion of the pooled streams; linear: logistic regression on MFCC "
             "statistics and character n-grams (see README)")
    add("--data_name", default="vat", help="dataset name, recorded in the results (default: vat)")
    add("--data_path", default="data",
        help="folder holding train.pkl, dev.pkl, test.pkl (test_stt.pkl), or a manifest (.csv/.jsonl) with a split column")
    add("--bert_config_path", default=None, help="not needed: " + _NOT_APPLICABLE["bert_config_path"])
    add("--bert_args_path", default=None, help="not needed: " + _NOT_APPLICABLE["bert_args_path"])
    add("--bert_model_path", default=None, help="local Hugging Face encoder folder (default: packaged MiniLM)")
    add("--attn_dropout", type=float, default=m.attn_dropout, help="attention dropout")
    add("--attn_dropout_a", type=float, default=m.attn_dropout_a, help="attention dropout (audio attending text)")
    add("--attn_dropout_v", type=float, default=m.attn_dropout_v, help="attention dropout (visual; unused, no video)")
    add("--relu_dropout", type=float, default=m.relu_dropout, help="relu dropout")
    add("--embed_dropout", type=float, default=m.embed_dropout, help="embedding dropout")
    add("--res_dropout", type=float, default=m.res_dropout, help="residual block dropout")
    add("--out_dropout", type=float, default=m.out_dropout, help="output layer dropout")
    add("--layers", type=int, default=m.layers, help="number of layers in each stack (default: 5)")
    add("--d_model", type=int, default=m.d_model, help="width of the cross-modal layers (default: 30)")
    add("--d_out", type=int, default=None, help="number of classes (default: the number of labels, 7)")
    add("--num_heads", type=int, default=m.num_heads, help="attention heads (default: 5)")
    add("--attn_mask", dest="attn_mask", action="store_true", default=m.attn_mask,
        help="causal mask on every attention, as the reference (default: on)")
    add("--no_attn_mask", dest="attn_mask", action="store_false", help="no causal mask (padding is always masked)")
    add("--batch_size", type=int, default=t.batch_size, metavar="N", help="batch size (default: 24)")
    add("--clip", type=float, default=t.clip, help="gradient-norm clip value (default: 0.8; 0 disables)")
    add("--lr", type=float, default=t.lr, help="initial learning rate (default: 1e-3)")
    add("--optim", default=t.optim, help="torch.optim optimizer name (default: Adam)")
    add("--num_epochs", type=int, default=t.num_epochs, help="number of epochs (default: 40)")
    add("--when", type=int, default=t.when, help="epochs without dev improvement before the rate decays (default: 20)")
    add("--select_by", default=t.select_by, choices=["loss", "macro_f1"],
        help="dev metric that picks the kept epoch: lowest loss (the reference's) or highest macro-F1")
    add("--early_stop", type=int, default=t.early_stop, metavar="EPOCHS",
        help="stop when the dev metric has not improved for this many epochs (default: 0, train every epoch)")
    add("--no_length_buckets", dest="length_buckets", action="store_false",
        help="batch clips at random instead of by similar length (more padding, slower; the reference's way)")
    add("--batch_chunk", type=int, default=t.batch_chunk, help="chunks per batch, to save memory (default: 1)")
    add("--local_rank", "--local-rank", type=int, default=-1,
        help="this process's GPU on its node, as torch.distributed.launch passed it (torchrun sets LOCAL_RANK instead)")
    add("--num_workers", type=int, default=TrainConfig.num_workers, metavar="N",
        help="DataLoader worker processes that batch the training clips (default: 0, in the training process; "
             "see benchmarks/README.md for when they pay)")
    add("--amp", action="store_true",
        help="mixed precision on a CUDA GPU: bf16 where the card has it, else fp16 with a gradient scaler")
    add("--warmup_percent", type=float, default=t.warmup_percent, help="linear warm-up over this share of all steps")
    add("--max_len_for_text", type=int, default=TextConfig().max_len_for_text, help="maximum tokens per sentence")
    add("--hidden_size_for_bert", type=int, default=None, help="encoder width; read from its config, checked if given")
    add("--text_alphabet", default=TextConfig().alphabet, choices=TEXT_ALPHABETS,
        help="what transcripts keep: letters and digits of any script (default), or korean: only a-z, A-Z, "
             "Hangul, digits and . ! ?, the reference's rule, which empties sentences in other scripts")
    add("--max_len_for_audio", type=int, default=a.max_len_for_audio, help="maximum MFCC frames per clip")
    add("--sample_rate", type=int, default=a.sample_rate, help="sample rate of the stored clips")
    add("--resample_rate", type=int, default=a.resample_rate, help="rate the MFCCs are computed at")
    add("--n_fft_size", type=int, default=a.n_fft_size, help="analysis window and FFT size; hop is half")
    add("--n_mfcc", type=int, default=a.n_mfcc, help="MFCC coefficients kept")
    add_fusion_arguments(parser, a, TextConfig(), m, t)
    add("--logging_steps", type=int, default=t.logging_steps, help="steps between train-loss reports (default: 30)")
    add("--seed", type=int, default=t.seed, help="random seed")
    add("--no_cuda", action="store_true", help="do not use CUDA even when available")
    add("--name", default="mult", help='name of the trial and of its run folder (default: "mult")')
    add("--output_dir", default="runs", help="runs are saved in OUTPUT_DIR/NAME (default: runs)")
    add("--results_csv", default=None, help="CSV that gets one row per run (default: OUTPUT_DIR/results.csv)")
    add("--labels", default=None,
        help="comma-separated label order, class 0 first (default: the data's labels.json or manifest "
             "labels, else the reference's " + ",".join(REFERENCE_LABELS) + ")")
    add("--quiet", action="store_true", help="no progress bars")
    add_cache_arguments(parser)


def _per_model(defaults: dict[str, float] | None) -> str:
    return ", ".join(f"{name} {value}" for name, value in (defaults or {}).items())


def add_fusion_arguments(
    parser: argparse.ArgumentParser, audio: AudioConfig, text: TextConfig, model: ModelConfig, train: TrainConfig,
    modality_dropout: dict[str, float] | None = None, ema: dict[str, float] | None = None,
) -> None:
    """The flags that decide what fusion gets to work with (see README, "What fusion needs"), with
    the defaults of the command they serve; `modality_dropout` and `ema`: a default per model, and
    then --modality_dropout and --ema are None unless given."""
    add = parser.add_argument
    add("--audio_features", default=audio.features, choices=["mfcc", "mfcc+prosody"],
        help=f"per-frame audio features: MFCCs, or MFCCs with F0 (YIN), voicing, energy and their deltas "
             f"(default: {audio.features})")
    add("--text_features", default=text.features, choices=["encoder", "ngrams"],
        help=f"text as the encoder's token states, or as one character 1-3-gram TF-IDF vector fitted on the "
             f"training sentences, for corpora too small to fine-tune a BERT on (default: {text.features})")
    add("--modality_dropout", type=float, default=None if modality_dropout else model.modality_dropout, metavar="SHARE",
        help=f"share of training clips that lose their audio or their text (fusing models; default: "
             f"{_per_model(modality_dropout) or model.modality_dropout})")
    add("--transcript_noise", type=float, default=train.transcript_noise, metavar="SHARE",
        help=f"share of training transcripts given recogniser-like errors (default: {train.transcript_noise})")
    add("--class_weights", action=argparse.BooleanOptionalAction, default=train.class_weights,
        help="weight the loss by inverse class frequency in train")
    add("--ema", type=float, default=None if ema else train.ema, metavar="DECAY",
        help=f"keep a moving average of the weights with this decay per step, which dev evaluates and the run keeps "
             f"(default: {_per_model(ema) + ', others 0' if ema else train.ema}; 0: off)")
    add("--wide", action=argparse.BooleanOptionalAction, default=model.wide,
        help="add the linear baseline's logistic regression on utterance statistics to a fusing model (wide and deep)")
    add("--utterance_stats", action=argparse.BooleanOptionalAction, default=model.utterance_stats,
        help="a fusing model's head also reads the mean and standard deviation of its standardised audio frames")


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feature_cache", "--feature-cache", default=None, metavar="DIR",
                        help="where computed features are kept and found again "
                             "(default: $AUDIOTEXT_CACHE or ~/.cache/audiotext/features)")
    parser.add_argument("--no_feature_cache", "--no-feature-cache", action="store_true",
                        help="compute every feature in memory, read and write no cache")


def feature_cache_of(args: argparse.Namespace):
    from audiotext.features.cache import FeatureCache

    return None if args.no_feature_cache else FeatureCache(args.feature_cache, progress=not args.quiet)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    for flag, reason in _NOT_APPLICABLE.items():
        value = getattr(args, flag)
        if value not in (None, -1, 0.0):  # the defaults
            warnings.warn(f"--{flag} is accepted for compatibility but has no effect: {reason}", stacklevel=2)
    if args.do_audio and args.do_text:
        raise SettingError("--do_audio and --do_text exclude each other")
    if args.labels:
        labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    else:
        labels = data_labels(args.data_path) or list(REFERENCE_LABELS)
    if args.d_out is not None and args.d_out != len(labels):
        raise SettingError(f"--d_out {args.d_out} does not match the {len(labels)} labels {labels}")
    model = "mult" if args.model in _MULT_SPELLINGS else args.model
    for flag, implied in (("do_audio", "audio"), ("do_text", "text")):
        if getattr(args, flag):
            if model not in ("mult", implied):
                raise SettingError(f"--{flag} and --model {args.model} exclude each other")
            model = implied
    modality = modality_of(model)
    cfg = RunConfig(
        name=args.name,
        data_path=args.data_path,
        labels=labels,
        audio=AudioConfig(
            sample_rate=args.sample_rate,
            resample_rate=args.resample_rate,
            n_fft_size=args.n_fft_size,
            n_mfcc=args.n_mfcc,
            max_len_for_audio=args.max_len_for_audio,
            features=args.audio_features,
        ),
        text=TextConfig(
            encoder=str(Path(args.bert_model_path).resolve()) if args.bert_model_path else "",
            max_len_for_text=args.max_len_for_text,
            hidden_size=args.hidden_size_for_bert,
            features=args.text_features,
            alphabet=args.text_alphabet,
        ),
        model=ModelConfig(
            modality=modality,
            d_model=args.d_model,
            layers=args.layers,
            num_heads=args.num_heads,
            attn_dropout=args.attn_dropout,
            attn_dropout_a=args.attn_dropout_a,
            attn_dropout_v=args.attn_dropout_v,
            relu_dropout=args.relu_dropout,
            embed_dropout=args.embed_dropout,
            res_dropout=args.res_dropout,
            out_dropout=args.out_dropout,
            attn_mask=args.attn_mask,
            merge_how=args.merge_how,
            modality_dropout=args.modality_dropout,
            wide=args.wide,
            utterance_stats=args.utterance_stats,
        ),
        train=TrainConfig(
            batch_size=args.batch_size,
            batch_chunk=args.batch_chunk,
            clip=args.clip,
            lr=args.lr,
            optim=args.optim,
            num_epochs=args.num_epochs,
            when=args.when,
            warmup_percent=args.warmup_percent,
            logging_steps=args.logging_steps,
            seed=args.seed,
            no_cuda=args.no_cuda,
            length_buckets=args.length_buckets,
            select_by=args.select_by,
            early_stop=args.early_stop,
            class_weights=args.class_weights,
            transcript_noise=args.transcript_noise,
            ema=args.ema,
            checkpoint_steps=getattr(args, "checkpoint_steps", TrainConfig.checkpoint_steps),
            amp=args.amp,
            num_workers=args.num_workers,
        ),
    )
    _warn_of_idle_flags(cfg)
    return cfg


def _warn_of_idle_flags(cfg: RunConfig) -> None:
    """Warns of each flag the user set that changes nothing: config.json records it, and the run
    would seem to have used it. A warning, not a refusal: the reference's own command lines give
    such flags (its train_audio.sh gave the audio model --d_model and --attn_dropout_a)."""
    idle = [f"{flag} (a setting the model never reads changes nothing)" for flag in unread_flags(cfg)]
    train = cfg.train
    if train.batch_chunk > train.batch_size:
        idle.append(f"--batch_chunk {train.batch_chunk} is more than --batch_size {train.batch_size}: a chunk holds "
                    f"at least one clip, so the batches are not split")  # fmt: skip
    most = train.num_epochs - 2
    if train.early_stop and train.early_stop > most:
        # It stops once the best epoch lies early_stop epochs back, checked before each epoch: the
        # last is checked after num_epochs - 1, and the best is the first at the earliest.
        # With two epochs or one there is no patience to give ("at most 0" would turn it off).
        fix = f"give at most {most}, or more epochs" if most >= 1 else \
            f"drop it, or give --num_epochs {train.early_stop + 2} or more"  # fmt: skip
        idle.append(f"--early_stop {train.early_stop} never stops a run of --num_epochs {train.num_epochs}: {fix}")
    for message in idle:
        warnings.warn(message, stacklevel=3)


def run_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.output_dir) / plain_name(args.name, "--name")


def cmd_train(args: argparse.Namespace) -> None:
    from audiotext.training.loop import train

    cfg = config_from_args(args)
    _take_local_rank(args.local_rank)
    # Checked before training: a folder there, or a path under a file, failed once the run was done.
    writable_file(Path(args.output_dir) / "results.csv", "--output_dir")
    results_csv = writable_file(args.results_csv or Path(args.output_dir) / "results.csv", "--results_csv")
    summary = train(cfg, run_dir_of(args), results_csv=results_csv, cache=feature_cache_of(args),
                    progress=not args.quiet, resume=args.resume, overwrite=args.overwrite, data_name=args.data_name)  # fmt: skip
    print(
        f"best dev epoch {summary['best_epoch']}: loss {summary['dev_loss']:.4f}  "
        f"accuracy {summary['dev_accuracy']:.4f}  macro-F1 {summary['dev_macro_f1']:.4f}  → {summary['run_dir']}"
    )


def _take_local_rank(local_rank: int) -> None:
    """The reference's launcher, torch.distributed.launch, passed --local_rank; torchrun sets LOCAL_RANK."""
    if local_rank < 0:
        return
    given = launcher_setting("LOCAL_RANK", local_rank)
    if given != local_rank:
        raise SettingError(f"--local_rank {local_rank} differs from LOCAL_RANK={given} set by the launcher")
    os.environ["LOCAL_RANK"] = str(local_rank)


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--resume", action="store_true",
        help="continue the unfinished run OUTPUT_DIR/NAME from its last checkpoint (same flags); start it if there is none")
    add("--overwrite", action="store_true",
        help="train again into an existing run folder; the old run is replaced, whole, once the new one finishes")
    add("--checkpoint_steps", type=int, default=TrainConfig.checkpoint_steps, metavar="STEPS",
        help="also save a resumable checkpoint every STEPS optimizer steps (default: 0, after every epoch only)")


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `test` uses; the model's settings come from the run, so training flags are refused."""
    add = parser.add_argument
    add("--run_dir", default=None, help="trained run folder (default: OUTPUT_DIR/NAME)")
    add("--name", default="mult", help='the run\'s name (default: "mult")')
    add("--output_dir", default="runs", help="folder of runs (default: runs)")
    add("--data_path", default=None,
        help="the data to test on: a manifest (default: the run's own, when it trained on one) or a folder of the "
             "reference's pickles (always named here: a pickle can run code, so a run folder's path is not read)")
    add("--split", nargs="+", default=["test"], help="split names in --data_path, or .pkl files (default: test)")
    add("--eval_dir", default=None, help="where outputs go (default: RUN_DIR/eval/SPLIT)")
    add("--best_so_far", action="store_true", help="test an unfinished run's best epoch so far (with a warning)")
    add("--batch_size", type=int, default=64, help="clips per forward pass (default: 64)")
    add("--do_audio", action="store_true", help="check that the run is audio-only (as the reference's test_audio.sh says)")
    add("--do_text", action="store_true", help="check that the run is text-only")
    add("--no_cuda", action="store_true", help="stay on the CPU even when CUDA is available")
    add("--quiet", action="store_true", help="no progress bars")
    add_cache_arguments(parser)


def cmd_test(args: argparse.Namespace) -> None:
    from audiotext.evaluation.evaluate import evaluation
    from audiotext.evaluation.metrics import format_results_table
    from audiotext.evaluation.report import write_run_report
    from audiotext.inference.export import is_model_folder
    from audiotext.inference.recognizer import check_batch_size
    from audiotext.models.checkpoint import load_config

    run_dir = Path(args.run_dir) if args.run_dir else run_dir_of(args)
    if is_model_folder(run_dir) and not args.eval_dir:  # its files are checked against its digests
        raise SettingError(f"--run_dir {run_dir} is a model folder (audiotext export), where nothing may be "
                           "added: give --eval_dir for the results")  # fmt: skip
    if args.eval_dir and any(is_model_folder(folder) for folder in (Path(args.eval_dir), *Path(args.eval_dir).resolve().parents)):
        raise SettingError(f"--eval_dir {args.eval_dir} lies in a model folder (audiotext export), where nothing may "
                           "be added (it would no longer load): write the results elsewhere")  # fmt: skip
    check_batch_size(args.batch_size, "--batch_size")
    cfg = load_config(run_dir)[0]
    for flag, implied in (("do_audio", "audio"), ("do_text", "text")):
        if getattr(args, flag) and cfg.model.modality != implied:
            raise SettingError(f"--{flag}: {run_dir} holds the {cfg.model.modality!r} model, not the {implied}-only one")
    check_splits(args.data_path or cfg.data_path, args.split)
    cache = feature_cache_of(args)
    # Every split is tested before the first one's results are written: a later split's bad label
    # or clip left the earlier ones' eval/ folders and no report.
    writes = [evaluation(run_dir, split, args.data_path, Path(args.eval_dir) / Path(split).stem if args.eval_dir else None,
                         batch_size=args.batch_size, no_cuda=args.no_cuda, cache=cache, progress=not args.quiet,
                         best_so_far=args.best_so_far) for split in args.split]  # fmt: skip
    rows = [{"model": run_dir.name, "test_set": metrics["split"], "metrics": metrics}
            for metrics in (write() for write in writes)]  # fmt: skip
    if not is_model_folder(run_dir):
        write_run_report(run_dir)  # once, with every split tested
    print(format_results_table(rows, rows[0]["metrics"]["labels"]))


def check_splits(data_path: str | Path, splits: list[str]) -> None:
    """Finds every split before the first is tested and its results written, and refuses two that
    would write one folder (eval/<name>), the last over the others."""
    from audiotext.data.manifest import require_split

    for split in splits:
        require_split(data_path, split)
    named = [Path(split).stem for split in splits]
    if len(set(named)) < len(named):
        twice = sorted({name for name in named if named.count(name) > 1})
        raise SettingError(f"--split: {named.count(twice[0])} splits named {twice[0]!r} would be written to one "
                           f"folder, the last over the others: test them one at a time, each with its own --eval_dir")  # fmt: skip


def cmd_demo_corpus(args: argparse.Namespace) -> None:
    from audiotext.data.synthesis import build_demo_corpus

    counts = build_demo_corpus(args.out, seed=args.seed, split_by=args.split_by, n_speakers=args.speakers,
                               progress=not args.quiet)
    print(f"wrote {args.out}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


def cmd_prepare(args: argparse.Namespace) -> None:
    from audiotext.data.prepare import prepare_korean, prepare_manifest

    options = dict(
        ratios=tuple(args.ratios), seed=args.seed, strict=args.strict, progress=not args.quiet, pickles=not args.no_pickles
    )
    if args.source == "korean":
        report = prepare_korean(args.raw, args.script, args.out, split_by=args.split_by, **options)
    else:
        split_by = None if args.split_by == "manifest" else args.split_by
        labels = args.labels.split(",") if args.labels else None
        report = prepare_manifest(args.manifest, args.out, split_by=split_by, labels=labels,
                                  min_label_clips=args.min_label_clips, **options)  # fmt: skip
    if args.quiet:
        print(report.summary())
    out = Path(args.out)
    for split in args.transcribe:
        transcribe(out / "manifest.csv" if args.no_pickles else out, split, out / f"{split}_stt.pkl",
                   read_label_set(out), AudioConfig().sample_rate, progress=not args.quiet)  # fmt: skip


def add_prepare_parsers(commands) -> None:
    prepare = commands.add_parser("prepare", help="turn a raw corpus or a manifest into training data")
    sources = prepare.add_subparsers(dest="source", required=True)
    korean = sources.add_parser("korean", help="the reference's actor folders of {actor}-{script}.m2ts videos")
    korean.add_argument("--raw", required=True, help="folder of actor folders 000 ... 099")
    korean.add_argument("--script", required=True, help="the script file (350 bracketed scripts under emotion headings)")
    manifest = sources.add_parser("manifest", help="a CSV/JSONL manifest: audio, text, label [, speaker, split, start, end]")
    manifest.add_argument("--manifest", required=True)
    manifest.add_argument("--labels", default=None,
                          help="comma-separated classes, class 0 first; rows with other labels are rejected "
                               "(default: the labels the rows use, sorted)")
    manifest.add_argument("--min_label_clips", type=int, default=MIN_LABEL_CLIPS, metavar="N",
                          help="without --labels, refuse a label used by fewer than N clips as a probable typo "
                               "(default: %(default)s)")
    for parser, split_choices in ((korean, ["clip", "sentence", "speaker"]), (manifest, ["clip", "sentence", "speaker", "manifest"])):
        parser.add_argument("--out", required=True, help="output folder: pickles, manifest.csv, labels.json, rejects.csv")
        parser.add_argument("--split-by", "--split_by", dest="split_by", default="clip", choices=split_choices,
                            help="what never crosses splits (manifest: keep its split column)")
        parser.add_argument("--ratios", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "DEV", "TEST"))
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--strict", action="store_true", help="fail on the first bad input")
        parser.add_argument("--no-pickles", "--no_pickles", dest="no_pickles", action="store_true",
                            help="write manifest.csv only (memory stays at one clip; train on the manifest)")
        parser.add_argument("--transcribe", nargs="+", default=[], metavar="SPLIT",
                            help="also write SPLIT_stt.pkl: the split with offline recogniser transcripts (asr extra)")
        parser.add_argument("--quiet", action="store_true")
        parser.set_defaults(func=cmd_prepare)


def check_text_out(args: argparse.Namespace) -> None:
    """Checks a text job's --out before it trains, not when it saves: a folder holding files is
    replaced only with --overwrite, and only if it is a model folder (a fine-tuned encoder may have
    taken hours, a mistyped path may be a folder of runs), or by a stopped job that --resume
    continues."""
    from audiotext.features.encoders import check_replaceable
    from audiotext.training.run_folder import has_stopped_job, state_folder

    if args.resume and args.overwrite:
        raise SettingError("--resume continues a stopped job and --overwrite starts it again: give one of them")
    out = Path(args.out)
    if args.encoder is not None and _overlap(Path(args.encoder), out):
        # The job replaces --out at its first save: a job stopped after it could neither resume nor start again.
        raise SettingError(f"--out {out} is (or holds, or lies in) the --encoder {args.encoder} the job starts from: "
                           "write the new encoder to another folder")  # fmt: skip
    if args.overwrite:
        check_replaceable(out, setting="--out")
    elif holds_files(out) and not (args.resume and has_stopped_job(out)):
        if args.resume:
            raise SettingError(f"--resume: no stopped job writes --out {out} (none in {state_folder(out)}), "
                               "and it already holds files: --overwrite replaces a model folder there")  # fmt: skip
        raise SettingError(f"--out {out} already holds files: --overwrite replaces a model folder there, "
                           "--resume continues a stopped job")  # fmt: skip


def _overlap(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a.is_relative_to(b) or b.is_relative_to(a)


def cmd_text_pretrain(args: argparse.Namespace) -> None:
    from audiotext.training.masked_lm import pretrain

    check_text_out(args)
    stats = pretrain(
        args.corpus, args.encoder, args.out, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        mlm_probability=args.mlm_probability, warmup_percent=args.warmup_percent, seed=args.seed,
        new_tokenizer_vocab_size=args.new_tokenizer, extend_vocab=not args.keep_vocab, max_len=args.max_len,
        no_cuda=args.no_cuda, progress=not args.quiet, resume=args.resume,
    )  # fmt: skip
    print(f"masked-LM pre-training → {args.out}: " + ", ".join(f"{k} {v}" for k, v in stats.items() if not isinstance(v, (list, dict))))


def cmd_text_finetune(args: argparse.Namespace) -> None:
    from audiotext.training.text_classifier import finetune

    check_text_out(args)
    labels = args.labels.split(",") if args.labels else data_labels(args.data) or list(REFERENCE_LABELS)
    best = finetune(
        args.data, args.encoder, args.out, labels=labels, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, warmup_percent=args.warmup_percent, max_len=args.max_len, seed=args.seed,
        pooling=args.pooling, clip=args.clip, cross_fit_folds=args.cross_fit, no_cuda=args.no_cuda,
        progress=not args.quiet, resume=args.resume,
    )  # fmt: skip
    print(f"fine-tuned text classifier → {args.out}: best dev epoch {best['best_epoch']}: accuracy {best['dev_accuracy']:.4f}  macro-F1 {best['dev_macro_f1']:.4f}")


def cmd_text_test(args: argparse.Namespace) -> None:
    from audiotext.evaluation.evaluate import text_classifier_evaluation
    from audiotext.evaluation.metrics import format_results_table

    check_splits(args.data_path, args.split)
    eval_dir = Path(args.eval_dir or Path(args.model) / "eval")
    # Every split is tested before the first one's results are written, as in `test`.
    writes = [text_classifier_evaluation(args.model, args.data_path, split, eval_dir / Path(split).stem,
                                         no_cuda=args.no_cuda) for split in args.split]  # fmt: skip
    rows = [{"model": Path(args.model).name, "test_set": metrics["split"], "metrics": metrics}
            for metrics in (write() for write in writes)]  # fmt: skip
    print(format_results_table(rows, list(rows[0]["metrics"]["per_class"])))


def add_text_parsers(commands) -> None:
    text = commands.add_parser("text", help="the text branch: masked-LM pre-training, fine-tuning, testing")
    steps = text.add_subparsers(dest="step", required=True)

    pre = steps.add_parser("pretrain", help="continue masked-LM training of an encoder on plain text")
    pre.add_argument("--corpus", nargs="+", required=True, help="plain-text files, one sentence per line")
    pre.add_argument("--encoder", default=None, help="local Hugging Face or legacy KorBERT folder (default: MiniLM)")
    pre.add_argument("--out", required=True, help="output Hugging Face folder")
    pre.add_argument("--new-tokenizer", "--new_tokenizer", dest="new_tokenizer", type=int, default=None,
                     metavar="VOCAB_SIZE", help="train a WordPiece vocabulary and a small BERT from scratch")
    pre.add_argument("--keep-vocab", "--keep_vocab", dest="keep_vocab", action="store_true",
                     help="do not add the characters the encoder's vocabulary lacks (they become [UNK])")
    pre.add_argument("--epochs", type=int, default=5)
    pre.add_argument("--lr", type=float, default=5e-5)
    pre.add_argument("--batch_size", type=int, default=32)
    pre.add_argument("--mlm_probability", type=float, default=0.15)
    pre.set_defaults(func=cmd_text_pretrain)

    fine = steps.add_parser("finetune", help="train the text-only emotion classifier (the reference's text baseline)")
    fine.add_argument("--data", required=True, help="folder of train/dev .pkl, or a manifest with a split column")
    fine.add_argument("--encoder", default=None, help="local Hugging Face or legacy KorBERT folder (default: MiniLM)")
    fine.add_argument("--out", required=True, help="output folder; usable as --bert_model_path afterwards")
    fine.add_argument("--epochs", type=int, default=25)
    fine.add_argument("--lr", type=float, default=2e-4)
    fine.add_argument("--batch_size", type=int, default=16)
    fine.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip value")
    fine.add_argument("--pooling", default="auto", choices=["auto", "pooler", "cls", "mean"],
                      help="auto: pooled [CLS] when the checkpoint has a trained pooler, else the mean of the token states")
    fine.add_argument("--cross-fit", "--cross_fit", dest="cross_fit", type=int, default=0, metavar="K",
                      help="also store each training sentence's states from an encoder fine-tuned without it "
                           "(K folds), for the cross-modal model to train on (default: off)")
    fine.add_argument("--labels", default=None, help="comma-separated label order (default: the data's)")
    for parser in (pre, fine):
        parser.add_argument("--resume", action="store_true",
                            help="continue the job that a stopped run of this command left beside --out (same settings)")
        parser.add_argument("--overwrite", action="store_true", help="replace the model folder that --out holds")
        parser.add_argument("--warmup_percent", type=float, default=0.1)
        parser.add_argument("--max_len", type=int, default=64, help="tokens per sentence, [CLS] and [SEP] included")
        parser.add_argument("--seed", type=int, default=1111)

    test = steps.add_parser("test", help="test a fine-tuned text classifier on one or more splits")
    test.add_argument("--model", required=True, help="folder written by `audiotext text finetune`")
    test.add_argument("--data_path", default="data", help="folder of .pkl splits, or a manifest with a split column")
    test.add_argument("--split", nargs="+", default=["test"], help="split names in --data_path, or .pkl/manifest files")
    test.add_argument("--eval_dir", default=None, help="where outputs go (default: MODEL/eval/SPLIT)")
    test.set_defaults(func=cmd_text_test)
    for parser in (pre, fine, test):
        parser.add_argument("--no_cuda", action="store_true")
        parser.add_argument("--quiet", action="store_true")
    fine.set_defaults(func=cmd_text_finetune)


def cmd_features_build(args: argparse.Namespace) -> None:
    from audiotext.data.loading import load_encoded, reads_ngrams, text_encoder_for
    from audiotext.runtime import select_device

    cfg = config_from_args(args)
    cache = feature_cache_of(args)
    if cache is None:
        raise SettingError("features build stores features in the cache; drop --no_feature_cache")
    if reads_ngrams(cfg):
        raise SettingError("character n-grams are fitted by a model's training run; "
                           "build the MFCCs with --do_audio and the same audio flags")
    encoder = text_encoder_for(cfg, select_device(args.no_cuda))
    for split in args.split:
        data = load_encoded(cfg, split, encoder, cache, progress=not args.quiet)
        print(f"{split}: {len(data)} clips" + (f", {len(data.text)} distinct sentences" if data.text is not None else ""))
    print(f"feature cache: {cache.root}")


def cmd_features_info(args: argparse.Namespace) -> None:
    cache = feature_cache_of(args)
    entries = cache.entries()
    print(f"feature cache {cache.root}: {len(entries)} entries, "
          f"{sum(e.size_bytes for e in entries) / 2**20:.1f} MiB")  # fmt: skip
    for e in entries:
        source = e.facts.get("encoder") or ", ".join(f"{k} {v}" for k, v in e.facts.get("settings", {}).items())
        print(f"  {e.kind:5s} {e.key}  {e.facts.get('split', '')}: {e.facts['n']} sequences, "
              f"{e.facts['steps']} steps × {e.facts['width']}, {e.size_bytes / 2**20:.1f} MiB  ({source})")  # fmt: skip


def cmd_features_clear(args: argparse.Namespace) -> None:
    cache = feature_cache_of(args)
    print(f"removed {cache.clear()} entries from {cache.root}")


def add_features_parsers(commands) -> None:
    features = commands.add_parser("features", help="the on-disk feature cache: build, info, clear")
    steps = features.add_subparsers(dest="step", required=True)
    build = steps.add_parser("build", help="compute and store the features of splits for a model's settings")
    add_train_arguments(build)
    build.add_argument("--split", nargs="+", default=["train", "dev", "test"], help="splits to build (default: train dev test)")
    build.set_defaults(func=cmd_features_build, no_feature_cache=False)
    for name, func, text in (("info", cmd_features_info, "list the cache's entries"),
                             ("clear", cmd_features_clear, "remove every entry")):  # fmt: skip
        step = steps.add_parser(name, help=text)
        step.add_argument("--feature_cache", "--feature-cache", default=None, metavar="DIR",
                          help="the cache folder (default: $AUDIOTEXT_CACHE or ~/.cache/audiotext/features)")
        step.set_defaults(func=func, no_feature_cache=False, quiet=False)


def cmd_demo(args: argparse.Namespace) -> None:
    from audiotext.recipes.demo import run_demo

    run_demo(args.out, seed=args.seed, seeds=args.seeds, cache=feature_cache_of(args), progress=not args.quiet,
             resume=args.resume)  # fmt: skip


def cmd_compare(args: argparse.Namespace) -> None:
    from audiotext.recipes.compare import ALL_MODELS, FUSING_MODELS, CompareSettings, TextPlan, run_comparison

    if args.pretrain_vocab and args.pretrain_epochs == 0:
        raise SettingError("--pretrain_vocab trains a new BERT by masked-LM pre-training: give --pretrain_epochs > 0")
    _refuse_unread_compare_flags(args, set(FUSING_MODELS))
    labels = args.labels.split(",") if args.labels else data_labels(args.data) or list(REFERENCE_LABELS)
    pretrain = None
    if args.pretrain_epochs:
        pretrain = dict(epochs=args.pretrain_epochs, new_tokenizer_vocab_size=args.pretrain_vocab or None,
                        lr=args.pretrain_lr, max_len=args.max_len_for_text)  # fmt: skip
    finetune = None
    if args.finetune_epochs:
        finetune = dict(epochs=args.finetune_epochs, lr=args.finetune_lr, max_len=args.max_len_for_text)
    defaults = CompareSettings(labels=tuple(labels))
    settings = CompareSettings(
        models=tuple("mult" if m in _MULT_SPELLINGS else m for m in args.models),
        seeds=tuple(range(args.seeds)),
        folds=args.folds,
        split_by=args.split_by,
        audio=AudioConfig(sample_rate=args.sample_rate, resample_rate=args.resample_rate, n_mfcc=args.n_mfcc,
                          features=args.audio_features),
        train=replace(defaults.train, num_epochs=args.num_epochs, early_stop=args.early_stop, select_by=args.select_by,
                      no_cuda=args.no_cuda, class_weights=args.class_weights, transcript_noise=args.transcript_noise),
        model=replace(defaults.model, merge_how=args.merge_how, wide=args.wide, utterance_stats=args.utterance_stats),
        modality_dropout=defaults.modality_dropout if args.modality_dropout is None
        else dict.fromkeys(FUSING_MODELS, args.modality_dropout),
        ema=defaults.ema if args.ema is None else dict.fromkeys(ALL_MODELS, args.ema),
        text_features=args.text_features,
        text=TextPlan(encoder=str(Path(args.encoder).resolve()) if args.encoder else "", pretrain=pretrain,
                      finetune=finetune, cross_fit=args.cross_fit, max_len=args.max_len_for_text),
        labels=tuple(labels),
    )  # fmt: skip
    result = run_comparison(args.data, args.out, settings, feature_cache_of(args), progress=not args.quiet,
                            resume=args.resume, overwrite=args.overwrite)  # fmt: skip
    print(result["tables"])
    print(f"\nreport: {Path(args.out) / 'report.html'}")


def _refuse_unread_compare_flags(args: argparse.Namespace, fusing: set[str]) -> None:
    """Refuses a flag set away from its default that neither a listed model nor the text encoder's
    training reads: compare.json would record it, and it would change nothing."""
    models = {"mult" if m in _MULT_SPELLINGS else m for m in args.models}
    # The encoder is read by a model of its token states, and by the fine-tuned classifier (a row of its own).
    encoder_read = bool(args.finetune_epochs) or (args.text_features == "encoder" and bool(models - {"audio", "linear"}))
    listed = f"--models {' '.join(sorted(models))}"
    rules = [  # (flag, read, why not)
        ("split_by", bool(args.folds), "it says what never crosses folds: give --folds"),
        ("cross_fit", bool(args.finetune_epochs), "it folds the fine-tuning: give --finetune_epochs"),
        ("finetune_lr", bool(args.finetune_epochs), "give --finetune_epochs"),
        ("pretrain_lr", bool(args.pretrain_epochs), "give --pretrain_epochs"),
        *((flag, encoder_read, (f"with {listed} and --text_features {args.text_features} no model reads a text "
                                f"encoder's states, and none is fine-tuned (--finetune_epochs)"))
          for flag in ("encoder", "pretrain_epochs", "max_len_for_text")),
        # A new vocabulary pre-trains a BERT from scratch: --encoder is never loaded (see `pretrain`).
        ("encoder", not (encoder_read and args.pretrain_vocab), "--pretrain_vocab pre-trains a new BERT from scratch"),
        *((flag, bool(models & fusing), f"{listed} holds no fusing model ({', '.join(sorted(fusing))})")
          for flag in ("wide", "utterance_stats", "modality_dropout")),
        ("merge_how", bool(models - {"linear", "text"}),
         f"{listed}: the linear model pools statistics and the text model averages, whatever it says"),
        ("transcript_noise", bool(models - {"audio"}), f"{listed} reads no text"),
        ("text_features", bool(models - {"audio", "linear"}), f"{listed}: linear always reads n-grams, audio no text"),
        ("early_stop", bool(models - {"linear"}), "the linear model stops after 10 epochs without a better dev macro-F1"),
    ]  # fmt: skip
    unread = [f"--{flag.replace('_', '-') if flag == 'split_by' else flag}: {why}" for flag, read, why in rules
              if not read and getattr(args, flag) != args.parser_defaults[flag]]  # fmt: skip
    if unread:
        raise SettingError(f"{'; '.join(unread)} (a setting nothing here reads changes nothing: drop it)")


def add_compare_parser(commands) -> None:
    from audiotext.recipes.compare import ALL_MODELS, CompareSettings

    d = CompareSettings(labels=REFERENCE_LABELS)
    compare = commands.add_parser("compare", help="every model over seeds (and folds) on a prepared corpus, "
                                                  "with intervals, paired tests and report.html")  # fmt: skip
    add = compare.add_argument
    add("--data", required=True, help="folder of train/dev/test(/test_stt) .pkl, or a manifest with a split column")
    add("--out", default="compare_runs", help="output folder (default: compare_runs)")
    add("--resume", action="store_true",
        help="continue the comparison in --out: finished runs are kept, unfinished ones continue from their checkpoint")
    add("--overwrite", action="store_true", help="run the comparison in --out again from the start")
    add("--models", nargs="+", default=list(ALL_MODELS), choices=[*MODEL_NAMES, *_MULT_SPELLINGS],
        help="models to compare (default: all of them)")
    add("--seeds", type=int, default=len(d.seeds), help="seeds per model, 0 to N-1 (default: 5)")
    add("--folds", type=int, default=0, metavar="K",
        help="K speaker- or sentence-independent folds over train+dev+test (default: 0, the corpus's own split)")
    add("--split-by", "--split_by", dest="split_by", default=d.split_by, choices=["speaker", "sentence"],
        help="what never crosses folds (default: speaker)")
    add("--encoder", default=None, help="local Hugging Face text encoder folder (default: packaged MiniLM)")
    add("--pretrain_epochs", type=int, default=0, help="masked-LM pre-training epochs on the training sentences (default: 0, none)")
    add("--pretrain_vocab", type=int, default=0, metavar="VOCAB_SIZE",
        help="pre-train a new small BERT with a WordPiece vocabulary of this size (default: continue the encoder)")
    add("--pretrain_lr", type=float, default=1e-3, help="pre-training learning rate (default: 1e-3)")
    add("--finetune_epochs", type=int, default=0,
        help="fine-tune the encoder as the text-only classifier for this many epochs (default: 0, frozen)")
    add("--finetune_lr", type=float, default=2e-4,
        help="fine-tuning learning rate (default: 2e-4; 1e-3 for a small BERT pre-trained from scratch)")
    add("--cross_fit", type=int, default=None, metavar="K",
        help="cross-fitting folds of fine-tuning (default: 3 when no test sentence is a training sentence, else 0)")
    add("--num_epochs", type=int, default=d.train.num_epochs, help=f"epochs per model at most (default: {d.train.num_epochs})")
    add("--early_stop", type=int, default=d.train.early_stop, help=f"patience in epochs (default: {d.train.early_stop})")
    add("--select_by", default=d.train.select_by, choices=["loss", "macro_f1"], help="dev metric that picks the epoch")
    add("--sample_rate", type=int, default=d.audio.sample_rate, help="sample rate of the stored clips")
    add("--resample_rate", type=int, default=d.audio.resample_rate, help="rate the MFCCs are computed at")
    add("--n_mfcc", type=int, default=d.audio.n_mfcc, help="MFCC coefficients kept")
    add("--merge_how", default=d.model.merge_how, choices=["average", "last", "stats"],
        help=f"how the deep models pool a sequence over time (default: {d.model.merge_how})")
    add_fusion_arguments(compare, d.audio, TextConfig(features=d.text_features), d.model, d.train, d.modality_dropout,
                         d.ema)  # fmt: skip
    add("--max_len_for_text", type=int, default=48,
        help="tokens per sentence, for pre-training, fine-tuning and the models' text features")
    add("--labels", default=None, help="comma-separated label order (default: the data's)")
    add("--no_cuda", action="store_true")
    add("--quiet", action="store_true")
    add_cache_arguments(compare)
    # What a flag left at its default holds: one set to something else that nothing reads is refused.
    compare.set_defaults(func=cmd_compare, parser_defaults={action.dest: action.default for action in compare._actions})


def cmd_transcribe(args: argparse.Namespace) -> None:
    if not LOWEST_CLIP_RATE <= args.sample_rate <= 384000:
        raise SettingError(f"--sample_rate {args.sample_rate}: a rate of stored clips is {LOWEST_CLIP_RATE} to 384000 Hz")
    labels = args.labels.split(",") if args.labels else data_labels(args.data) or list(REFERENCE_LABELS)
    folder = Path(args.data).parent if is_manifest(args.data) else Path(args.data)
    # The corpus's own files hold the true transcripts: a recogniser's would replace them unseen.
    corpus_files = [folder / f"{name}.pkl" for name in ("train", "dev", "test", args.split)] + [Path(args.data)]
    out = writable_file(args.out or folder / f"{args.split}_stt.pkl", "--out", corpus_files,
                        f"a file of the corpus {args.data}")  # fmt: skip
    # A corpus may come with recogniser transcripts of its own (the reference's test_stt.pkl, made
    # by a cloud service): replaced only when named.
    if args.out is None and out.exists():
        raise SettingError(f"{out} exists (the corpus's own {out.name}, or an earlier transcription): give "
                           f"--out {out} to replace it, or --out NEW.pkl")  # fmt: skip
    transcribe(args.data, args.split, out, labels, args.sample_rate, progress=not args.quiet)


def transcribe(data: str | Path, split: str, out: Path, labels: list[str], sample_rate: int, progress: bool) -> None:
    from audiotext.data.asr import default_transcriber, transcribe_split

    result = transcribe_split(data, split, out, default_transcriber(), labels, sample_rate, progress=progress)
    print(f"wrote {out}: {result['clips']} clips, character error rate {100 * result['cer']:.2f}% against the "
          f"true transcripts, nothing heard in {result['nothing_heard']}")  # fmt: skip


def add_transcribe_parser(commands) -> None:
    transcribe = commands.add_parser("transcribe", help="the reference's test_stt split of any corpus, by offline "
                                                        "speech recognition (Vosk, Korean; the asr extra)")  # fmt: skip
    transcribe.add_argument("--data", required=True, help="a folder of split pickles, or a manifest with a split column")
    transcribe.add_argument("--split", default="test", help="the split to transcribe (default: test)")
    transcribe.add_argument("--out", default=None,
                            help="the pickle to write (default: SPLIT_stt.pkl in DATA, or beside the manifest DATA)")
    transcribe.add_argument("--labels", default=None, help="comma-separated label order (default: the data's, else the reference's)")
    transcribe.add_argument("--sample_rate", type=int, default=AudioConfig().sample_rate,
                            help="rate of the clips in the pickles, and of the clips a manifest is read at (default: 48000)")
    transcribe.add_argument("--quiet", action="store_true", help="no progress bar")
    transcribe.set_defaults(func=cmd_transcribe)


def cmd_export(args: argparse.Namespace) -> None:
    from audiotext.inference.export import export_model

    out = export_model(args.run_dir, args.out, onnx=args.onnx, setting="--out")
    print(f"wrote the model folder {out} (model card: {out / 'README.md'})")


def add_export_parser(commands) -> None:
    export = commands.add_parser("export", help="write a trained run as a model folder that stands alone")
    export.add_argument("run_dir", help="a run folder (from train, compare or demo) or a model folder")
    export.add_argument("--out", required=True,
                        help="the model folder to write (a model folder there is replaced atomically; any other folder is refused)")
    export.add_argument("--onnx", action="store_true", help="also write model.onnx, the model with its text encoder as one graph for onnxruntime")
    export.set_defaults(func=cmd_export)


PREDICTIONS_FILE = "predictions.csv"
PREDICT_BATCH = 32


def cmd_predict(args: argparse.Namespace) -> None:
    from audiotext.inference.recognizer import EmotionRecognizer, check_batch_size, read_clip

    if (args.audio is None) == (args.manifest is None):
        raise SettingError("give either --audio FILE or --manifest FILE")
    # A flag of the other way would be ignored without a word: refused instead.
    one_clip = {"--text": args.text is not None, "--json": args.json}
    many_clips = {"--split": args.split is not None, "--out": args.out is not None,
                  "--batch_size": args.batch_size is not None, "--feature_workers": args.feature_workers != 0}  # fmt: skip
    ignored = [flag for flag, given in (many_clips if args.manifest is None else one_clip).items() if given]
    if ignored:
        raise SettingError(f"{', '.join(ignored)}: only with {'--manifest' if args.manifest is None else '--audio'}")
    if args.manifest is not None:
        model = Path(args.model)
        read = [Path(args.manifest), *Path(args.manifest).glob("*.pkl"), *(model.rglob("*") if model.is_dir() else [])]
        args.out = writable_file(args.out or PREDICTIONS_FILE, "--out", read, "the manifest, a split or a file of the model")
        args.batch_size = PREDICT_BATCH if args.batch_size is None else args.batch_size
        check_batch_size(args.batch_size, "--batch_size")
    recognizer = EmotionRecognizer.from_pretrained(args.model, device="cpu" if args.no_cuda else None,
                                                   backend="onnx" if args.onnx else "torch",
                                                   feature_workers=args.feature_workers if args.manifest else 0)  # fmt: skip
    if args.manifest is not None:
        from audiotext.inference.batch import predict_manifest

        with recognizer:  # its feature workers stop here, not in the interpreter's exit, which can fail
            out = predict_manifest(recognizer, args.manifest, args.out, split=args.split, batch_size=args.batch_size,
                                   progress=not args.quiet)  # fmt: skip
        print(f"wrote {out}")
        return
    audio, text = args.audio, args.text if recognizer.reads_text else None  # an audio-only model reads none
    if recognizer.needs_transcript(text):  # what is printed is the transcript the model reads
        samples, rate = read_clip(args.audio)  # decoded once, for the recogniser and the model
        audio = {"raw": samples, "sampling_rate": rate}
        text = recognizer.transcribe(audio, name=args.audio)
    scores = recognizer.ranked(recognizer.predict_proba([audio], [text], names=[args.audio])[0])
    if args.json:
        print(json.dumps({"audio": args.audio, "text": text, "label": scores[0]["label"], "scores": scores},
                         ensure_ascii=False))  # fmt: skip
        return
    if text is not None:
        print(f"text: {text}")
    print(f"prediction: {scores[0]['label']}")
    width = max(len(s["label"]) for s in scores)
    for s in scores:
        print(f"  {s['label']:<{width}}  {s['score']:6.2%}  {'#' * round(40 * s['score'])}")


def add_predict_parser(commands) -> None:
    predict = commands.add_parser("predict", help="the emotion of new clips, from a model folder or a run folder")
    predict.add_argument("model", help="a model folder (audiotext export) or a run folder")
    predict.add_argument("--audio", default=None, help="one clip: any file PyAV decodes (wav, flac, mp3, ogg, m4a, mp4, ...)")
    predict.add_argument("--text", default=None,
                         help="what is said in --audio; without it a model that reads text transcribes offline (asr extra)")
    predict.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    predict.add_argument("--manifest", default=None,
                         help="many clips: a manifest (audio [, text, label, start, end]) or a folder of the "
                              "reference's pickles with --split; writes predictions.csv")  # fmt: skip
    predict.add_argument("--split", default=None, help="with --manifest: the split to predict (a manifest's split column, or NAME.pkl)")
    predict.add_argument("--out", default=None, help=f"with --manifest: the CSV to write (default: {PREDICTIONS_FILE})")
    predict.add_argument("--batch_size", type=int, default=None,
                         help=f"with --manifest: clips per forward pass (default: {PREDICT_BATCH})")  # fmt: skip
    predict.add_argument("--feature_workers", type=int, default=0, metavar="N",
                         help="with --manifest: processes computing the next batches' audio features while a batch "
                              "runs through the model (default: 0, in the predicting process)")  # fmt: skip
    predict.add_argument("--onnx", action="store_true", help="run the model folder's model.onnx on onnxruntime")
    predict.add_argument("--no_cuda", action="store_true", help="stay on the CPU even when CUDA is available")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from audiotext.inference.recognizer import EmotionRecognizer
    from audiotext.inference.service import create_app, listening_socket

    limits = ServiceLimits.from_mib(args.max_upload_mb, args.max_seconds)
    if not 0 <= args.port <= 65535:
        raise SettingError(f"--port must be in 0..65535, got {args.port}")
    recognizer = EmotionRecognizer.from_pretrained(args.model, device="cpu" if args.no_cuda else None)
    app = create_app(recognizer, max_upload_bytes=limits.max_upload_bytes, max_seconds=limits.max_seconds)
    listening = listening_socket(args.host, args.port)  # a port in use is one line, before "serving" is said
    port = listening.getsockname()[1]  # the port the system chose for --port 0
    print(f"serving {args.model} on http://{args.host}:{port}/ (API: POST /predict; schema: /openapi.json)",
          flush=True)  # fmt: skip
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])


def add_serve_parser(commands) -> None:
    serve = commands.add_parser("serve", help="a model over HTTP: POST /predict, GET /health, /labels, and a page at /")
    serve.add_argument("model", help="a model folder (audiotext export) or a run folder")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every network)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    serve.add_argument("--max_upload_mb", type=float, default=ServiceLimits.max_upload_bytes / 2**20,
                       help="largest upload accepted, in MiB (default: %(default)g)")
    serve.add_argument("--max_seconds", type=float, default=ServiceLimits.max_seconds,
                       help="longest clip accepted, in seconds (default: %(default)g)")
    serve.add_argument("--no_cuda", action="store_true", help="stay on the CPU even when CUDA is available")
    serve.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiotext", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train an audio-only, text-only or cross-modal model")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    add_resume_arguments(train)

    test = commands.add_parser("test", help="test a trained run on one or more splits")
    add_test_arguments(test)
    test.set_defaults(func=cmd_test)

    corpus = commands.add_parser("demo-corpus", help="synthesize the Korean demo corpus with espeak-ng")
    corpus.add_argument("--out", required=True, help="folder for train/dev/test/test_stt .pkl")
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--split_by", "--split-by", default="clip", choices=["clip", "script"],
                        help="clip: random clips; script: sentence-disjoint splits")
    corpus.add_argument("--speakers", type=int, default=DEFAULT_SPEAKERS, help="number of espeak-ng voice variants")
    corpus.add_argument("--quiet", action="store_true")
    corpus.set_defaults(func=cmd_demo_corpus)

    add_prepare_parsers(commands)
    add_text_parsers(commands)

    demo = commands.add_parser("demo", help="build the demo corpus, train and test every model, print the table")
    demo.add_argument("--out", default="demo_runs")
    demo.add_argument("--seed", type=int, default=0, help="seed of the corpus")
    demo.add_argument("--seeds", type=int, default=None,
                      help="seeds per model on both splits (default: 5 on the script split, 2 on the clip split)")
    demo.add_argument("--quiet", action="store_true")
    demo.add_argument("--resume", action="store_true",
                      help="continue a demo that was stopped, keeping its finished runs (default: run it all again)")
    add_cache_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    add_compare_parser(commands)
    add_features_parsers(commands)
    add_transcribe_parser(commands)
    add_export_parser(commands)
    add_predict_parser(commands)
    add_serve_parser(commands)
    _add_to_every_command(parser, "--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of an error instead of its one-line message")  # fmt: skip
    return parser


def _add_to_every_command(parser: argparse.ArgumentParser, *flags: str, **options) -> None:
    """Adds a flag to `parser` and to every (sub)command under it, so it may follow any of them.
    SUPPRESS as the default keeps a subcommand from resetting what its parent parsed."""
    parser.add_argument(*flags, **options)
    for action in parser._actions:  # argparse offers no public way to walk its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _add_to_every_command(command, *flags, **options)


USAGE_ERROR, DATA_ERROR, INTERRUPTED, BROKEN_PIPE = 2, 1, 130, 141  # 128 + the signal, as a shell reports it


def main(argv: list[str] | None = None) -> None:
    """Runs one command. Our own errors (bad settings, data, files, models) print one line,
    `error: ...`, and exit with 2 for a setting, 1 for the rest; Ctrl-C exits with 130. With
    --debug every error keeps its traceback."""
    args = build_parser().parse_args(argv)
    # SIGTERM (`kill`, `timeout`, a scheduler's preemption) stops a command as Ctrl-C does, so what
    # it was writing is removed instead of left half-written; its default killed the process as it
    # stood. `serve` is left to uvicorn, which shuts down cleanly on it and then dies of it (143),
    # as service managers expect. Signals can be set from the main thread only.
    if args.func is cmd_serve or threading.current_thread() is not threading.main_thread():
        _run(args)
        return
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _run(args: argparse.Namespace) -> None:
    if getattr(args, "debug", False):
        _quiet_other_ranks()
        args.func(args)
        leave_processes()
        return
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        _quiet_other_ranks()
        args.func(args)
        leave_processes()
    except TrainingInterrupted as err:
        # --overwrite with --resume is refused: the hint must not keep it.
        resume = "--resume in place of --overwrite" if getattr(args, "overwrite", False) else "--resume"
        _exit(INTERRUPTED, f"interrupted: {err} (the same command with {resume} continues it)", err)
    except KeyboardInterrupt:
        _exit(INTERRUPTED, "interrupted")
    except BrokenPipeError as err:
        if not _output_reader_gone():
            _exit(DATA_ERROR, f"error: {err}", err)  # another pipe than our output
        # The reader of our output went away (`| head`): nothing to tell it. Python would complain
        # again flushing stdout at exit, so stdout is pointed at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(BROKEN_PIPE) from None
    except SettingError as err:
        _exit(USAGE_ERROR, f"error: {err}", err)
    except (AudiotextError, ValueError, OSError) as err:
        # Every such error names its file, row or flag and what is wrong.
        _exit(DATA_ERROR, f"error: {err}", err)


def _output_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed: such a pipe polls as an error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError):  # no file descriptor (a captured stdout)
        return False


def _quiet_other_ranks() -> None:
    if launcher_setting("RANK", 0) > 0:
        # Under torchrun the main process (rank 0) alone prints results; the others would repeat them.
        sys.stdout = open(os.devnull, "w", encoding="utf-8")


def _exit(code: int, message: str, err: BaseException | None = None) -> None:
    # In a torchrun job, an error of the main process is raised in all; the main one reports it.
    if not getattr(err, "replicated", False):
        print(message, file=sys.stderr)
    # Left joined, a torchrun process could abort at exit ("terminate called without an active exception").
    with contextlib.suppress(Exception):
        leave_processes()
    raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(main())
