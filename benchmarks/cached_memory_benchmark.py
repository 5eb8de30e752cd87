"""Peak resident memory of building the feature cache and of training from it, against the size of
the corpus: manifests of 10,000, 30,000 and 100,000 clips (or the sizes given), and what DataLoader
worker processes change.

The clips are the demo corpus's speech, written again as 8 kHz WAV files with a different gain per
copy (so no two files are the same), listed in a manifest whose last 300 rows are the dev split.
Each step runs in a process of its own: `audiotext features build`, then one epoch of `audiotext
train` (the cross-modal model with character n-grams for text and one layer per stack, so that
100,000 clips train in minutes on 2 cores; the data path is the same for every model). Its peak
RSS is read from the kernel (`getrusage` of the finished child: the largest process, the
file-backed pages of the memory-mapped cache included), and its anonymous memory (RssAnon: what
the process itself allocated, which the kernel cannot drop) is sampled every 50 ms.

    python benchmarks/cached_memory_benchmark.py                                  # about 30 minutes on 2 cores
    python benchmarks/cached_memory_benchmark.py --clips 2000 10000 --workers_at 10000
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from tqdm import tqdm

from audiotext.config import REFERENCE_LABELS
from audiotext.data.corpus import load_split
from audiotext.data.synthesis import build_demo_corpus

RATE = 8000
DEV_CLIPS = 300


def write_manifest(base: Path, folder: Path, n: int) -> Path:
    splits = [load_split(base / f"{name}.pkl", REFERENCE_LABELS) for name in ("train", "dev", "test")]
    audio = [a for split in splits for a in split.audio]
    sentences = [s for split in splits for s in split.sentences]
    labels = [REFERENCE_LABELS[y] for split in splits for y in split.labels]
    at_rate = [soxr.resample(a.astype(np.float32) / 32768, 48000, RATE) for a in audio]
    folder.mkdir(parents=True)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["audio", "text", "label", "split"])
        for i in tqdm(range(n), desc=f"writing {n} clips", leave=False):
            j = i % len(audio)
            gain = 0.5 + 0.5 * (i // len(audio) + 1) / (n // len(audio) + 1)
            sf.write(folder / f"{i}.wav", np.clip(at_rate[j] * gain, -1, 1), RATE, subtype="PCM_16")
            writer.writerow([f"{i}.wav", sentences[j], labels[j], "dev" if i >= n - DEV_CLIPS else "train"])
    return manifest


# Run in a process of its own, so that getrusage's peak is this command's alone.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:])
anon = 0
while child.poll() is None:
    try:
        status = open(f"/proc/{child.pid}/status").read()
        anon = max(anon, int(status.split("RssAnon:")[1].split()[0]))
    except (OSError, IndexError):
        pass
    time.sleep(0.05)
assert child.returncode == 0, child.returncode
print(json.dumps({"seconds": time.perf_counter() - started, "anon_kib": anon,
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measure(command: list[str]) -> dict:
    """seconds, peak RSS and peak anonymous RSS (MiB) of `command`."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True)
    figures = json.loads(out.stdout.splitlines()[-1])
    return {"seconds": figures["seconds"], "peak": figures["peak_kib"] / 1024, "anon": figures["anon_kib"] / 1024}


def epoch_seconds(run: Path) -> float:
    return float(pd.read_csv(run / "epochs.csv")["seconds"].iloc[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[10000, 30000, 100000])
    parser.add_argument("--workers_at", type=int, default=30000, help="the corpus size at which workers are measured")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts tried beside 0")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "audiotext"]
    model = ["--model", "mult", "--text_features", "ngrams", "--layers", "1", "--num_epochs", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        print("synthesising the demo corpus ...", flush=True)
        started = time.perf_counter()
        build_demo_corpus(base, seed=0, progress=False)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        rows, workers = [], []
        for n in args.clips:
            folder = Path(tmp) / f"m{n}"
            manifest = write_manifest(base, folder, n)
            common = ["--data_path", str(manifest), "--sample_rate", str(RATE), "--resample_rate", str(RATE),
                      "--feature_cache", str(folder / "cache"), "--quiet"]  # fmt: skip
            build = measure([*cli, "features", "build", "--split", "train", "dev", "--do_audio", *common])
            train = [*cli, "train", *model, "--output_dir", str(folder / "runs"), *common]
            trained = measure([*train, "--name", "w0"])
            rows.append((n, build, trained, epoch_seconds(folder / "runs" / "w0")))
            print(f"| {n:,} | {build['peak']:.0f} MiB | {build['anon']:.0f} MiB | {build['seconds']:.0f} s | "
                  f"{trained['peak']:.0f} MiB | {trained['anon']:.0f} MiB | {rows[-1][3]:.0f} s |", flush=True)
            if n == args.workers_at:
                for count in args.workers:
                    with_workers = measure([*train, "--name", f"w{count}", "--num_workers", str(count)])
                    workers.append((count, with_workers, epoch_seconds(folder / "runs" / f"w{count}")))
            for path in folder.glob("*.wav"):  # disk: 100,000 clips take 4 GB
                path.unlink()
        print("\n| clips | build the cache: peak RSS | its anonymous part | time | train one epoch from it: peak RSS "
              "| its anonymous part | epoch |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n, build, trained, epoch in rows:
            print(f"| {n:,} | {build['peak']:.0f} MiB | {build['anon']:.0f} MiB | {build['seconds']:.0f} s | "
                  f"{trained['peak']:.0f} MiB | {trained['anon']:.0f} MiB | {epoch:.0f} s |")
        if workers:
            base_epoch = next(epoch for n, _, _, epoch in rows if n == args.workers_at)
            print(f"\n| DataLoader workers ({args.workers_at:,} clips) | epoch | against 0 workers | peak RSS |")
            print("|---:|---:|---:|---:|")
            print(f"| 0 | {base_epoch:.1f} s | 1.00× | {next(t['peak'] for n, _, t, _ in rows if n == args.workers_at):.0f} MiB |")
            for count, trained, epoch in workers:
                print(f"| {count} | {epoch:.1f} s | {base_epoch / epoch:.2f}× | {trained['peak']:.0f} MiB |")


if __name__ == "__main__":
    main()
