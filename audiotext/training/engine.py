"""The one training engine under every model here: the audio, text and cross-modal classifiers, the
fine-tuned text classifier and masked-LM pre-training all train through `Engine.fit`.

A task supplies its model, its optimizer, its batches (dicts of tensors, batch first), its loss and,
when it has a dev set, its dev metrics. The engine owns everything else: seeding and the device,
the epoch and step loop, warm-up and the learning-rate schedule, gradient clipping, splitting a
batch into chunks, progress bars and log lines, the epoch CSV, dev evaluation every epoch, the
best epoch by a named metric, stopping early when it no longer improves, and resumable checkpoints
(see `fit`). Multi-process training and mixed precision belong here, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audiotext.errors import TrainingInterrupted
from audiotext.io import write_csv_rows
from audiotext.runtime import seed_everything, select_device
from audiotext.training.schedule import WarmupThenLinearDecay, WarmupThenPlateau
from audiotext.training.state import TrainingStateError, load_state, save_state

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
    checkpoint_steps: int = 0  # steps between resumable checkpoints within an epoch; 0: at the end of each epoch only

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
        if self.checkpoint_steps < 0:
            raise ValueError(f"checkpoint_steps must be 0 (each epoch) or a number of steps, got {self.checkpoint_steps}")
        if self.logging_steps < 1 or self.batch_chunk < 1:
            raise ValueError(f"logging_steps and batch_chunk must be at least 1, got {self.logging_steps}, {self.batch_chunk}")


@dataclass
class FitResult:
    best: dict  # dev metrics of the best epoch, with its "epoch"; {} without a dev set
    rows: list[dict] = field(default_factory=list)  # one per epoch, as in the epoch CSV


@dataclass
class _Progress:
    """Where a fit is: what a checkpoint holds besides the model, optimizer and schedule."""

    epoch: int  # the epoch in progress, from 1
    step: int  # its batches already trained on
    losses: list[float]  # their losses
    result: FitResult
    best_state: dict[str, torch.Tensor]  # CPU copy of the best epoch's weights (restore_best)
    data_order: torch.Tensor | None = None  # the batch-order generator's state when the epoch began
    rng: dict | None = None  # the global generators' states at the checkpoint


def _rng_states() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _where(checkpoint: Path, epoch: int, step: int, batches: int) -> str:
    return f"stopped at epoch {epoch}, step {step} of {batches}; the training state is saved in {checkpoint}"


@contextlib.contextmanager
def _deferred_interrupt(enabled: bool) -> Iterator[Callable[[], bool]]:
    """Yields whether Ctrl-C was pressed. The first press only sets that flag, so the loop can
    finish its step and save a whole state; a second press interrupts at once."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed: list[bool] = []
    previous = signal.getsignal(signal.SIGINT)

    def note(signum, frame) -> None:
        pressed.append(True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, note)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


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
        checkpoint: Path | None = None,
        data_order: torch.Generator | None = None,
    ) -> FitResult:
        """Trains `model` (already on `self.device`) for the set number of epochs.

        `batches` is iterated once per epoch; `loss(model, batch)` gets the batch on the device.
        `evaluate(model)` returns dev metrics with at least "loss" (and "macro_f1" when
        best_by says so); `on_best` runs whenever the dev metric improves, `on_epoch` after each
        epoch with its row; `epoch_log` is rewritten every epoch; `restore_best` loads the best
        epoch's weights back at the end (kept as a CPU copy meanwhile).

        With `checkpoint`, the whole training state is written there after every epoch (and every
        `checkpoint_steps` steps), and training continues from it when the file exists: the same
        steps, batches and random draws as without the break. `data_order` is the generator that
        orders each epoch's batches (the loader's). Ctrl-C then saves the state after the step in
        progress and raises TrainingInterrupted.
        """
        s = self.settings
        total_steps = s.epochs * len(batches)
        warmup = math.ceil(s.warmup_percent * total_steps)
        schedule = (
            WarmupThenPlateau(optimizer, warmup, patience=s.patience)
            if s.schedule == "plateau"
            else WarmupThenLinearDecay(optimizer, warmup, total_steps)
        )
        progress = _Progress(epoch=1, step=0, losses=[], result=FitResult(best={}), best_state={})
        resumed = checkpoint is not None and checkpoint.is_file()
        if resumed:
            progress = self._resume(checkpoint, model, optimizer, schedule, data_order, len(batches))
        result = progress.result
        with _deferred_interrupt(enabled=checkpoint is not None) as interrupted:
            for epoch in range(progress.epoch, s.epochs + 1):
                if self._stops_early(result, epoch - 1):
                    break
                started = time.perf_counter()
                model.train()
                if data_order is not None and not resumed:
                    progress.data_order = data_order.get_state()
                # A loader draws from the global generator whenever an iterator over it is made (tqdm.auto
                # makes one when the bar is made, the loop another), so a resumed epoch restores the
                # saved states where the broken run saved them: before both when it broke between
                # epochs, after them (and the batches it had done) when it broke within one.
                if resumed and progress.step == 0:
                    _set_rng_states(progress.rng)
                bar = tqdm(batches, total=len(batches), desc=f"{s.name} epoch {epoch}/{s.epochs}", leave=False,
                           disable=not s.progress)  # fmt: skip
                steps = iter(bar)
                for _ in range(progress.step):  # the batches a resumed epoch had already trained on
                    next(steps)
                if resumed and progress.step > 0:
                    _set_rng_states(progress.rng)
                resumed = False
                for batch in steps:
                    progress.losses.append(self._step(model, optimizer, batch, loss))
                    schedule.step_batch()
                    progress.step += 1
                    if len(progress.losses) % s.logging_steps == 0:
                        bar.set_postfix(loss=f"{np.mean(progress.losses[-s.logging_steps:]):.4f}")
                    due = s.checkpoint_steps and progress.step % s.checkpoint_steps == 0 and progress.step < len(batches)
                    if checkpoint is not None and (due or interrupted()):
                        self._save(checkpoint, progress, model, optimizer, schedule, epoch, len(batches))
                    if interrupted():
                        raise TrainingInterrupted(_where(checkpoint, epoch, progress.step, len(batches)))
                bar.close()
                row: dict = {"epoch": epoch, "train_loss": float(np.mean(progress.losses))}
                improved = False
                if evaluate is not None:
                    dev = evaluate(model)
                    schedule.step_epoch(dev["loss"])
                    improved = self._improves(dev, result.best)
                    if improved:
                        result.best = {**dev, "epoch": epoch}
                        if restore_best:
                            progress.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
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
                progress.step, progress.losses = 0, []
                if data_order is not None:
                    progress.data_order = data_order.get_state()  # the next epoch's order starts here
                if checkpoint is not None:
                    self._save(checkpoint, progress, model, optimizer, schedule, epoch + 1, len(batches))
                if interrupted():
                    raise TrainingInterrupted(_where(checkpoint, epoch + 1, 0, len(batches)))
        if restore_best and progress.best_state:
            model.load_state_dict(progress.best_state)
        return result

    def _stops_early(self, result: FitResult, epochs_done: int) -> bool:
        s = self.settings
        if not (s.stop_after and result.best and epochs_done - result.best["epoch"] >= s.stop_after):
            return False
        if s.progress:
            tqdm.write(f"{s.name}: no better dev {s.best_by} for {s.stop_after} epochs, stopping early")
        return True

    def _save(self, path: Path, progress: _Progress, model, optimizer, schedule, epoch: int, batches: int) -> None:
        save_state(path, {
            "settings": self._resumable_settings(), "batches_per_epoch": batches, "epoch": epoch, "step": progress.step,
            "losses": progress.losses, "best": progress.result.best, "rows": progress.result.rows,
            "model": model.state_dict(), "best_state": progress.best_state, "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "data_order": progress.data_order, "rng": _rng_states(),
        })  # fmt: skip

    def _resume(self, path: Path, model, optimizer, schedule, data_order, batches: int) -> _Progress:
        state = load_state(path)
        if state["settings"] != self._resumable_settings():
            changed = sorted(k for k, v in self._resumable_settings().items() if state["settings"].get(k) != v)
            raise TrainingStateError(f"{path}: saved with other training settings ({', '.join(changed)} differ)")
        if state["batches_per_epoch"] != batches:
            raise TrainingStateError(f"{path}: saved with {state['batches_per_epoch']} batches per epoch, the data "
                                     f"now gives {batches}: the training data changed")  # fmt: skip
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if data_order is not None and state["data_order"] is not None:
            data_order.set_state(state["data_order"])
        if self.settings.progress:
            tqdm.write(f"{self.settings.name}: resuming from {path} at epoch {state['epoch']}, step {state['step']}")
        return _Progress(epoch=state["epoch"], step=state["step"], losses=state["losses"],
                         result=FitResult(best=state["best"], rows=state["rows"]), best_state=state["best_state"],
                         data_order=state["data_order"], rng=state["rng"])  # fmt: skip

    def _resumable_settings(self) -> dict:
        """The settings a resumed fit must share with the one that saved the state (not how it reports)."""
        settings = dataclasses.asdict(self.settings)
        for key in ("name", "progress", "logging_steps", "no_cuda", "checkpoint_steps"):
            settings.pop(key)
        return settings

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
