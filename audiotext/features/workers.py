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
import dataclasses
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from audiotext.config import AudioConfig
from audiotext.errors import DataError, SettingError
from audiotext.features.audio import MFCC, clip_features

Clip = tuple[np.ndarray, int, str]  # samples, their rate, and what an error message calls the clip


def features_at_rate(clip: Clip, cfg: AudioConfig, mfcc: MFCC) -> np.ndarray:  # (T, F)
    """`clip_features` of a clip at its own rate; an error names the clip."""
    samples, rate, name = clip
    try:
        return clip_features(samples, dataclasses.replace(cfg, sample_rate=rate), mfcc)
    except ValueError as err:
        raise DataError(f"{name}: {err}") from None


class FeatureWorkers:
    """`features_at_rate` of batches of clips. With `workers` > 0 a batch is shared among that many
    processes as soon as it is submitted, and its result waits until asked for; with 0 it is
    computed in this process when asked for.

        workers = FeatureWorkers(cfg, 2)
        pending = workers.submit(clips)   # returns at once
        ...                               # e.g. the previous batch's forward pass
        features = pending()              # [(T_i, F)], in the order of `clips`
    """

    def __init__(self, cfg: AudioConfig, workers: int = 0) -> None:
        if workers < 0:
            raise SettingError(f"feature_workers must be 0 or more, got {workers}")
        self.cfg, self.workers = cfg, workers
        self._mfcc = MFCC(cfg.resample_rate, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft_size, n_mels=cfg.n_mels)
        self._pool = None
        if workers:
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=torch.set_num_threads, initargs=(1,))  # fmt: skip

    def submit(self, clips: Sequence[Clip]) -> Callable[[], list[np.ndarray]]:
        if self._pool is None:
            return lambda: [features_at_rate(clip, self.cfg, self._mfcc) for clip in clips]
        share = -(-len(clips) // self.workers)
        futures: list[Future] = [self._pool.submit(_features_in_worker, list(clips[i : i + share]), self.cfg)
                                 for i in range(0, len(clips), share)]  # fmt: skip
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


_worker_mfcc: dict[tuple, MFCC] = {}  # in a worker process: one MFCC module per setting


def _features_in_worker(clips: list[Clip], cfg: AudioConfig) -> list[np.ndarray]:
    key = (cfg.resample_rate, cfg.n_mfcc, cfg.n_fft_size, cfg.n_mels)
    if key not in _worker_mfcc:
        _worker_mfcc[key] = MFCC(cfg.resample_rate, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft_size, n_mels=cfg.n_mels)
    return [features_at_rate(clip, cfg, _worker_mfcc[key]) for clip in clips]
