"""The one training engine under every model here: the audio, text and cross-modal classifiers, the
fine-tuned text classifier and masked-LM pre-training all train through `Engine.fit`.

A task supplies its model, its optimizer, its batches (dicts of tensors, batch first), its loss and,
when it has a dev set, its dev metrics. The engine owns everything else: seeding and the device,
the epoch and step loop, warm-up and the learning-rate schedule, gradient clipping, splitting a
batch into chunks, progress bars and log lines, the epoch CSV, dev evaluation every epoch, the
best epoch by a named metric and stopping early when it no longer improves. Resume, multi-process training and mixed precision belong here, once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sized

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audiotext.io import write_csv_rows
from audiotext.runtime import seed_everything, select_device
from audiotext.training.schedule import WarmupThenLinearDecay, WarmupThenPlateau

Batch = dict[str, "torch.Tensor | None"]
SCHEDULES = ("plateau", "linear")
BEST_BY = ("loss", "macro_f1")


@dataclass(frozen=True)
class EngineSettings:
    name: str  # shown in progress bars and log lines
    epochs: int
    seed: int
    clip: float = 0.0  # gradient-norm clipping; 0 turns it off
    warmup_percent: float = 0.1  # of all optimizer steps
    schedule: str = "plateau"  # "plateau" (then ReduceLROnPlateau on dev loss) or "linear" (then decay to 0)
    patience: int = 20  # epochs without a lower dev loss before "plateau" decays the rate
    best_by: str = "loss"  # lowest dev "loss", or highest dev "macro_f1" (ties: lower loss)
    stop_after: int = 0  # epochs without a better best_by before training stops; 0: every epoch
    logging_steps: int = 1  # steps between updates of the progress bar's running loss
    batch_chunk: int = 1  # chunks a batch is split into (same gradient, less memory)
    no_cuda: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.best_by not in BEST_BY:
            raise ValueError(f"best_by must be one of {BEST_BY}, got {self.best_by!r}")
        if not 0 <= self.warmup_percent <= 1:
            raise ValueError(f"warmup_percent must be in [0, 1], got {self.warmup_percent}")
        if self.stop_after < 0:
            raise ValueError(f"stop_after must be 0 (off) or a number of epochs, got {self.stop_after}")
        if self.logging_steps < 1 or self.batch_chunk < 1:
            raise ValueError(f"logging_steps and batch_chunk must be at least 1, got {self.logging_steps}, {self.batch_chunk}")


@dataclass
class FitResult:
    best: dict  # dev metrics of the best epoch, with its "epoch"; {} without a dev set
    rows: list[dict] = field(default_factory=list)  # one per epoch, as in the epoch CSV


class Engine:
    """Seeds every generator and picks the device when made, so a task builds its model after it."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        seed_everything(settings.seed)
        self.device = select_device(settings.no_cuda)

    def fit(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Iterable[Batch] | Sized,
        loss: Callable[[nn.Module, Batch], torch.Tensor],
        evaluate: Callable[[nn.Module], dict] | None = None,
        on_best: Callable[[nn.Module], None] | None = None,
        on_epoch: Callable[[int, dict], None] | None = None,
        epoch_log: Path | None = None,
        restore_best: bool = False,
    ) -> FitResult:
        """Trains `model` (already on `self.device`) for the set number of epochs.

        `batches` is iterated once per epoch; `loss(model, batch)` gets the batch on the device.
        `evaluate(model)` returns dev metrics with at least "loss" (and "macro_f1" when
        best_by says so); `on_best` runs whenever the dev metric improves, `on_epoch` after each
        epoch with its row; `epoch_log` is rewritten every epoch; `restore_best` loads the best
        epoch's weights back at the end (kept as a CPU copy meanwhile).
        """
        s = self.settings
        total_steps = s.epochs * len(batches)
        warmup = math.ceil(s.warmup_percent * total_steps)
        schedule = (
            WarmupThenPlateau(optimizer, warmup, patience=s.patience)
            if s.schedule == "plateau"
            else WarmupThenLinearDecay(optimizer, warmup, total_steps)
        )
        result = FitResult(best={})
        best_state: dict[str, torch.Tensor] = {}
        for epoch in range(1, s.epochs + 1):
            started = time.perf_counter()
            model.train()
            losses: list[float] = []
            bar = tqdm(batches, total=len(batches), desc=f"{s.name} epoch {epoch}/{s.epochs}", leave=False,
                       disable=not s.progress)  # fmt: skip
            for batch in bar:
                losses.append(self._step(model, optimizer, batch, loss))
                schedule.step_batch()
                if len(losses) % s.logging_steps == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-s.logging_steps:]):.4f}")
            row: dict = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            improved = False
            if evaluate is not None:
                dev = evaluate(model)
                schedule.step_epoch(dev["loss"])
                improved = self._improves(dev, result.best)
                if improved:
                    result.best = {**dev, "epoch": epoch}
                    if restore_best:
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    if on_best is not None:
                        on_best(model)
                row.update(dev_loss=dev["loss"], dev_accuracy=dev.get("accuracy"), dev_macro_f1=dev.get("macro_f1"))
            else:
                schedule.step_epoch(None)
            row.update(lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - started)
            result.rows.append(row)
            if epoch_log is not None:
                write_csv_rows(epoch_log, result.rows)
            if on_epoch is not None:
                on_epoch(epoch, row)
            if s.progress:
                tqdm.write(self._log_line(row, improved))
            if s.stop_after and result.best and epoch - result.best["epoch"] >= s.stop_after:
                if s.progress:
                    tqdm.write(f"{s.name}: no better dev {s.best_by} for {s.stop_after} epochs, stopping early")
                break
        if restore_best and best_state:
            model.load_state_dict(best_state)
        return result

    def _step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, loss) -> float:
        """One optimizer step; with batch_chunk > 1 the batch is processed in chunks to save memory."""
        optimizer.zero_grad(set_to_none=True)
        n = len(next(v for v in batch.values() if v is not None))
        chunks = max(1, min(self.settings.batch_chunk, n))
        total = 0.0
        for index in torch.arange(n).chunk(chunks):
            part = batch if chunks == 1 else {k: None if v is None else v[index] for k, v in batch.items()}
            part = {k: None if v is None else v.to(self.device) for k, v in part.items()}
            value = loss(model, part)
            (value * len(index) / n).backward()
            total += value.item() * len(index) / n
        if self.settings.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), self.settings.clip)
        optimizer.step()
        return total

    def _improves(self, dev: dict, best: dict) -> bool:
        if not best:
            return True
        if self.settings.best_by == "loss":
            return dev["loss"] < best["loss"]
        return (dev["macro_f1"], -dev["loss"]) > (best["macro_f1"], -best["loss"])

    def _log_line(self, row: dict, improved: bool) -> str:
        line = f"{self.settings.name} epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f}"
        if "dev_loss" in row:
            line += f"  dev loss {row['dev_loss']:.4f}"
            if row["dev_accuracy"] is not None:
                line += f"  acc {row['dev_accuracy']:.4f}  macro-F1 {row['dev_macro_f1']:.4f}"
        return line + f"  {row['seconds']:.1f}s" + ("  *best" if improved else "")
