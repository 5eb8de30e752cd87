"""The cross-modal model with the reference's causal mask (`tril` on the rectangle: text query i
hears audio frames 0..i) against MulT's (query i hears keys 0..i + |M - N|, per clip), over seeds.

Trains the demo's cross-modal model on a demo partition with the demo's fine-tuned encoder, once
per seed and mask, and prints test accuracy and macro-F1 per run, their means and the paired
difference. The reference's mask is put in place of ours for its runs only; nothing else differs.

    make demo   # first: the corpus and the fine-tuned encoders
    python benchmarks/causal_mask_benchmark.py --partition script --seeds 0 1 2   # about 8 minutes
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from audiotext.config import RunConfig, TextConfig
from audiotext.evaluation.evaluate import evaluate
from audiotext.features.cache import FeatureCache
from audiotext.models import blocks
from previous_demo import CROSS, DEMO_AUDIO, DEMO_TRAINING
from audiotext.training.loop import train

MULT_MASK = blocks.causal_mask


def reference_mask(query_mask, key_mask, n: int, m: int, device: torch.device) -> torch.Tensor:
    """The previous release's mask: ones(N, M).tril(), the same for every clip."""
    return torch.ones(n, m, dtype=torch.bool, device=device).tril()[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("demo_runs"), help="the folder `make demo` wrote")
    parser.add_argument("--partition", default="script", choices=["clip", "script"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--encoder", type=Path, default=None,
                        help="fine-tuned encoder (default: DEMO/PARTITION/text/corpus/finetuned, see benchmarks/README.md)")
    args = parser.parse_args()
    corpus = args.demo / "corpus" / args.partition
    encoder = (args.encoder or args.demo / args.partition / "text" / "corpus" / "finetuned").resolve()
    cache = FeatureCache(progress=False)
    results: dict[str, list[tuple[float, float]]] = {"reference tril": [], "MulT": []}
    print("| seed | mask | test accuracy | test macro-F1 |\n|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, mask in (("reference tril", reference_mask), ("MulT", MULT_MASK)):
                blocks.causal_mask = mask
                cfg = RunConfig(name="cross", data_path=str(corpus), audio=replace(DEMO_AUDIO),
                                text=TextConfig(encoder=str(encoder)), model=replace(CROSS.config),
                                train=replace(DEMO_TRAINING, seed=seed))  # fmt: skip
                run_dir = Path(tmp) / f"{name}-{seed}"
                train(cfg, run_dir, cache=cache, progress=False)
                metrics = evaluate(run_dir, "test", corpus, cache=cache, progress=False)
                results[name].append((metrics["accuracy"], metrics["macro_f1"]))
                print(f"| {seed} | {name} | {100 * metrics['accuracy']:.2f} | {100 * metrics['macro_f1']:.2f} |",
                      flush=True)
    blocks.causal_mask = MULT_MASK
    for name, scores in results.items():
        mean, sd = np.mean(scores, axis=0), np.std(scores, axis=0, ddof=1) if len(scores) > 1 else (0, 0)
        print(f"{name}: accuracy {100 * mean[0]:.2f} ± {100 * sd[0]:.2f}, macro-F1 {100 * mean[1]:.2f} ± {100 * sd[1]:.2f}")
    difference = np.subtract(results["MulT"], results["reference tril"])
    print(f"MulT minus reference, paired mean: accuracy {100 * difference[:, 0].mean():+.2f}, "
          f"macro-F1 {100 * difference[:, 1].mean():+.2f} (MulT ahead on {int((difference[:, 1] > 0).sum())} "
          f"of {len(difference)} seeds by macro-F1)")


if __name__ == "__main__":
    main()
