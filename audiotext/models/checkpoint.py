"""Run folders and text-classifier folders: what evaluation, inference and training all read and
write, so it sits below all three.

A run folder holds config.json (the run's configuration and the widths derived from it) and
model.safetensors: enough to rebuild the model alone. A text-classifier folder is a Hugging Face
encoder folder plus `classifier_head.safetensors` and `classifier.json`. No pickles: weights are
safetensors and configurations JSON.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from audiotext.config import RunConfig
from audiotext.features.encoders import load_text_encoder, save_directory
from audiotext.features.text import save_out_of_fold_states
from audiotext.io import atomic_path, write_csv_rows, write_json
from audiotext.models.classifiers import Dims, build_model
from audiotext.models.text_classifier import SequenceClassifier

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_WEIGHTS = "classifier_head.safetensors"
HEAD_CONFIG = "classifier.json"
EPOCH_LOG = "epochs.csv"


def save_config(run_dir: str | Path, cfg: RunConfig, dims: Dims) -> None:
    write_json(Path(run_dir) / CONFIG_FILE, {**cfg.to_dict(), "dims": dataclasses.asdict(dims)})


def save_weights(run_dir: str | Path, model: nn.Module) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(Path(run_dir) / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))


def load_config(run_dir: str | Path) -> tuple[RunConfig, Dims]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    stored = json.loads(path.read_text(encoding="utf-8"))
    if "dims" not in stored:
        raise ValueError(f"{path}: no 'dims' (model widths); was it written by an older audiotext? Train the run again")
    dims = Dims(**stored.pop("dims"))
    return RunConfig.from_dict(stored), dims


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[RunConfig, nn.Module]:
    cfg, dims = load_config(run_dir)
    weights = Path(run_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no {WEIGHTS_FILE}; did training finish an epoch?")
    model = build_model(cfg.model, dims)
    model.load_state_dict(load_file(str(weights)))
    return cfg, model.to(device).eval()


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
    model.classifier.load_state_dict(load_file(model_dir / HEAD_WEIGHTS))
    return tokenizer, model.to(device).eval(), info
