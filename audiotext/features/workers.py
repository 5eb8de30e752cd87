"""Audio features of many clips, computed in worker processes while the caller does other work.

Batching shares a model's forward pass, not the work each clip needs before it (resampling, MFCCs,
YIN pitch): on a CPU that is most of a batched clip's time. librosa's YIN holds the interpreter
lock most of the time, so threads barely help (1.3x on two cores in a trial); processes do. They
are forked, as torch's DataLoader workers are, and run torch on one thread: a forked child that
starts OpenMP threads of its own can deadlock on the parent's. forkserver or spawn would import
the caller's main module again in each worker, which breaks a plain script without a
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from audiotext.config import AudioConfig
from audiotext.errors import DataError, SettingError
from audiotext.features.audio import MFCC, clip_features, resample_keeping_dtype

# (clip, sampling_rate, name) -> (samples, rate): a module-level function, since workers are handed
# it by name.
Reader = Callable[[Any, Optional[int], str], tuple[np.ndarray, int]]
# What a worker is handed: something to read samples from (a file path, an array, a manifest's row:
# whatever its reader takes), the rate given with it, what an error message calls it, its reader.
Job = tuple[Any, Optional[int], str, Reader]


def job_features(job: Job, cfg: AudioConfig, mfcc: MFCC) -> np.ndarray:  # (T, F)
    """`clip_features` of a job's clip, read at the corpus's rate (cfg.sample_rate) first, as
    training read a manifest's files: straight from another rate, edge zeros are trimmed at that
    rate and the features differ a little (up to 0.004 in a probability); an error names the clip."""
    source, sampling_rate, name, read = job
    samples, rate = read(source, sampling_rate, name)
    try:
        samples = resample_keeping_dtype(samples, rate, cfg.sample_rate)
        return clip_features(samples, cfg, mfcc)
    except ValueError as err:
        raise DataError(f"{name}: {err}") from None


class FeatureWorkers:
    """`job_features` of batches of jobs. With `workers` > 0 a batch is shared among that many
    processes as soon as it is submitted, each clip decoded there too, and its result waits until
    asked for; with 0 it is computed in this process when asked for.

        workers = FeatureWorkers(cfg, 2)
        pending = workers.submit(jobs)    # returns at once
        ...                               # e.g. the previous batch's forward pass
        features = pending()              # [(T_i, F)], in the order of `jobs`
    """

    def __init__(self, cfg: AudioConfig, workers: int = 0) -> None:
        if workers < 0:
            raise SettingError(f"feature_workers must be 0 or more, got {workers}")
        self.cfg, self.workers = cfg, workers
        self._mfcc = MFCC.of(cfg)
        self._pool = None
        if workers:
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_start_worker, initargs=(cfg,))  # fmt: skip

    def submit(self, jobs: Sequence[Job]) -> Callable[[], list[np.ndarray]]:
        if self._pool is None:
            return lambda: [job_features(job, self.cfg, self._mfcc) for job in jobs]
        share = -(-len(jobs) // self.workers)
        futures: list[Future] = [self._pool.submit(_features_in_worker, list(jobs[i : i + share]))
                                 for i in range(0, len(jobs), share)]  # fmt: skip
        return lambda: [features for future in futures for features in future.result()]

    @contextlib.contextmanager
    def sharing_cores(self) -> Iterator[None]:
        """PyTorch in this process keeps the threads the workers leave, at least one: a forward pass
        on threads of the workers' cores only waits for them (2 cores, 2 workers: 415 clips/s on
        one thread against 320 on two)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads - self.workers))
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


_settings: tuple[AudioConfig, MFCC] | None = None  # in a worker process: its pool's settings and MFCC module


def _start_worker(cfg: AudioConfig) -> None:
    global _settings
    # Ctrl-C reaches the whole process group: the predicting process reports it, and stops the pool;
    # each worker would print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The fork inherits the command line's SIGTERM handler (raise KeyboardInterrupt): a traceback too.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    _settings = cfg, MFCC.of(cfg)


def _features_in_worker(jobs: list[Job]) -> list[np.ndarray]:
    cfg, mfcc = _settings
    return [job_features(job, cfg, mfcc) for job in jobs]
