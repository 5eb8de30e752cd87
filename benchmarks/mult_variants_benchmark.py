"""What else might let `mult` catch the linear model on unseen sentences: `make demo`'s settings for
the script split (5 seeds), with one change to the cross-modal model at a time.

Prints dev macro-F1 (mean ± std over seeds: what would choose) and the test and test_stt means
(reported, never chosen on), with each seed's best epoch. Needs the demo corpus (`make demo`).

    python benchmarks/mult_variants_benchmark.py
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

from audiotext.features.cache import FeatureCache
from audiotext.recipes.compare import run_comparison
from audiotext.recipes.demo import demo_settings

VARIANTS = {
    "make demo's mult (causal mask, 5 layers, statistics pooling)": {},
    "without the causal mask": {"attn_mask": False},
    "2 layers instead of 5": {"layers": 2},
    "with utterance statistics (--utterance_stats)": {"utterance_stats": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("demo_runs/corpus/script"))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    settings = replace(demo_settings(args.seeds), models=("mult",))
    print(f"| mult, {args.seeds} seeds | dev macro-F1 | test macro-F1 | test_stt macro-F1 | best epochs |\n"
          "|---|---:|---:|---:|---|")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, change) in enumerate(VARIANTS.items()):
            out = Path(tmp) / str(i)
            variant = replace(settings, model=replace(settings.model, **change))
            run_comparison(args.data, out, variant, FeatureCache(progress=False), progress=False)
            runs = pd.read_csv(out / "results.csv")
            dev = runs["dev_macro_f1"] * 100
            test = pd.read_csv(out / "comparison.csv").query("metric == 'macro_f1'").set_index("test_set")["mean"] * 100
            print(f"| {title} | {dev.mean():.2f} ± {dev.std():.2f} | {test['test']:.2f} | "
                  f"{test.get('test_stt', float('nan')):.2f} | {', '.join(map(str, runs['best_epoch']))} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
