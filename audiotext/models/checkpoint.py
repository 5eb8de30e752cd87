"""Run folders and text-classifier folders: what evaluation, inference and training all read and
write, so it sits below all three.

A run folder holds config.json (the run's configuration and the widths derived from it) and
model.safetensors: enough to rebuild the model alone. While it trains it also holds
resume.safetensors (the whole training state, see `audiotext.training.state`); finished.json,
written last, says that training ended: until then the weights are only the best so far.

The weights carry, in their safetensors metadata, the settings they were trained with
(`weights_facts`), so a config.json edited or swapped after training is caught when the two are loaded together instead of predicting with mismatched
parts. A text-classifier folder is a Hugging Face encoder folder plus `classifier_head.safetensors`
and `classifier.json`. No pickles: weights are safetensors and configurations JSON.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from audiotext.config import RunConfig
from audiotext.data.loading import reads_ngrams
from audiotext.errors import DataError, SettingError
from audiotext.features.encoders import load_text_encoder, save_directory
from audiotext.features.text import default_encoder_path, save_out_of_fold_states
from audiotext.features.ngrams import NGRAMS_FILE, CharNgramEncoder
from audiotext.io import atomic_path, file_digest, first_difference, folder_digest, readable_as_umask, write_csv_rows, write_json
from audiotext.models.classifiers import Dims, build_model
from audiotext.models.text_classifier import SequenceClassifier

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_WEIGHTS = "classifier_head.safetensors"
HEAD_CONFIG = "classifier.json"
EPOCH_LOG = "epochs.csv"
FINISHED_FILE = "finished.json"
RESUME_FILE = "resume.safetensors"
FACTS_KEY = "audiotext"  # safetensors metadata key of the settings the weights were trained with


class CheckpointError(DataError):
    """Weights that cannot be used with their configuration; the message names the file and what
    disagrees (a tensor and both shapes, a label set, a feature setting)."""


def weights_facts(cfg: RunConfig, dims: Dims) -> dict:
    """What the weights mean, beyond their shapes: the label order, the features they read (any
    change of these gives other inputs of the same shape), the widths."""
    return {
        "labels": list(cfg.labels),
        "modality": cfg.model.modality,
        "audio": dataclasses.asdict(cfg.audio),
        "text_features": cfg.text.features,
        "dims": dataclasses.asdict(dims),
    }


def run_facts(run_dir: Path, cfg: RunConfig) -> dict:
    """Which run the weights are, recorded beside `weights_facts` and checked where recorded (runs
    saved before they were have none): weights copied from another seed or corpus of the same model,
    a model or text setting edited in config.json (heads, the causal mask, the alphabet), or an
    n-gram file or text encoder changed beside them (a `text finetune --overwrite` of the encoder the
    run was trained on) fit the shapes and give wrong answers without a word."""
    facts = {
        "run": {"name": cfg.name, "seed": cfg.train.seed, "data": cfg.data_path},
        "model": dataclasses.asdict(cfg.model),
        "text": {"alphabet": cfg.text.alphabet, "max_len_for_text": cfg.text.max_len_for_text},
    }
    if (run_dir / NGRAMS_FILE).is_file():
        facts["ngrams"] = file_digest(run_dir / NGRAMS_FILE).hex()
    if cfg.model.modality != "audio" and not reads_ngrams(cfg):
        encoder = encoder_folder(run_dir, cfg.text.encoder)
        if encoder.is_dir():  # a missing one is named when it is loaded
            facts["encoder"] = folder_digest(encoder)
    return facts


def encoder_folder(run_dir: Path, encoder: str) -> Path:
    """The text encoder a run's config.json names: the packaged MiniLM for "", a model folder's own
    copy for a path relative to the folder."""
    if not encoder:
        return default_encoder_path()
    if not Path(encoder).is_absolute() and (run_dir / encoder).is_dir():
        return run_dir / encoder
    return Path(encoder)


METRICS_FILE = "metrics.json"  # what `audiotext test` writes in eval/<split>/ of a run
_METRICS_KEYS = ("n", "accuracy", "macro_f1", "weighted_f1", "labels", "confusion_matrix", "per_class")


def weights_digest(run_dir: Path) -> str:
    """Hex digest of the run's weights file: what `audiotext test` tested, recorded in metrics.json."""
    return file_digest(run_dir / WEIGHTS_FILE).hex()


def tested_splits(run_dir: Path, cfg: RunConfig) -> dict[str, dict]:
    """{split: metrics} of the run's eval/<split>/metrics.json, each checked: figures of other weights
    (a run folder copied, or another run tested into this one's eval/ with --eval_dir) or of other
    labels are left out with a warning, never shown as this run's."""
    tested, mine = {}, weights_digest(run_dir) if (run_dir / WEIGHTS_FILE).is_file() else None
    for path in sorted((run_dir / "eval").glob(f"*/{METRICS_FILE}")):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not readable as the figures of a test ({err})") from None
        missing = [key for key in _METRICS_KEYS if not isinstance(metrics, dict) or key not in metrics]
        if missing:
            raise DataError(f"{path}: not the figures of a test (no {', '.join(missing)})")
        # Tested before metrics.json recorded the weights: taken on its labels alone.
        if metrics.get("weights", mine) != mine or metrics["labels"] != list(cfg.labels):
            warnings.warn(f"{path} holds figures of other weights or labels than the run {run_dir}'s: left out")
            continue
        tested[path.parent.name] = metrics
    return tested


def tested_as(split: str, metrics: dict, cfg: RunConfig) -> str:
    """How a report names a tested split: its name, marked where its figures are no test's (the
    run's own training split; an unfinished run's best epoch so far)."""
    marks = []
    if split == "train" and Path(metrics.get("data", "")).resolve() == Path(cfg.data_path).resolve():
        marks.append("the training data, not held out")
    if metrics.get("best_so_far"):
        marks.append("an unfinished run's best epoch so far")
    return split + (f" ({'; '.join(marks)})" if marks else "")


def save_config(run_dir: str | Path, cfg: RunConfig, dims: Dims) -> None:
    write_json(Path(run_dir) / CONFIG_FILE, {**cfg.to_dict(), "dims": dataclasses.asdict(dims)})


def save_weights(run_dir: str | Path, model: nn.Module, cfg: RunConfig, dims: Dims) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    facts = json.dumps({**weights_facts(cfg, dims), **run_facts(Path(run_dir), cfg)}, ensure_ascii=False)
    with atomic_path(Path(run_dir) / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={FACTS_KEY: facts})
        readable_as_umask(tmp)


def load_config(run_dir: str | Path) -> tuple[RunConfig, Dims]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    stored = json.loads(path.read_text(encoding="utf-8"))
    if "dims" not in stored:
        raise ValueError(f"{path}: no 'dims' (model widths); was it written by an older audiotext? Train the run again")
    try:
        dims = Dims(**stored.pop("dims"))
        cfg = RunConfig.from_dict(stored)
    except TypeError as err:  # a setting this version does not know, or one it needs that is missing
        raise ValueError(f"{path}: {err}; was it written by another version of audiotext?") from None
    except SettingError as err:  # edited by hand, or a value an earlier audiotext accepted (max_len_for_audio 2)
        raise ValueError(f"{path}: {err}; this audiotext cannot load such a run: train it again") from None
    # A model folder keeps its text encoder inside itself, named relative to the folder.
    if cfg.text.encoder and (inside := encoder_folder(Path(run_dir), cfg.text.encoder)) != Path(cfg.text.encoder):
        cfg.text.encoder = str(inside)
    return cfg, dims


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / FINISHED_FILE).is_file()


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", best_so_far: bool = False
) -> tuple[RunConfig, nn.Module]:
    """The configuration and model (in eval mode) of a finished run, or of an unfinished one's
    best epoch so far when `best_so_far` says so (with a warning)."""
    cfg, dims = load_config(run_dir)
    weights = Path(run_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no {WEIGHTS_FILE}; did training finish an epoch?")
    if not is_finished(run_dir):
        if not best_so_far:
            raise CheckpointError(f"{run_dir}: training did not finish (no {FINISHED_FILE}); resume it with "
                                  "train --resume, or test its best epoch so far with test --best_so_far")  # fmt: skip
        warnings.warn(f"{run_dir} did not finish training: using its best epoch so far", stacklevel=2)
    model = build_model(cfg.model, dims)
    model.load_state_dict(checked_state(weights, model, cfg, dims))
    return cfg, model.to(device).eval()


def checked_state(weights: Path, model: nn.Module, cfg: RunConfig, dims: Dims) -> dict[str, torch.Tensor]:
    """The tensors of `weights`, once they are known to fit `model` built from `cfg` and `dims`:
    the same names and shapes, finite values, and (for weights that record them) the same labels
    and feature settings; otherwise CheckpointError naming what differs."""
    try:
        with safe_open(str(weights), framework="pt") as stored:
            recorded = (stored.metadata() or {}).get(FACTS_KEY)
            state = {name: stored.get_tensor(name) for name in stored.keys()}
    except Exception as err:  # safetensors raises its own error types, all meaning "unreadable"
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from None
    if recorded is not None:
        trained = json.loads(recorded)
        for key, value in weights_facts(cfg, dims).items():
            if trained.get(key) != value:
                raise CheckpointError(
                    f"{weights}: trained with {key} = {trained.get(key)!r}, but {CONFIG_FILE} says {value!r}"
                )
        for key, value in run_facts(weights.parent, cfg).items():
            if key not in trained or trained[key] == value:
                continue
            if key in ("model", "text"):
                raise CheckpointError(f"{weights}: trained with {first_difference(trained[key], value, key)} "
                                      f"in {CONFIG_FILE}")  # fmt: skip
            what = {"ngrams": f"{NGRAMS_FILE} has changed since",
                    "encoder": f"the text encoder {encoder_folder(weights.parent, cfg.text.encoder)} has changed since",
                    "run": f"{CONFIG_FILE} is of {value}"}[key]  # fmt: skip
            raise CheckpointError(f"{weights}: these weights are of another run ({what}; they were saved "
                                  f"with {key} = {trained[key]!r})")  # fmt: skip
    ngrams = weights.parent / NGRAMS_FILE
    width = CharNgramEncoder.load(ngrams).hidden_size if dims.text_vector and ngrams.is_file() else dims.text
    if width != dims.text:  # a convolution over the wrong width fails deep in the forward pass
        raise CheckpointError(f"{ngrams}: {width} n-grams, but the weights read {dims.text}: the n-grams of another run")
    expected = model.state_dict()
    missing, unused = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing:
        raise CheckpointError(f"{weights}: no tensor {missing[0]!r} ({len(missing)} missing), which the "
                              f"{cfg.model.modality!r} model of {CONFIG_FILE} needs")  # fmt: skip
    if unused:
        raise CheckpointError(f"{weights}: tensor {unused[0]!r} ({len(unused)} in all) is not part of the "
                              f"{cfg.model.modality!r} model of {CONFIG_FILE}")  # fmt: skip
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{weights}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"the model of {CONFIG_FILE} needs {tuple(expected[name].shape)}")  # fmt: skip
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{weights}: tensor {name!r} holds non-finite values (NaN or inf)")
    return state


def save_text_classifier(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    model: SequenceClassifier,
    info: dict,
    epoch_rows: list[dict],
    out_of_fold: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Writes the classifier folder atomically (a crash leaves the old one or none), with the
    out-of-fold states of its training sentences when cross-fitting made them."""

    def write(tmp: Path) -> None:
        model.encoder.save_pretrained(tmp)  # config.json + model.safetensors
        tokenizer.save_pretrained(tmp)
        head = {k: v.detach().cpu().contiguous() for k, v in model.classifier.state_dict().items()}
        save_file(head, tmp / HEAD_WEIGHTS)
        if out_of_fold:
            save_out_of_fold_states(tmp, out_of_fold)
        (tmp / HEAD_CONFIG).write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        write_csv_rows(tmp / EPOCH_LOG, epoch_rows)

    return save_directory(out_dir, write)


def load_text_classifier(
    model_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[PreTrainedTokenizerBase, SequenceClassifier, dict]:
    """(tokenizer, classifier in eval mode, classifier.json) from a fine-tuned classifier folder."""
    model_dir = Path(model_dir)
    if not (model_dir / HEAD_CONFIG).is_file() or not (model_dir / HEAD_WEIGHTS).is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a fine-tuned text classifier: it lacks {HEAD_CONFIG} or {HEAD_WEIGHTS}"
        )
    info = json.loads((model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))
    tokenizer, encoder = load_text_encoder(model_dir)
    model = SequenceClassifier(encoder, len(info["labels"]), info["pooling"], info["dropout"])
    try:
        model.classifier.load_state_dict(load_file(model_dir / HEAD_WEIGHTS))
    except (SafetensorError, RuntimeError) as err:  # cut short, or tensors of another head
        raise DataError(f"{model_dir / HEAD_WEIGHTS}: not this classifier's head ({str(err).strip().splitlines()[0]})") from None
    return tokenizer, model.to(device).eval(), info
