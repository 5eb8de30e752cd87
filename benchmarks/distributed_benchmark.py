"""Training in 2 processes (torchrun, gloo) against 1 process on this machine's CPU cores: epoch
time of the cross-modal model on the demo corpus's clip split.

Three ways, each `audiotext train` with the same flags and seed for 3 epochs; an epoch's time is
the mean of epochs 2 and 3 (the first also warms up), dev evaluation included:
1 process with 2 threads (PyTorch's default here: one per core), 1 process with 1 thread, and
2 processes with 1 thread each (`torchrun --nproc_per_node 2`, OMP_NUM_THREADS=1).

    python benchmarks/distributed_benchmark.py                         # synthesises the corpus; about 6 minutes
    python benchmarks/distributed_benchmark.py --data demo_runs/corpus/clip
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from audiotext.data.synthesis import build_demo_corpus

# The demo's cross-modal model (see README, "What fusion needs"), at 8 kHz.
FLAGS = ["--model", "mult", "--audio_features", "mfcc+prosody", "--merge_how", "stats", "--text_features", "ngrams",
         "--resample_rate", "8000", "--num_epochs", "3", "--quiet"]  # fmt: skip
WAYS = {
    "1 process, 2 threads": ([sys.executable, "-m", "audiotext"], None),
    "1 process, 1 thread": ([sys.executable, "-m", "audiotext"], "1"),
    "2 processes (torchrun), 1 thread each": (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "audiotext"], "1"),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="a prepared corpus (default: synthesise the demo's clip split)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "corpus"
        if args.data is None:
            print("synthesising the demo corpus ...", flush=True)
            build_demo_corpus(data, seed=0, progress=False)
        cache = ["--feature_cache", str(Path(tmp) / "cache")]
        figures = {}
        for number, (way, (command, threads)) in enumerate(WAYS.items()):
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            if threads:
                env["OMP_NUM_THREADS"] = threads
            started = time.perf_counter()
            subprocess.run([*command, "train", "--data_path", str(data), "--output_dir", tmp, "--name", f"run{number}",
                            *FLAGS, *cache], check=True, env=env)  # fmt: skip
            epochs = pd.read_csv(Path(tmp) / f"run{number}" / "epochs.csv")
            figures[way] = (epochs["seconds"].iloc[1:].mean(), time.perf_counter() - started, epochs.iloc[-1])
            print(f"{way}: {figures[way][0]:.2f} s per epoch", flush=True)
        one = figures["1 process, 2 threads"][0]
        print(f"\n{os.cpu_count()} CPU cores\n")
        print("| way | epoch | speed-up against 1 process, 2 threads | whole command | dev loss, epoch 3 | dev macro-F1 |")
        print("|---|---:|---:|---:|---:|---:|")
        for way, (epoch, wall, last) in figures.items():
            print(f"| {way} | {epoch:.2f} s | {one / epoch:.2f}× | {wall:.0f} s | {last['dev_loss']:.4f} | "
                  f"{last['dev_macro_f1']:.4f} |")


if __name__ == "__main__":
    main()
