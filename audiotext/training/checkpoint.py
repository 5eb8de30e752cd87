"""A run directory holds config.json and model.safetensors: enough to rebuild the model alone.

No pickles: weights are safetensors and the configuration is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from audiotext.config import RunConfig
from audiotext.io import atomic_path, write_json
from audiotext.models.classifiers import build_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_config(run_dir: str | Path, cfg: RunConfig) -> None:
    write_json(Path(run_dir) / CONFIG_FILE, cfg.to_dict())


def save_weights(run_dir: str | Path, model: nn.Module) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(Path(run_dir) / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))


def load_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    return RunConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[RunConfig, nn.Module]:
    cfg = load_config(run_dir)
    weights = Path(run_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no {WEIGHTS_FILE}; did training finish an epoch?")
    model = build_model(cfg.model)
    model.load_state_dict(load_file(str(weights)))
    return cfg, model.to(device).eval()
