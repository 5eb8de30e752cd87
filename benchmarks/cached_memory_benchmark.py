"""Peak resident memory of building the feature cache and of training the cross-modal model from it,
on manifests of 10,000 clips (or the sizes given).

The clips are the demo corpus's speech, written again as 16 kHz FLAC files with a different gain
per copy (so no two files are the same), listed in a manifest whose last 300 rows are the dev
split. Each step runs in a process of its own, `audiotext features build` then one epoch of
`audiotext train` (the demo's cross-modal settings at 8 kHz), and its peak RSS is read from the
kernel (`getrusage` of the finished child).

    python benchmarks/cached_memory_benchmark.py                      # about 8 minutes on 2 cores
    python benchmarks/cached_memory_benchmark.py --clips 2000 10000
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from audiotext.config import REFERENCE_LABELS
from audiotext.data.corpus import load_split
from audiotext.data.synthesis import build_demo_corpus

RATE = 16000
DEV_CLIPS = 300


def write_manifest(base: Path, folder: Path, n: int) -> Path:
    splits = [load_split(base / f"{name}.pkl", REFERENCE_LABELS) for name in ("train", "dev", "test")]
    audio = [a for split in splits for a in split.audio]
    sentences = [s for split in splits for s in split.sentences]
    labels = [REFERENCE_LABELS[y] for split in splits for y in split.labels]
    at_16k = [soxr.resample(a.astype(np.float32) / 32768, 48000, RATE) for a in audio]
    folder.mkdir(parents=True)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["audio", "text", "label", "split"])
        for i in tqdm(range(n), desc=f"writing {n} clips", leave=False):
            j = i % len(audio)
            gain = 0.5 + 0.5 * (i // len(audio) + 1) / (n // len(audio) + 1)
            sf.write(folder / f"{i}.flac", np.clip(at_16k[j] * gain, -1, 1), RATE, subtype="PCM_16")
            writer.writerow([f"{i}.flac", sentences[j], labels[j], "dev" if i >= n - DEV_CLIPS else "train"])
    return manifest


def peak_rss(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of `command` run in a process of its own."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *command], check=True, capture_output=True, text=True)
    kib, seconds = out.stdout.split()[-2:]
    return int(kib) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[10000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        print("synthesising the demo corpus ...", flush=True)
        started = time.perf_counter()
        build_demo_corpus(base, seed=0, progress=False)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        print("\n| clips | build the cache: peak RSS | time | train one epoch from it: peak RSS | time |")
        print("|---:|---:|---:|---:|---:|")
        for n in args.clips:
            folder = Path(tmp) / f"m{n}"
            manifest = write_manifest(base, folder, n)
            common = ["--data_path", str(manifest), "--sample_rate", str(RATE), "--resample_rate", "8000",
                      "--feature_cache", str(folder / "cache"), "--quiet"]  # fmt: skip
            cli = [sys.executable, "-m", "audiotext.cli"]
            build = peak_rss([*cli, "features", "build", "--split", "train", "dev", *common])
            trained = peak_rss([*cli, "train", "--num_epochs", "1", "--attn_dropout", "0", "--out_dropout", "0.1",
                                "--output_dir", str(folder / "runs"), *common])  # fmt: skip
            print(f"| {n} | {build[0]:.0f} MiB | {build[1]:.0f} s | {trained[0]:.0f} MiB | {trained[1]:.0f} s |",
                  flush=True)


if __name__ == "__main__":
    main()
