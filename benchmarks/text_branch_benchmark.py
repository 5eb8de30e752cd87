"""Fine-tuned text-only model against the frozen-encoder + linear baseline, on unseen sentences,
over several script splits of the demo corpus.

One script split holds out 35 sentences, so one split's accuracy moves by 2.9 points per sentence.
This repeats the demo's text branch (WordPiece vocabulary + masked-LM pre-training on the training
sentences, then fine-tuning) and its baseline (a linear layer on frozen MiniLM) on `--splits`
script splits drawn with different seeds, and prints each split's test accuracy and macro-F1, the
mean and standard deviation, and the paired difference.

    python benchmarks/text_branch_benchmark.py             # 5 splits, 5 to 15 minutes on 2 cores
    python benchmarks/text_branch_benchmark.py --splits 2
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from audiotext.config import RunConfig
from audiotext.data.synthesis import build_demo_corpora
from audiotext.evaluation.evaluate import evaluate, evaluate_text_classifier
from previous_demo import DEMO_FINETUNE, DEMO_PRETRAIN, FROZEN_TEXT, FROZEN_TEXT_TRAINING
from audiotext.training.loop import train
from audiotext.training.masked_lm import pretrain
from audiotext.training.text_classifier import finetune


def one_split(folder: Path, seed: int) -> dict[str, tuple[float, float]]:
    """Test (accuracy, macro-F1) of the fine-tuned and the frozen text-only model on one script split."""
    corpus = folder / "corpus"
    # One voice: text models read no audio, and every clip of a sentence gets the same prediction.
    build_demo_corpora({"script": corpus}, seed=seed, n_speakers=1, progress=False)
    pretrain([corpus / "train.pkl"], None, folder / "pretrained", seed=seed, progress=False, **DEMO_PRETRAIN)
    finetune(corpus, folder / "pretrained", folder / "finetuned", seed=seed, progress=False, **DEMO_FINETUNE)
    tuned = evaluate_text_classifier(folder / "finetuned", corpus, "test", folder / "finetuned" / "eval")
    cfg = RunConfig(name="frozen", data_path=str(corpus), model=replace(FROZEN_TEXT.config),
                    train=replace(FROZEN_TEXT_TRAINING, seed=seed))  # fmt: skip
    train(cfg, folder / "frozen", progress=False)
    frozen = evaluate(folder / "frozen", "test", corpus, progress=False)
    return {name: (m["accuracy"], m["macro_f1"]) for name, m in (("fine-tuned", tuned), ("frozen", frozen))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=5)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        print("| split seed | fine-tuned acc | fine-tuned macro-F1 | frozen acc | frozen macro-F1 |")
        print("|---:|---:|---:|---:|---:|")
        for seed in range(args.splits):
            scores = one_split(Path(tmp) / str(seed), seed)
            results.append([*scores["fine-tuned"], *scores["frozen"]])
            print(f"| {seed} | " + " | ".join(f"{100 * x:.2f}" for x in results[-1]) + " |", flush=True)
    table = 100 * np.array(results)  # (splits, 4)
    mean, sd = table.mean(0), table.std(0, ddof=1) if len(table) > 1 else np.zeros(4)
    print("| mean ± sd | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(mean, sd)) + " |")
    gain = table[:, :2] - table[:, 2:]  # fine-tuned minus frozen, per split
    wins = int((gain[:, 0] > 0).sum())
    print(f"\nfine-tuned minus frozen: accuracy {gain[:, 0].mean():+.2f} points, macro-F1 {gain[:, 1].mean():+.2f} points "
          f"(mean over {len(table)} splits); fine-tuned ahead on accuracy in {wins} of {len(table)}")


if __name__ == "__main__":
    main()
