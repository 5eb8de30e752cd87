"""Which folder a training run may write, so that no run is mixed with another: a new run gets an
empty folder; a finished one is replaced only when asked, and then whole; an unfinished one is
continued only with the settings it started with.

Replacing trains in a staging folder beside the old run (`.NAME.overwrite`) and swaps it in when
training finishes, so until then the old run stays as it was, eval/ outputs included.

Text-encoder training (pre-training, fine-tuning), whose output is a Hugging Face folder written
whole at the end, keeps its resumable states in a folder beside it (`.NAME.training`, see
`claim_state_folder`) and removes it when done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Iterator

from audiotext.config import RunConfig
from audiotext.features.ngrams import NGRAMS_FILE
from audiotext.errors import SettingError
from audiotext.io import first_difference, holds_files, write_json
from audiotext.models.checkpoint import (
    CONFIG_FILE,
    FINISHED_FILE,
    RESUME_FILE,
    is_finished,
)

# Settings a resumed run may change: where it runs and how it reports, not what it computes.
RESUMABLE_CHANGES = {("train", "no_cuda"), ("train", "logging_steps"), ("train", "checkpoint_steps"),
                     ("train", "num_workers")}  # fmt: skip


JOB_FILE = "job.json"
WRITTEN_BEFORE_CONFIG = {NGRAMS_FILE}  # the character n-grams, fitted before the text features


def staging_folder(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.overwrite"


def claim_run_folder(run_dir: Path, cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """The folder to train `cfg` in: `run_dir`, or its staging folder when replacing a run.

    `resume` continues the unfinished run in either (refusing other settings), and starts afresh
    when there is none; `overwrite` starts again, replacing whatever run is there once finished.
    """
    if resume and overwrite:
        raise SettingError("--resume continues a run and --overwrite starts it again: give one of them")
    staging = staging_folder(run_dir)
    _finish_swap(run_dir, staging)
    for folder in (staging, run_dir):
        if _never_started(folder):
            shutil.rmtree(folder)
    if resume:
        for folder in (staging, run_dir):
            if (folder / CONFIG_FILE).is_file() and not is_finished(folder):
                require_same_settings(folder / CONFIG_FILE, cfg)
                return folder
        if is_finished(run_dir):
            raise FileExistsError(f"{run_dir}: this run already finished; nothing to resume (--overwrite trains it again)")
    if overwrite:
        shutil.rmtree(staging, ignore_errors=True)
        if holds_files(run_dir):
            if not (run_dir / CONFIG_FILE).is_file():
                raise FileExistsError(f"refusing to replace {run_dir}: it is not a run folder (no {CONFIG_FILE})")
            return staging
    elif holds_files(run_dir):
        if is_finished(run_dir):
            raise FileExistsError(f"{run_dir} holds a finished run: --overwrite replaces it, or choose another --name")
        if not (run_dir / CONFIG_FILE).is_file():  # with --resume too: there is nothing to continue
            raise FileExistsError(f"{run_dir} holds files but no run (no {CONFIG_FILE}): choose another --name, or empty it")
        raise FileExistsError(f"{run_dir} holds an unfinished run: --resume continues it, --overwrite starts it again")
    return run_dir


@contextlib.contextmanager
def claimed_run_folder(run_dir: Path, cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """`claim_run_folder`, held for the caller until it leaves the block: a second training into
    `run_dir` meanwhile is refused (both would have run, one's config.json beside the other's
    weights). The hold is an advisory lock on `.NAME.lock` beside the folder, which the system
    releases when the process ends, however it ends (the file is removed when the block ends; left
    by a killed process, it holds nothing)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = run_dir.parent / f".{run_dir.name}.lock"
    with _locked(lock, run_dir):
        for folder in (run_dir, staging_folder(run_dir)):
            _remove_leftover_temporaries(folder)
        try:
            yield claim_run_folder(run_dir, cfg, resume=resume, overwrite=overwrite)
        finally:
            lock.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(lock: Path, run_dir: Path) -> Iterator[None]:
    while True:
        with open(lock, "a+", encoding="utf-8") as held:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.seek(0)
                raise FileExistsError(f"{run_dir}: another training is writing this run now (process "
                                      f"{held.read().strip() or '?'}); wait for it to end, or train into another "
                                      "folder") from None  # fmt: skip
            except OSError as err:  # a file system without locks
                warnings.warn(f"{run_dir}: cannot hold it while training ({err}): a second training into it "
                              "would not be refused")  # fmt: skip
                yield
                return
            # Its holder may have removed the file between our open and our lock: then we hold a
            # lock on a file no one else can see, and must take the one at the path.
            try:
                current = os.stat(lock).st_ino == os.fstat(held.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                held.truncate(0)
                held.write(str(os.getpid()))
                held.flush()
                yield
                return


def state_folder(out_dir: Path) -> Path:
    """The folder beside `out_dir` where a text-encoder training job keeps its resumable states."""
    return out_dir.parent / f".{out_dir.name}.training"


def has_stopped_job(out_dir: Path) -> bool:
    """Whether a text-encoder training job writing `out_dir` stopped before its end."""
    return (state_folder(out_dir) / JOB_FILE).is_file()


def claim_state_folder(out_dir: Path, job: dict, resume: bool) -> Path:
    """`state_folder(out_dir)`, with `job` (what it trains, from what) in job.json. `resume`
    continues the job found there when it is this one, else names the first difference; otherwise
    (or when none is there) the folder starts empty."""
    folder = state_folder(out_dir)
    record = folder / JOB_FILE
    if resume and has_stopped_job(out_dir):
        changed = first_difference(json.loads(record.read_text(encoding="utf-8")), job)
        if changed:
            raise SettingError(f"--resume: {record} was started with {changed}; resume with the same settings and "
                               f"data, or leave out --resume to start again")  # fmt: skip
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_json(record, job)
    return folder


def finish_run_folder(folder: Path, run_dir: Path, summary: dict) -> None:
    """Marks the run in `folder` finished, drops its training state, and puts it in `run_dir`'s
    place when it was trained in the staging folder."""
    write_json(folder / FINISHED_FILE, summary)
    (folder / RESUME_FILE).unlink(missing_ok=True)
    if folder == run_dir:
        return
    old = run_dir.parent / f".{run_dir.name}.{uuid.uuid4().hex}.old"
    run_dir.rename(old)
    folder.rename(run_dir)
    shutil.rmtree(old)


# `atomic_path`'s temporary files: ".NAME.<32 hex digits>.tmp.SUFFIX".
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp(\..*)?")


def _remove_leftover_temporaries(folder: Path) -> None:
    """Removes what a killed process left half-written in `folder` (a checkpoint cut short, say):
    held by this process, nothing else writes there now (`test` writes only under eval/)."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and _TEMPORARY.fullmatch(path.name):
                path.unlink()


def _finish_swap(run_dir: Path, staging: Path) -> None:
    """Completes a replacement `finish_run_folder` was stopped in the middle of: the old run moved
    aside, the finished new one not yet in its place (or in place, the old one not yet removed)."""
    if not run_dir.exists() and is_finished(staging):
        staging.rename(run_dir)
    # Exactly `finish_run_folder`'s names: run "a" must not take run "a.b"'s ".a.b.<hex>.old".
    moved_aside = re.compile(rf"\.{re.escape(run_dir.name)}\.[0-9a-f]{{32}}\.old")
    for old in run_dir.parent.iterdir():
        if run_dir.exists() and moved_aside.fullmatch(old.name):
            shutil.rmtree(old)


def _never_started(folder: Path) -> bool:
    """Whether `folder` holds only what a run writes before its config.json (stopped, or refused its
    data, that early): nothing to resume, and nothing of anyone's to keep."""
    return folder.is_dir() and not (folder / CONFIG_FILE).exists() and holds_files(folder) and all(
        path.name in WRITTEN_BEFORE_CONFIG for path in folder.iterdir())  # fmt: skip


def without_resumable_changes(settings: dict) -> dict:
    """A copy of run settings (as JSON) without those of RESUMABLE_CHANGES, for comparing runs."""
    kept = json.loads(json.dumps(settings))
    for section, key in RESUMABLE_CHANGES:
        kept.get(section, {}).pop(key, None)
    return kept


def require_same_settings(config_file: Path, cfg: RunConfig) -> None:
    """Raises SettingError naming the first setting of `cfg` that the run of `config_file` did not
    start with (those of RESUMABLE_CHANGES may differ)."""
    wanted = cfg.to_dict()
    stored = json.loads(config_file.read_text(encoding="utf-8"))  # also holds the data's dims, not a setting
    changed = first_difference(without_resumable_changes({key: stored.get(key) for key in wanted}),
                               without_resumable_changes(wanted))  # fmt: skip
    if changed:
        raise SettingError(f"--resume: {config_file} started this run with {changed}; resume with the same "
                           f"settings, or --overwrite to start again")  # fmt: skip
