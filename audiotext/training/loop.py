"""Training: `train(cfg, run_dir) -> metrics`, with dev evaluation every epoch and the best-on-dev
checkpoint kept in the run directory."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from audiotext.config import RunConfig
from audiotext.data.dataset import EncodedSplit, LengthBucketBatchSampler, collate, encode_split
from audiotext.data.manifest import load_any_split
from audiotext.evaluation.metrics import classification_metrics
from audiotext.features.text import TextEncoder
from audiotext.io import atomic_path, write_csv_rows
from audiotext.models.classifiers import build_model
from audiotext.training.checkpoint import save_config, save_weights
from audiotext.training.schedule import WarmupThenPlateau

EPOCH_LOG = "epochs.csv"


def select_device(no_cuda: bool = False) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def text_encoder_for(cfg: RunConfig, device: torch.device) -> TextEncoder | None:
    if cfg.model.modality == "audio":
        return None
    return TextEncoder(cfg.text.encoder or None, max_len=cfg.text.max_len_for_text, device=device)


def load_encoded(
    cfg: RunConfig, split: str, text_encoder: TextEncoder | None, progress: bool = True
) -> EncodedSplit:
    """Loads a split (see `load_any_split`) and computes its features once."""
    use_audio = cfg.model.modality != "text"
    loaded = load_any_split(cfg.data_path, split, cfg.labels, cfg.audio.sample_rate, with_audio=use_audio)
    return encode_split(loaded, cfg.audio, text_encoder, use_audio=use_audio, progress=progress)


def make_loader(
    data: EncodedSplit, batch_size: int, shuffle: bool, seed: int = 0, length_buckets: bool = False
) -> DataLoader:
    """Batches in order, shuffled, or shuffled in batches of similar length (see `LengthBucketBatchSampler`)."""
    generator = torch.Generator().manual_seed(seed)
    if shuffle and length_buckets:
        sampler = LengthBucketBatchSampler(data.lengths(), batch_size, generator)
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)


def _forward(model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    inputs = {k: (None if v is None else v.to(device)) for k, v in batch.items() if k != "labels"}
    return model(**inputs)  # (B, C)


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and labels (N,) over a whole loader, in order."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        logits.append(_forward(model, batch, device).float().cpu())
        labels.append(batch["labels"])
    return torch.cat(logits), torch.cat(labels)


def score_logits(logits: torch.Tensor, targets: torch.Tensor, labels: list[str]) -> dict:
    """Classification metrics of logits (N, C) against targets (N,), plus the cross-entropy loss."""
    metrics = classification_metrics(targets.tolist(), logits.argmax(-1).tolist(), labels)
    metrics["loss"] = F.cross_entropy(logits, targets).item()
    return metrics


def evaluate_loss_and_metrics(model, loader, device, labels: list[str]) -> dict:
    return score_logits(*predict(model, loader, device), labels)


def train(cfg: RunConfig, run_dir: str | Path, results_csv: str | Path | None = None, progress: bool = True) -> dict:
    """Trains the model cfg describes; returns the best dev metrics and where the run was saved."""
    run_dir = Path(run_dir)
    if cfg.train.num_epochs < 1 or cfg.train.batch_size < 1:
        raise ValueError(f"num_epochs and batch_size must be at least 1, got {cfg.train.num_epochs}, {cfg.train.batch_size}")
    seed_everything(cfg.train.seed)
    device = select_device(cfg.train.no_cuda)
    text_encoder = text_encoder_for(cfg, device)
    if text_encoder is not None:
        if cfg.text.hidden_size not in (None, text_encoder.hidden_size):
            raise ValueError(
                f"hidden size {cfg.text.hidden_size} was asked for, but the encoder "
                f"{cfg.text.encoder or 'MiniLM (default)'} is {text_encoder.hidden_size} wide"
            )
        cfg.text.hidden_size = cfg.model.text_dim = text_encoder.hidden_size
    cfg.model.audio_dim = cfg.audio.n_mfcc
    cfg.model.n_classes = len(cfg.labels)

    train_data = load_encoded(cfg, "train", text_encoder, progress)
    dev_data = load_encoded(cfg, "dev", text_encoder, progress)
    model = build_model(cfg.model)
    if train_data.audio is not None:
        model.audio_norm.fit(torch.cat(train_data.audio))
    model.to(device)

    train_loader = make_loader(
        train_data, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, length_buckets=cfg.train.length_buckets
    )
    dev_loader = make_loader(dev_data, cfg.train.batch_size, shuffle=False)
    optimizer = _optimizer(cfg.train.optim, model.parameters(), cfg.train.lr)
    total_steps = cfg.train.num_epochs * len(train_loader)
    schedule = WarmupThenPlateau(
        optimizer, warmup_steps=math.ceil(cfg.train.warmup_percent * total_steps), patience=cfg.train.when
    )

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)
    best: dict = {"loss": math.inf}
    epoch_rows = []
    step = 0
    for epoch in range(1, cfg.train.num_epochs + 1):
        started = time.perf_counter()
        model.train()
        losses = []
        bar = tqdm(train_loader, desc=f"{cfg.name} epoch {epoch}/{cfg.train.num_epochs}", disable=not progress, leave=False)
        for batch in bar:
            loss = _train_step(model, batch, optimizer, cfg, device)
            schedule.step_batch()
            losses.append(loss)
            step += 1
            if step % cfg.train.logging_steps == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-cfg.train.logging_steps:]):.4f}")
        dev = evaluate_loss_and_metrics(model, dev_loader, device, cfg.labels)
        schedule.step_epoch(dev["loss"])
        improved = dev["loss"] < best["loss"]
        if improved:
            best = {**dev, "epoch": epoch}
            save_weights(run_dir, model)
        epoch_rows.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "dev_loss": dev["loss"],
                "dev_accuracy": dev["accuracy"],
                "dev_macro_f1": dev["macro_f1"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - started,
            }
        )
        write_csv_rows(run_dir / EPOCH_LOG, epoch_rows)
        if progress:
            row = epoch_rows[-1]
            tqdm.write(
                f"{cfg.name} epoch {epoch:3d}  train loss {row['train_loss']:.4f}  dev loss {dev['loss']:.4f}  "
                f"acc {dev['accuracy']:.4f}  macro-F1 {dev['macro_f1']:.4f}  {row['seconds']:.1f}s"
                + ("  *best" if improved else "")
            )

    summary = {
        "name": cfg.name,
        "run_dir": str(run_dir),
        "best_epoch": best["epoch"],
        "dev_loss": best["loss"],
        "dev_accuracy": best["accuracy"],
        "dev_macro_f1": best["macro_f1"],
    }
    if results_csv is not None:
        _append_result(Path(results_csv), cfg, summary)
    return summary


def _train_step(model: nn.Module, batch: dict, optimizer, cfg: RunConfig, device: torch.device) -> float:
    """One optimizer step; with batch_chunk > 1 the batch is processed in chunks to save memory."""
    optimizer.zero_grad(set_to_none=True)
    n = len(batch["labels"])
    chunks = max(1, min(cfg.train.batch_chunk, n))
    total = 0.0
    for index in torch.arange(n).chunk(chunks):
        chunk = {k: (None if v is None else v[index]) for k, v in batch.items()}
        loss = F.cross_entropy(_forward(model, chunk, device), chunk["labels"].to(device))
        (loss * len(index) / n).backward()
        total += loss.item() * len(index) / n
    if cfg.train.clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip)
    optimizer.step()
    return total


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    optimizer_class = getattr(torch.optim, name, None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise ValueError(f"unknown optimizer {name!r}: use a torch.optim class name such as Adam, AdamW or SGD")
    return optimizer_class(params, lr=lr)


def _append_result(path: Path, cfg: RunConfig, summary: dict) -> None:
    """One row per run across runs: hyper-parameters and best dev figures."""
    row = {**summary, "data_path": cfg.data_path}
    for section in ("audio", "text", "model", "train"):
        row.update(cfg.to_dict()[section])
    new = pd.DataFrame([row])
    table = pd.concat([pd.read_csv(path), new], ignore_index=True) if path.exists() else new
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
