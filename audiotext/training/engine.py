"""The one training engine under every model here: the audio, text and cross-modal classifiers, the
fine-tuned text classifier and masked-LM pre-training all train through `Engine.fit`.

A task supplies its model, its optimizer, its batches (dicts of tensors, batch first), its loss and,
when it has a dev set, its dev metrics. The engine owns everything else: seeding and the device,
the epoch and step loop, warm-up and the learning-rate schedule, gradient clipping, splitting a
batch into chunks, progress bars and log lines, the epoch CSV, dev evaluation every epoch, the
best epoch by a named metric, stopping early when it no longer improves, and resumable checkpoints
(see `fit`), mixed precision, and training in several processes (see `Engine`).
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
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from audiotext.errors import DataError, SettingError, TrainingDiverged, TrainingInterrupted
from audiotext.io import first_difference, write_csv_rows
from audiotext.runtime import (
    as_on_main,
    gathered_in_order,
    is_lost_process,
    join_processes,
    process_lost,
    seed_everything,
    select_device,
    summed,
)
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
    amp: bool = False  # mixed precision on a GPU: bf16 where it has it, else fp16 with a gradient scaler
    ema: float = 0.0  # decay per step of a moving average of the weights, which dev evaluates and the fit keeps; 0: off

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
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1) (0 turns it off), got {self.ema}")
        if self.logging_steps < 1 or self.batch_chunk < 1:
            raise ValueError(f"logging_steps and batch_chunk must be at least 1, got {self.logging_steps}, {self.batch_chunk}")


def check_job_settings(epochs: int, batch_size: int, lr: float) -> None:
    """ValueError for settings no training job runs with, checked before the job claims a folder
    (a rate of -1 was refused by the optimizer, a stopped job's folder already made)."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs}, {batch_size}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr}")


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
    average: dict[str, torch.Tensor]  # the moving average of the floating-point weights (ema); {} when off
    data_order: torch.Tensor | None = None  # the batch-order generator's state when the epoch began
    rng: dict | None = None  # the global generators' states at the checkpoint
    seconds: float = 0.0  # how long the epoch in progress had trained when the checkpoint was saved


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


def _floating_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def _update_average(average: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    current = model.state_dict()
    with torch.no_grad():
        for name, mean in average.items():
            mean.lerp_(current[name], 1.0 - decay)


@contextlib.contextmanager
def _weights(model: nn.Module, average: dict[str, torch.Tensor]) -> Iterator[None]:
    """The model holds the moving average of its weights inside the block (when there is one), and
    its trained weights again after it, so training goes on from where the optimizer left it."""
    if not average:
        yield
        return
    trained = _floating_copy(model)
    model.load_state_dict(average, strict=False)
    try:
        yield
    finally:
        model.load_state_dict(trained, strict=False)


def _where(checkpoint: Path, epoch: int, step: int, batches: int) -> str:
    return f"stopped at epoch {epoch}, step {step} of {batches}; the training state is saved in {checkpoint}"


# SIGTERM is how torchrun stops the other processes of a job, and how batch schedulers preempt one.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _deferred_interrupt(enabled: bool, second_stops: bool = True) -> Iterator[Callable[[], bool]]:
    """Yields whether Ctrl-C (or SIGTERM) came. The first only sets that flag, so the loop can
    finish its step and save a whole state; a second stops at once when `second_stops` (not under
    torchrun, which passes Ctrl-C on to processes that got it already, and kills them itself after
    a grace period)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed: list[bool] = []
    previous = {number: signal.getsignal(number) for number in _STOP_SIGNALS}

    def note(signum, frame) -> None:
        pressed.append(True)
        if second_stops:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    for number in _STOP_SIGNALS:
        signal.signal(number, note)
    try:
        yield lambda: bool(pressed)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


class Engine:
    """Seeds every generator and picks the device when made, so a task builds its model after it.

    Under torchrun (`torchrun --nproc_per_node N -m audiotext ...`) the engine joins the job and
    trains with DistributedDataParallel: every process reads each whole batch and trains on its
    share of the rows (r, r + N, ...), weighted so that the averaged gradient is the whole batch's
    mean, as in one process. All act on the main process's (rank 0) dev figures (which `predict`
    gathers from all), and it alone writes files and prints. A task's callbacks that write (`on_best`, `on_epoch`, the epoch log,
    the checkpoint) therefore run in the main process only.
    """

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.processes = join_processes(settings.no_cuda)
        seed_everything(settings.seed)
        self.device = select_device(settings.no_cuda)
        self.amp_dtype: torch.dtype | None = None
        if settings.amp:
            if self.device.type != "cuda":
                why = "--no_cuda was given" if settings.no_cuda else "this machine has none"
                raise SettingError(f"amp = True: mixed precision needs a CUDA GPU ({why}); on a CPU it would "
                                   "only be slower, so train without --amp")  # fmt: skip
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def fit(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Iterable[Batch] | Sized,
        loss: Callable[[nn.Module, Batch], torch.Tensor],
        evaluate: Callable[[nn.Module], dict] | None = None,
        row_weights: Callable[[Batch], torch.Tensor] | None = None,
        data_digest: str = "",
        run_settings: dict | None = None,
        on_best: Callable[[nn.Module], None] | None = None,
        on_epoch: Callable[[list[dict]], None] | None = None,
        epoch_log: Path | None = None,
        restore_best: bool = False,
        checkpoint: Path | None = None,
        data_order: torch.Generator | None = None,
    ) -> FitResult:
        """Trains `model` (already on `self.device`) for the set number of epochs.

        `batches` is iterated once per epoch; `loss(model, batch)` gets the batch on the device.
        `row_weights(batch)` gives each row's (B,) weight in `loss` when it is not a plain mean over
        rows (a class-weighted loss, a loss over the masked tokens of each row), so that a batch split
        into chunks or across processes still gets the whole batch's gradient. `data_digest` names
        what the batches are made of (`EncodedSplit.fingerprint`), `run_settings` (JSON) what else
        the caller trains with (a run's config): a resume refuses a state saved with either other.
        `evaluate(model)` returns dev metrics with at least "loss" (and "macro_f1" when
        best_by says so); `on_best` runs whenever the dev metric improves, `on_epoch` after each
        epoch with the rows of every epoch so far (a resumed fit's earlier ones included); `epoch_log` is rewritten every epoch; `restore_best` loads the best
        epoch's weights back at the end (kept as a CPU copy meanwhile, and in the checkpoint: a
        resumed fit hands them to `on_best` again).

        With `checkpoint`, the whole training state is written there after every epoch (and every
        `checkpoint_steps` steps), and training continues from it when the file exists: the same
        steps, batches and random draws as without the break. `data_order` is the generator that
        orders each epoch's batches (the loader's). Ctrl-C or SIGTERM then saves the state after
        the step in progress and raises TrainingInterrupted.
        """
        try:
            return self._fit(model, optimizer, batches, loss, row_weights, evaluate, on_best, on_epoch, epoch_log,
                             restore_best, checkpoint, data_order, data_digest, run_settings)  # fmt: skip
        except RuntimeError as err:
            if not (self.processes.several and is_lost_process(err)):
                raise
            if checkpoint is None:
                saved = "nothing was saved"
            elif checkpoint.is_file():
                saved = f"the last checkpoint, {checkpoint}, resumes the job (--resume)"
            else:  # killed before the first checkpoint (on this machine: the main process writes it)
                saved = f"no checkpoint at {checkpoint} yet"
            raise process_lost(err, saved) from None

    def _fit(self, model, optimizer, batches, loss, row_weights, evaluate, on_best, on_epoch, epoch_log, restore_best,
             checkpoint, data_order, data_digest, run_settings) -> FitResult:  # fmt: skip
        s, main = self.settings, self.processes.is_main
        total_steps = s.epochs * len(batches)
        # What a resumed state must have trained on, and with.
        data = {"batches_per_epoch": len(batches), "digest": data_digest, "run": run_settings}
        warmup = math.ceil(s.warmup_percent * total_steps)
        schedule = (
            WarmupThenPlateau(optimizer, warmup, patience=s.patience)
            if s.schedule == "plateau"
            else WarmupThenLinearDecay(optimizer, warmup, total_steps)
        )
        # Only fp16 needs its gradients scaled: bf16 has float32's range.
        scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        trained = model
        if self.processes.several:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            trained = DistributedDataParallel(model, device_ids=device_ids)
        progress = _Progress(epoch=1, step=0, losses=[], result=FitResult(best={}), best_state={},
                             average=_floating_copy(model) if s.ema else {})  # fmt: skip
        resumed = as_on_main(checkpoint is not None and checkpoint.is_file())
        if resumed:
            progress = self._resume(checkpoint, model, optimizer, schedule, scaler, data_order, data)
        elif self.processes.several:
            # Each process draws its own dropout masks; the model was made alike in all (and DDP copies rank 0's).
            seed_everything(int(np.random.SeedSequence([s.seed, self.processes.rank]).generate_state(1)[0]))
        result = progress.result
        if resumed and restore_best and progress.best_state and on_best is not None and main:
            # Killed after `on_best` saved a better epoch but before that epoch's state was, the run
            # left that epoch's weights, which a resume that trains it otherwise (another number of
            # processes, another device) may not find better: the best epoch would name other weights.
            with _weights(model, progress.best_state):
                on_best(model)
        with _deferred_interrupt(enabled=checkpoint is not None, second_stops=not self.processes.several) as interrupted:
            for epoch in range(progress.epoch, s.epochs + 1):
                if self._stops_early(result, epoch - 1):
                    break
                started = time.perf_counter() - progress.seconds  # a resumed epoch counts its time before the break
                model.train()
                if data_order is not None and not resumed:
                    progress.data_order = data_order.get_state()
                # A loader draws from the global generator when an iterator over it is made, so a
                # resumed epoch restores the saved states where the broken run saved them: before the
                # iterator when it broke between epochs, after it (and the batches it had done) within one.
                if resumed and progress.step == 0:
                    _set_rng_states(progress.rng)
                # The bar is not handed the loader: tqdm.auto would make an iterator of its own, which
                # with worker processes starts drawing the epoch's batches, and the loop's then others.
                bar = tqdm(total=len(batches), initial=progress.step, desc=f"{s.name} epoch {epoch}/{s.epochs}",
                           leave=False, disable=not (s.progress and main))  # fmt: skip
                steps = iter(batches)
                for _ in range(progress.step):  # the batches a resumed epoch had already trained on
                    next(steps)
                if resumed and progress.step > 0:
                    _set_rng_states(progress.rng)
                resumed = False
                for batch in steps:
                    step_loss, stop = self._agree(self._step(trained, optimizer, batch, loss, row_weights, scaler), interrupted())
                    if step_loss is not None:  # a batch that weighed nothing took no step: as if it were not there
                        progress.losses.append(step_loss)
                        schedule.step_batch()
                        if progress.average:
                            _update_average(progress.average, model, s.ema)
                    progress.step += 1
                    bar.update()
                    if step_loss is not None and len(progress.losses) % s.logging_steps == 0:
                        bar.set_postfix(loss=f"{np.mean(progress.losses[-s.logging_steps:]):.4f}")
                    due = s.checkpoint_steps and progress.step % s.checkpoint_steps == 0 and progress.step < len(batches)
                    if checkpoint is not None and (due or stop):
                        progress.seconds = time.perf_counter() - started
                        self._save(checkpoint, progress, model, optimizer, schedule, scaler, epoch, data)
                    if stop:
                        raise self._interrupted(_where(checkpoint, epoch, progress.step, len(batches)))
                bar.close()
                if not progress.losses:  # a masked-LM corpus so small that no batch of the epoch had a token picked
                    raise DataError(f"{s.name}: no batch of epoch {epoch} had anything to train on (every row weighed "
                                    "0; masked-LM pre-training: no token was picked for masking): give more or longer "
                                    "sentences, or a higher --mlm_probability")  # fmt: skip
                row: dict = {"epoch": epoch, "train_loss": float(np.mean(progress.losses))}
                if not math.isfinite(row["train_loss"]):  # weights gone to NaN would be kept, and marked finished
                    raise TrainingDiverged(f"{s.name}: training diverged in epoch {epoch} (train loss "
                                           f"{row['train_loss']}): lower --lr, or clip the gradients (--clip)")  # fmt: skip
                improved = False
                if evaluate is not None:
                    with _weights(model, progress.average):
                        with self._autocast():
                            dev = as_on_main(evaluate(model))
                        schedule.step_epoch(dev["loss"])
                        improved = self._improves(dev, result.best)
                        if improved:
                            result.best = {**dev, "epoch": epoch}
                            if restore_best:
                                progress.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                            if on_best is not None and main:
                                on_best(model)
                    row.update(dev_loss=dev["loss"], dev_accuracy=dev.get("accuracy"), dev_macro_f1=dev.get("macro_f1"))
                else:
                    schedule.step_epoch(None)
                row.update(lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - started)
                result.rows.append(row)
                if main:
                    if epoch_log is not None:
                        write_csv_rows(epoch_log, result.rows)
                    if on_epoch is not None:
                        on_epoch(result.rows)
                    if s.progress:
                        tqdm.write(self._log_line(row, improved))
                progress.step, progress.losses, progress.seconds = 0, [], 0.0
                if data_order is not None:
                    progress.data_order = data_order.get_state()  # the next epoch's order starts here
                if checkpoint is not None:
                    self._save(checkpoint, progress, model, optimizer, schedule, scaler, epoch + 1, data)
                if self._agree(0.0, interrupted())[1]:
                    raise self._interrupted(_where(checkpoint, epoch + 1, 0, len(batches)))
        if progress.average:
            model.load_state_dict(progress.average, strict=False)
        if restore_best and progress.best_state:
            model.load_state_dict(progress.best_state)
        return result

    def _interrupted(self, where: str) -> TrainingInterrupted:
        stopped = TrainingInterrupted(where)
        stopped.replicated = not self.processes.is_main  # every process stops; the main one says so
        return stopped

    def _stops_early(self, result: FitResult, epochs_done: int) -> bool:
        s = self.settings
        if not (s.stop_after and result.best and epochs_done - result.best["epoch"] >= s.stop_after):
            return False
        if s.progress and self.processes.is_main:
            tqdm.write(f"{s.name}: no better dev {s.best_by} for {s.stop_after} epochs, stopping early")
        return True

    def _save(self, path: Path, progress: _Progress, model, optimizer, schedule, scaler, epoch: int, data: dict) -> None:
        rng = gathered_in_order([_rng_states()])  # one per process, by rank: every process takes part
        if not self.processes.is_main:
            return
        save_state(path, {
            "settings": self._resumable_settings(), "data": data, "epoch": epoch, "step": progress.step,
            "losses": progress.losses, "best": progress.result.best, "rows": progress.result.rows,
            "model": model.state_dict(), "best_state": progress.best_state, "average": progress.average,
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {},
            "data_order": progress.data_order, "rng": rng, "seconds": progress.seconds,
        })  # fmt: skip

    def _resume(self, path: Path, model, optimizer, schedule, scaler, data_order, data: dict) -> _Progress:
        state = load_state(path)
        if state["settings"] != self._resumable_settings():
            changed = sorted(k for k, v in self._resumable_settings().items() if state["settings"].get(k) != v)
            raise TrainingStateError(f"{path}: saved with other training settings ({', '.join(changed)} differ)")
        saved = state.get("data", {})
        # The run folder's config.json, edited since (the command line is checked against it), say. A
        # state saved before states recorded their settings is let through on that check alone.
        if "run" in saved and saved["run"] != data["run"]:
            raise TrainingStateError(f"{path}: saved by a run with {first_difference(saved['run'], data['run'])}: "
                                     "resume with the settings it was saved with, or start it again")  # fmt: skip
        if saved.get("batches_per_epoch") != data["batches_per_epoch"]:
            raise TrainingStateError(f"{path}: saved with {saved.get('batches_per_epoch')} batches per epoch, the data "
                                     f"now gives {data['batches_per_epoch']}: the training data changed")  # fmt: skip
        if saved.get("digest") != data["digest"]:
            raise TrainingStateError(f"{path}: saved on other training or dev data (other clips, labels or features in "
                                     "as many batches; or saved by an earlier audiotext, which recorded the training "
                                     "data only, or kept features without the cache as float32): resume on the data "
                                     "the run started with, or start it again")  # fmt: skip
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:  # a model of other shapes than the one that saved it
            raise TrainingStateError(f"{path}: saved from another model ({str(err).splitlines()[0]} ...)") from None
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        if data_order is not None and state["data_order"] is not None:
            data_order.set_state(state["data_order"])
        share, saved_by = self.processes, len(state["rng"])
        report = self.settings.progress and share.is_main
        if report:
            tqdm.write(f"{self.settings.name}: resuming from {path} at epoch {state['epoch']}, step {state['step']}")
        if saved_by != share.world_size and report:
            # The batches and the mean gradient do not depend on the number of processes; dropout's draws do.
            tqdm.write(f"{self.settings.name}: saved by {saved_by} process(es), resumed by {share.world_size}: "
                       "the same batches, other dropout draws than an unbroken run")  # fmt: skip
        return _Progress(epoch=state["epoch"], step=state["step"], losses=state["losses"],
                         result=FitResult(best=state["best"], rows=state["rows"]), best_state=state["best_state"],
                         average={k: v.to(self.device) for k, v in state["average"].items()}, data_order=state["data_order"],
                         rng=state["rng"][share.rank % saved_by], seconds=state.get("seconds", 0.0))  # fmt: skip

    def _resumable_settings(self) -> dict:
        """The settings a resumed fit must share with the one that saved the state (not how it reports)."""
        settings = dataclasses.asdict(self.settings)
        for key in ("name", "progress", "logging_steps", "no_cuda", "checkpoint_steps"):
            settings.pop(key)
        return settings

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, loss, row_weights,
              scaler) -> float | None:  # fmt: skip
        """One optimizer step on this process's rows of the batch (all of them in one process); with
        batch_chunk > 1 they go through in chunks to save memory. Returns this process's part of
        the batch's mean loss (the whole of it in one process); None, with no step, when no row of
        the batch weighs anything."""
        optimizer.zero_grad(set_to_none=True)
        n = len(next(v for v in batch.values() if v is not None))
        counts = torch.ones(n) if row_weights is None else row_weights(batch).double().cpu()  # (n,)
        share = self.processes
        mine = torch.arange(n)[share.rank :: share.world_size]
        # The rows' total weight, summed over the processes' shares: each process draws its own
        # masks for a masked-LM batch, so only the sum of theirs is the weight of what all train on.
        # Rows that all weigh 1 need no all-reduce for it.
        total_weight = float(counts.sum())
        if row_weights is not None and share.several:
            total_weight = float(summed(counts[mine].sum().reshape(1).to(self.device)))
        if not total_weight:  # nothing to learn from (a masked-LM batch in which no token was picked): no step
            return None
        # DDP averages the processes' gradients; weighting each row by world_size / (the batch's
        # total weight) makes that the batch's mean loss.
        weight = share.world_size / total_weight
        if len(mine) == 0:  # a batch with fewer rows than processes: this one still joins the all-reduce
            mine, weight = torch.arange(1), 0.0
        chunks = mine.chunk(min(self.settings.batch_chunk, len(mine)))
        total = 0.0
        for number, index in enumerate(chunks, 1):
            chunk_weight = float(counts[index].sum())  # the chunk's rows' share of the batch's mean
            rows = batch if len(index) == n else {k: None if v is None else v[index] for k, v in batch.items()}
            part = {k: None if v is None else v.to(self.device) for k, v in rows.items()}  # no copy of a whole batch
            last = number == len(chunks)
            # Gradients are all-reduced once, after the last chunk.
            sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    value = loss(model, part)
                scaled = value.float() * weight * chunk_weight
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if chunk_weight:  # a chunk of rows that weigh nothing has a loss of 0/0
                total += value.item() * weight * chunk_weight / share.world_size
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.settings.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), self.settings.clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return total

    def _agree(self, loss_part: float | None, stop: bool) -> tuple[float | None, bool]:
        """The batch's mean loss from each process's part, and whether any process was told to stop,
        so that all log the same loss and stop at the same step. A batch no process took a step on
        (every process agrees on that) has no loss."""
        if not self.processes.several:
            return loss_part, stop
        loss, stops = summed(torch.tensor([loss_part or 0.0, float(stop)], dtype=torch.float64, device=self.device)).tolist()
        return (None if loss_part is None else loss), stops > 0

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
