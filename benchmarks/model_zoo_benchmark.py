"""Every fused model against the linear baseline on unseen sentences, one seed at a time and as a
seed ensemble: `make demo`'s settings for the script split (5 seeds), each model of the zoo.

A seed ensemble averages the class probabilities of a model's runs, one per seed: the deep models'
dev figure moves by about 3 points between seeds, the linear model's by 0.4, and averaging is the
standard cure for that spread. Prints per model: dev macro-F1 (mean ± std over seeds, and of the
ensemble: what would choose), dev_stt the same way (dev's clips with simulated recogniser
transcripts: what recogniser errors cost, weighed on dev), test and test_stt (mean over seeds, and
of the ensemble: reported, never chosen on). Needs the demo corpus (`make demo`).

    python benchmarks/model_zoo_benchmark.py --out /tmp/zoo
    python benchmarks/model_zoo_benchmark.py --out /tmp/noise06 --models mult --transcript_noise 0.6
    python benchmarks/model_zoo_benchmark.py --out /tmp/drop06 --models mult --modality_dropout 0.6
    python benchmarks/model_zoo_benchmark.py --out /tmp/wide --models mult --seeds 10 --wide
    python benchmarks/model_zoo_benchmark.py --out /tmp/ema995 --models mult --seeds 10 --ema 0.995
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from audiotext.evaluation.evaluate import evaluate
from audiotext.evaluation.metrics import classification_metrics
from audiotext.features.cache import FeatureCache
from audiotext.recipes.compare import FUSING_MODELS, run_comparison
from audiotext.recipes.demo import demo_settings

MODELS = ("linear", "early", "late", "tfn", "lmf", "mult")
SPLITS = ("dev", "dev_stt", "test", "test_stt")  # those the corpus has


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("demo_runs/corpus/script"))
    parser.add_argument("--out", type=Path, required=True, help="comparison folder; --resume continues one")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first_seed", type=int, default=0, help="seeds first_seed .. first_seed + seeds - 1")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--transcript_noise", type=float, default=None, metavar="SHARE",
                        help="share of training transcripts given recogniser errors (default: make demo's)")
    parser.add_argument("--modality_dropout", type=float, default=None, metavar="SHARE",
                        help="share of training clips that lose their text or their audio (default: the demo's)")
    parser.add_argument("--wide", action=argparse.BooleanOptionalAction, default=None,
                        help="the fused models with the linear model's logistic regression beside them (default: the demo's)")
    parser.add_argument("--ema", type=float, default=None, metavar="DECAY",
                        help="a moving average of the weights with this decay per step (default: the demo's)")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    cache = FeatureCache(progress=False)
    seeds = tuple(range(args.first_seed, args.first_seed + args.seeds))
    settings = replace(demo_settings(args.seeds), models=tuple(args.models.split(",")), seeds=seeds)
    if args.transcript_noise is not None:
        settings = replace(settings, train=replace(settings.train, transcript_noise=args.transcript_noise))
    if args.modality_dropout is not None:
        settings = replace(settings, modality_dropout=dict.fromkeys(FUSING_MODELS, args.modality_dropout))
    if args.ema is not None:
        settings = replace(settings, ema=dict.fromkeys(settings.models, args.ema))
    if args.wide is not None:
        settings = replace(settings, model=replace(settings.model, wide=args.wide))
    run_comparison(args.data, args.out, settings, cache, progress=False, resume=args.resume, overwrite=not args.resume)
    splits = [split for split in SPLITS if (args.data / f"{split}.pkl").exists()]
    header = "".join(f" | {split}, per seed | {split}, ensemble" for split in splits)
    print(f"| {args.seeds} seeds, macro-F1{header} |\n|---|{'---:|' * 2 * len(splits)}")
    for model in settings.models:
        runs = [args.out / "runs" / "corpus" / model / f"seed{seed}" for seed in settings.seeds]
        cells = []
        for split in splits:
            per_seed = []
            for run in runs:
                if not (run / "eval" / split / "predictions.csv").exists():
                    evaluate(run, split, args.data, cache=cache, progress=False)
                per_seed.append(pd.read_csv(run / "eval" / split / "predictions.csv"))
            scores = [macro_f1(p, p.filter(like="p_").to_numpy()) for p in per_seed]
            ensemble = macro_f1(per_seed[0], np.mean([p.filter(like="p_").to_numpy() for p in per_seed], axis=0))
            spread = f" ± {np.std(scores, ddof=1):.2f}" if split.startswith("dev") and len(scores) > 1 else ""
            cells += [f"{np.mean(scores):.2f}{spread}", f"{ensemble:.2f}"]
        print(f"| {model} | {' | '.join(cells)} |", flush=True)


def macro_f1(predictions: pd.DataFrame, probabilities: np.ndarray) -> float:
    """Macro-F1 in %, as `compare` scores it, of the classes with the highest probability (N, C)
    against the true labels; the columns p_<label> are in the run's label order."""
    labels = [column.removeprefix("p_") for column in predictions.filter(like="p_").columns]
    truth = predictions["true_value"].map(labels.index).to_numpy()
    return 100 * classification_metrics(truth, probabilities.argmax(1), labels)["macro_f1"]


if __name__ == "__main__":
    main()
