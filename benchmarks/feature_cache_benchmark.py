"""The feature cache against the reference's data path, and our MFCC against librosa's.

On a demo corpus of `--speakers` voices (8: 2,800 clips, 2,240 of them in train) it times, one
training epoch each of the cross-modal model (the demo's settings, the reference's 16 kHz audio and
400-frame cap) through the one engine:

1. the reference's data path: every batch resamples, trims and computes the MFCCs of its clips and
   runs the frozen encoder on its sentences inside collate, random batches padded to
   `max_len_for_audio`;
2. building the feature cache of the train split (MFCCs per clip, encoder states per sentence);
3. the cached path: features memory-mapped from the cache, length-bucketed batches (the default);
4. the same steps (same batches, same model) on tensors already in memory;

then prints the ratios (and how long drawing one epoch's batches takes each way, without training),
and times our MFCC module against `librosa.feature.mfcc` with the same
parameters on the same clips, with their largest difference.

    python benchmarks/feature_cache_benchmark.py                  # about 10 minutes on 2 cores
    python benchmarks/feature_cache_benchmark.py --corpus DIR     # a folder of train/dev .pkl
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

from audiotext.config import AudioConfig, RunConfig, TrainConfig
from audiotext.data.corpus import load_split
from audiotext.data.loading import load_encoded, make_loader, text_encoder_for
from audiotext.data.synthesis import build_demo_corpus
from audiotext.features.audio import MFCC, clip_features, resample, trim_zeros
from audiotext.features.cache import FeatureCache
from audiotext.inference.predict import forward
from audiotext.models.classifiers import Dims, build_model
from previous_demo import CROSS
from audiotext.training.engine import Engine, EngineSettings


def one_epoch(cfg: RunConfig, dims: Dims, batches, stats=None) -> float:
    """Seconds for one training epoch of a freshly seeded model on `batches`, through the engine."""
    engine = Engine(EngineSettings(name="epoch", epochs=1, seed=cfg.train.seed, clip=cfg.train.clip, progress=False))
    model = build_model(cfg.model, dims)
    if stats is not None:
        model.audio_norm.set(*stats)
    model.to(engine.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    started = time.perf_counter()
    engine.fit(model, optimizer, batches, loss=lambda m, b: F.cross_entropy(forward(m, b, engine.device), b["labels"]))
    return time.perf_counter() - started


def data_seconds(batches) -> float:
    """Seconds to draw one epoch of batches without training: the data path's own cost."""
    started = time.perf_counter()
    for _ in batches:
        pass
    return time.perf_counter() - started


def reference_loader(cfg: RunConfig, split, encoder) -> DataLoader:
    """The reference's way: features computed in collate, for every batch of every epoch."""
    mfcc = MFCC.of(cfg.audio)

    def collate(rows: list[int]) -> dict:
        frames = [torch.from_numpy(clip_features(split.audio[i], cfg.audio, mfcc)) for i in rows]
        audio = torch.zeros(len(rows), cfg.audio.max_len_for_audio, cfg.audio.n_mfcc)  # every batch at the cap
        for b, f in enumerate(frames):
            audio[b, : len(f)] = f
        states = encoder.encode([split.sentences[i] for i in rows], progress=False)
        text = pad_sequence(states, batch_first=True)
        return {
            "audio": audio,
            "audio_mask": torch.arange(audio.shape[1])[None] < torch.tensor([len(f) for f in frames])[:, None],
            "text": text,
            "text_mask": torch.arange(text.shape[1])[None] < torch.tensor([len(s) for s in states])[:, None],
            "labels": torch.as_tensor(split.labels[rows]),
        }

    return DataLoader(range(len(split)), batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate,
                      generator=torch.Generator().manual_seed(cfg.train.seed))  # fmt: skip


def in_memory(loader: DataLoader) -> list[dict]:
    """The cached loader's batches of one epoch, materialised: the same steps on tensors in memory."""
    return [{k: None if v is None else v.clone() for k, v in batch.items()} for batch in loader]


def mfcc_against_librosa(clips: list[np.ndarray], audio: AudioConfig) -> tuple[float, float, float]:
    """(our seconds, librosa's seconds, largest absolute difference) over the same waveforms."""
    waves = [resample(trim_zeros(c), audio.sample_rate, audio.resample_rate) for c in clips]
    ours = MFCC.of(audio)
    started = time.perf_counter()
    with torch.inference_mode():
        mine = [ours(torch.from_numpy(w)).numpy() for w in waves]
    our_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Empty filters detected")
        theirs = [
            librosa.feature.mfcc(
                y=w, sr=audio.resample_rate, n_mfcc=audio.n_mfcc, dct_type=2, norm="ortho", n_fft=audio.n_fft_size,
                hop_length=audio.n_fft_size // 2, n_mels=audio.n_mels, htk=True, center=True, pad_mode="reflect",
                power=2.0, mel_norm=None,  # power_to_db inside: ref 1, amin 1e-10, top_db 80, as ours
            ).T  # fmt: skip
            for w in waves
        ]
    librosa_seconds = time.perf_counter() - started
    difference = max(float(np.abs(a - b).max()) for a, b in zip(mine, theirs))
    return our_seconds, librosa_seconds, difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=None, help="folder of train/dev .pkl (default: synthesise)")
    parser.add_argument("--speakers", type=int, default=8, help="voices of the synthesised corpus (350 clips each)")
    parser.add_argument("--mfcc_clips", type=int, default=300, help="clips timed against librosa")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if corpus is None:
            corpus = Path(tmp) / "corpus"
            print(f"synthesising {350 * args.speakers} demo clips ...", flush=True)
            build_demo_corpus(corpus, seed=0, n_speakers=args.speakers, progress=False)
        cfg = RunConfig(name="cross", data_path=str(corpus), audio=AudioConfig(), model=replace(CROSS.config),
                        train=TrainConfig(seed=0))  # fmt: skip
        split = load_split(corpus / "train.pkl", cfg.labels)
        encoder = text_encoder_for(cfg, torch.device("cpu"))
        dims = Dims.of(cfg, encoder.hidden_size)
        print(f"train split: {len(split)} clips, {len(set(split.sentences))} distinct sentences; "
              f"{cfg.audio.resample_rate} Hz, at most {cfg.audio.max_len_for_audio} frames\n", flush=True)  # fmt: skip

        reference = one_epoch(cfg, dims, reference_loader(cfg, split, encoder))
        reference_data = data_seconds(reference_loader(cfg, split, encoder))
        print(f"reference data path: {reference:.1f} s/epoch, {reference_data:.1f} s of it drawing batches", flush=True)

        cache = FeatureCache(Path(tmp) / "cache", progress=False)
        started = time.perf_counter()
        data = load_encoded(cfg, "train", encoder, cache, progress=False)
        build = time.perf_counter() - started
        print(f"building the cache (loading the split included): {build:.1f} s", flush=True)

        loader = make_loader(data, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, length_buckets=True)
        stats = data.audio.mean_std()
        cached = one_epoch(cfg, dims, loader, stats)
        cached_data = data_seconds(loader)
        print(f"cached path: {cached:.1f} s/epoch, {cached_data:.2f} s of it drawing batches", flush=True)
        # The same batches as the cached epoch drew: the loader's sampler restarts from its seed.
        loader = make_loader(data, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, length_buckets=True)
        memory = one_epoch(cfg, dims, in_memory(loader), stats)
        print(f"same steps on tensors in memory: {memory:.1f} s/epoch\n", flush=True)

        ours, theirs, difference = mfcc_against_librosa(split.audio[: args.mfcc_clips], cfg.audio)
        print("| measure | value | target |")
        print("|---|---:|---|")
        print(f"| reference-path epoch / cached epoch | {reference / cached:.1f}× ({reference:.0f} s / {cached:.0f} s) "
              "| at least 30× |")
        print(f"| drawing an epoch's batches: reference path / cached | {reference_data / cached_data:.0f}× "
              f"({reference_data:.1f} s / {cached_data:.2f} s) | |")
        print(f"| cache build / reference-path epoch | {build / reference:.2f} | at most 1 |")
        print(f"| cached epoch / in-memory epoch | {cached / memory:.3f} ({100 * (cached / memory - 1):+.1f}%) | under +10% |")
        print(f"| librosa MFCC / our MFCC ({args.mfcc_clips} clips) | {theirs / ours:.1f}× ({theirs:.2f} s / {ours:.2f} s) "
              f"| at least 1× |")
        print(f"| largest difference from librosa | {difference:.2e} | within 2e-3 |")


if __name__ == "__main__":
    main()
