"""Training the audio-only, text-only and cross-modal classifiers on the engine: `train(cfg, run_dir)
-> metrics`, the best-on-dev weights kept in the run directory."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from audiotext.config import RunConfig
from audiotext.data.loading import batch_order, fit_char_ngrams, load_encoded, make_loader, reads_ngrams, text_encoder_for
from audiotext.errors import SettingError
from audiotext.evaluation.metrics import evaluate_loss_and_metrics
from audiotext.evaluation.report import write_run_report
from audiotext.features.cache import FeatureCache
from audiotext.features.ngrams import NGRAMS_FILE
from audiotext.features.text import TextEncoder
from audiotext.inference.predict import forward
from audiotext.io import atomic_path, first_difference
from audiotext.models.checkpoint import EPOCH_LOG, RESUME_FILE, save_config, save_weights
from audiotext.models.classifiers import Dims, OnStreams, build_model
from audiotext.runtime import everyones, join_processes, on_main, processes, wait_for_all
from audiotext.training.engine import Engine, EngineSettings
from audiotext.training.run_folder import claimed_run_folder, finish_run_folder, without_resumable_changes


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    results_csv: str | Path | None = None,
    cache: FeatureCache | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    data_name: str | None = None,
) -> dict:
    """Trains the model cfg describes; returns the best dev metrics and where the run was saved.

    Features come from `cache` where it has them (None: computed in memory). `cfg` is not changed.
    An existing run in `run_dir` is continued with `resume` or replaced with `overwrite` (see
    `claim_run_folder`), never mixed with this one. The run is resumable from its last checkpoint
    (every epoch, and every `cfg.train.checkpoint_steps` steps) until finished.json marks it done.
    The run's row in `results_csv` records `data_name` (the reference's --data_name) when given.
    """
    run_dir = Path(run_dir)
    # Stored absolute, so the run tests from any folder.
    cfg = dataclasses.replace(cfg, data_path=str(Path(cfg.data_path).resolve()))
    optimizer_class = _optimizer_class(cfg.train.optim)  # a bad name is refused before any feature is computed
    # Under torchrun every process trains; the main one alone claims and writes the run folder.
    main = join_processes(cfg.train.no_cuda).is_main
    settings = without_resumable_changes(cfg.to_dict())
    _require_same_in_every_process({"settings": settings, "resume": resume, "overwrite": overwrite}, "settings")
    with contextlib.ExitStack() as writing:
        # Held until the run is finished (or stops): a second training into the folder is refused.
        folder = on_main(lambda: writing.enter_context(claimed_run_folder(run_dir, cfg, resume, overwrite)))
        return _train_in(folder, cfg, settings, run_dir, main, optimizer_class, results_csv, cache, progress, data_name)


def _train_in(folder: Path, cfg: RunConfig, settings: dict, run_dir: Path, main: bool, optimizer_class,
              results_csv: Path | None, cache: FeatureCache | None, progress: bool, data_name: str | None) -> dict:  # fmt: skip
    engine = Engine(
        EngineSettings(
            name=cfg.name, epochs=cfg.train.num_epochs, seed=cfg.train.seed, clip=cfg.train.clip,
            warmup_percent=cfg.train.warmup_percent, schedule="plateau", patience=cfg.train.when,
            best_by=cfg.train.select_by, stop_after=cfg.train.early_stop,
            logging_steps=cfg.train.logging_steps, batch_chunk=cfg.train.batch_chunk, no_cuda=cfg.train.no_cuda,
            progress=progress, checkpoint_steps=cfg.train.checkpoint_steps, amp=cfg.train.amp,
            ema=cfg.train.ema,
        )  # fmt: skip
    )
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        if reads_ngrams(cfg) and not (folder / NGRAMS_FILE).is_file():  # a resumed run keeps its own
            fit_char_ngrams(cfg, folder)
    wait_for_all()
    text_encoder = text_encoder_for(cfg, engine.device, folder)
    if isinstance(text_encoder, TextEncoder) and cfg.text.hidden_size not in (None, text_encoder.hidden_size):
        raise ValueError(
            f"hidden size {cfg.text.hidden_size} was asked for, but the encoder "
            f"{cfg.text.encoder or 'MiniLM (default)'} is {text_encoder.hidden_size} wide"
        )
    dims = Dims.of(cfg, text_encoder.hidden_size if text_encoder is not None else None)

    # With a feature cache the main process fills it first, and the others read what it wrote.
    if cache is not None and not main:
        wait_for_all()
    train_data = load_encoded(cfg, "train", text_encoder, cache, progress and main, cfg.train.transcript_noise)
    dev_data = load_encoded(cfg, "dev", text_encoder, cache, progress and main)
    if cache is not None and main:
        wait_for_all()
    # The same path may hold another corpus on another machine of the job.
    _require_same_in_every_process([data.fingerprint(values=False) for data in (train_data, dev_data)],
                                  "training and dev data")  # fmt: skip
    model = build_model(cfg.model, dims)
    if train_data.audio is not None:
        model.audio_norm.set(*train_data.audio.mean_std())
    model.to(engine.device)

    train_loader = make_loader(train_data, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                               length_buckets=cfg.train.length_buckets, num_workers=cfg.train.num_workers)  # fmt: skip
    dev_loader = make_loader(dev_data, cfg.train.batch_size, shuffle=False)
    if main:
        save_config(folder, cfg, dims)
    weights = _class_weights(train_data.labels, len(cfg.labels)) if cfg.train.class_weights else None  # (C,), CPU
    class_weights = None if weights is None else weights.to(engine.device)
    fit = engine.fit(
        model,
        optimizer_class(_parameter_groups(model, cfg.train.lr), lr=cfg.train.lr),
        train_loader,
        loss=lambda m, batch: F.cross_entropy(forward(m, batch, engine.device), batch["labels"], weight=class_weights),
        row_weights=None if weights is None else lambda batch: weights[batch["labels"]],  # batches are still on the CPU
        evaluate=lambda m: evaluate_loss_and_metrics(m, dev_loader, engine.device, cfg.labels),
        on_best=lambda m: save_weights(folder, m, cfg, dims),
        # Kept in the checkpoint, so that a resume saves the best epoch's weights again over a later
        # epoch's that a kill left saved before its state was.
        restore_best=True,
        epoch_log=folder / EPOCH_LOG,
        checkpoint=folder / RESUME_FILE,
        data_order=batch_order(train_loader),
        # dev too: the best epoch is chosen across every epoch's dev figures, which must be of one dev set.
        data_digest=f"train {train_data.fingerprint()}, dev {dev_data.fingerprint()}",
        run_settings=settings,
    )
    best = fit.best
    summary = {
        "name": cfg.name,
        "run_dir": str(run_dir),
        "best_epoch": best["epoch"],
        "dev_loss": best["loss"],
        "dev_accuracy": best["accuracy"],
        "dev_macro_f1": best["macro_f1"],
        "epochs": len(fit.rows),
    }
    if main:
        # Figures that `test --best_so_far` took of the unfinished model are not the finished run's.
        shutil.rmtree(folder / "eval", ignore_errors=True)
        write_run_report(folder)
        finish_run_folder(folder, run_dir, summary)
        if results_csv is not None:
            _append_result(Path(results_csv), cfg, summary, data_name)
    return summary


def _require_same_in_every_process(value: object, what: str) -> None:
    """Refuses a job whose processes hold different `value`s (JSON values): started with another
    command, or reading another corpus at the same path, on another machine. Unchecked, they train
    copies of the model that drift apart (or wait for each other for ever), with no error."""
    everyone = everyones(value)
    other = next((rank for rank, theirs in enumerate(everyone) if theirs != everyone[0]), None)
    if other is not None:
        error = SettingError(f"process {other} of this job was started with other {what} than process 0: "
                             f"{first_difference(everyone[0], everyone[other]).removeprefix(' = ')} ('now': process "
                             f"{other}'s); start every process with the same command and data")  # fmt: skip
        error.replicated = not processes().is_main  # every process raises it; the main one reports it
        raise error


def _class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C,) N / (C × clips of the class): each class weighs as much in the loss as a balanced corpus's."""
    counts = torch.bincount(labels, minlength=n_classes).float()
    return len(labels) / (n_classes * counts.clamp(min=1))


# The wide path of a wide-and-deep model is the linear baseline, which converges at ten times the
# deep models' rate (0.01 against 1e-3) in as many epochs; at the deep rate it would barely move.
WIDE_LR_SCALE = 10.0


def _parameter_groups(model: nn.Module, lr: float) -> list[dict]:
    if not isinstance(model, OnStreams) or model.wide is None:
        return [{"params": list(model.parameters())}]
    wide = set(model.wide.parameters())
    return [{"params": [p for p in model.parameters() if p not in wide]},
            {"params": list(wide), "lr": lr * WIDE_LR_SCALE}]  # fmt: skip


# torch.optim classes the engine's plain `step()` on dense gradients cannot drive.
UNSUPPORTED_OPTIMIZERS = {"LBFGS": "its step needs a closure", "SparseAdam": "it takes sparse gradients only"}


def _optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    optimizer_class = getattr(torch.optim, name, None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise SettingError(f"optim = {name!r}: not a torch.optim optimizer; use a class name such as Adam, AdamW or SGD")
    if name in UNSUPPORTED_OPTIMIZERS:
        raise SettingError(f"optim = {name!r}: not supported ({UNSUPPORTED_OPTIMIZERS[name]}); use Adam, AdamW or SGD")
    return optimizer_class


def _append_result(path: Path, cfg: RunConfig, summary: dict, data_name: str | None = None) -> None:
    """One row per run across runs: hyper-parameters and best dev figures. A run replaced in its
    folder (--overwrite) replaces its row: the old figures are of weights no longer there."""
    row = {**summary, **({"data_name": data_name} if data_name is not None else {}), "data_path": cfg.data_path}
    for section in ("audio", "text", "model", "train"):
        # The audio and text settings both have `features`: named as their flags, or the text's hid the audio's.
        row.update({f"{section}_{k}" if k == "features" else k: v for k, v in cfg.to_dict()[section].items()})
    new = pd.DataFrame([row])
    table = new
    if path.exists():
        earlier = pd.read_csv(path)
        kept = earlier[earlier["run_dir"] != summary["run_dir"]] if "run_dir" in earlier.columns else earlier
        if len(kept):
            table = pd.concat([kept, new], ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
