"""Training time with batches of similar length against random batches, on the demo corpus.

Trains the demo's audio-only and cross-modal models (the cross-modal one on the packaged MiniLM)
for `--epochs` epochs both ways from the same seed and prints the share of computed audio frames
that are padding, then per model the seconds per epoch, the speed-up and the best dev macro-F1.

    python benchmarks/length_buckets_benchmark.py                 # about 2 minutes on 2 cores
    python benchmarks/length_buckets_benchmark.py --corpus demo_runs/corpus/script
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

from audiotext.config import RunConfig
from audiotext.data.loading import load_encoded, make_loader
from audiotext.data.synthesis import build_demo_corpora
from audiotext.models.checkpoint import EPOCH_LOG
from previous_demo import AUDIO, CROSS, DEMO_AUDIO, DEMO_TRAINING
from audiotext.training.loop import train


def padding_shares(cfg: RunConfig) -> dict[bool, float]:
    """Share of the audio frames in one epoch's batches that are padding, without and with buckets."""
    data = load_encoded(cfg, "train", None, progress=False)
    shares = {}
    for length_buckets in (False, True):
        loader = make_loader(data, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, length_buckets=length_buckets)
        masks = [batch["audio_mask"] for batch in loader]
        shares[length_buckets] = 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=None, help="a demo corpus split folder (default: synthesise one)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if corpus is None:
            corpus = Path(tmp) / "corpus"
            build_demo_corpora({"script": corpus}, seed=0, progress=False)

        def config(model, length_buckets: bool) -> RunConfig:
            return RunConfig(name=model.run, data_path=str(corpus), audio=replace(DEMO_AUDIO), model=replace(model.config),
                             train=replace(DEMO_TRAINING, num_epochs=args.epochs, length_buckets=length_buckets))  # fmt: skip

        shares = padding_shares(config(AUDIO, False))
        print(f"audio frames computed that are padding: {100 * shares[False]:.0f}% in random batches, "
              f"{100 * shares[True]:.0f}% in length buckets\n")
        print("| model | s/epoch, random | s/epoch, buckets | speed-up | dev macro-F1, random | dev macro-F1, buckets |")
        print("|---|---:|---:|---:|---:|---:|")
        for title, model in (("audio-only", AUDIO), ("cross-modal on the packaged MiniLM", CROSS)):
            seconds, f1 = {}, {}
            for length_buckets in (False, True):
                run_dir = Path(tmp) / f"{model.run}_{length_buckets}"
                f1[length_buckets] = train(config(model, length_buckets), run_dir, progress=False)["dev_macro_f1"]
                seconds[length_buckets] = pd.read_csv(run_dir / EPOCH_LOG)["seconds"].mean()
            print(f"| {title} | {seconds[False]:.1f} | {seconds[True]:.1f} | {seconds[False] / seconds[True]:.2f}× "
                  f"| {100 * f1[False]:.2f} | {100 * f1[True]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
