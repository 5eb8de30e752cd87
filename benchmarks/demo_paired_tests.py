"""Paired tests of named models on the predictions `make demo` left (script split): `mult`'s
ensemble against the linear model's runs and ensemble and audio-only's ensemble, and `mult`'s runs
against audio-only's, swapping whole sentences (the test of `compare`) and, for comparison, single
clips (its test before sentences were swapped together).

    python benchmarks/demo_paired_tests.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from audiotext.config import REFERENCE_LABELS
from audiotext.data.manifest import load_any_split
from audiotext.data.splits import sentence_units
from audiotext.evaluation.statistics import paired_test
from audiotext.recipes.compare import spoken_sentences

SAMPLE_RATE = 48000  # the demo corpus's


def probabilities(runs: Path, model: str, test_set: str, seeds: int) -> np.ndarray:  # (S, N, C)
    columns = [f"p_{label}" for label in REFERENCE_LABELS]
    return np.stack([pd.read_csv(runs / model / f"seed{s}" / "eval" / test_set / "predictions.csv")[columns].to_numpy()
                     for s in range(seeds)])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("demo_runs"))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    runs = args.demo / "script" / "runs" / "corpus"
    print("| test set | a | b | macro-F1 a - b | p, sentences swapped | p, clips swapped |\n|---|---|---|---:|---:|---:|")
    for test_set in ("test", "test_stt"):
        corpus = args.demo / "corpus" / "script"
        split = load_any_split(corpus, test_set, REFERENCE_LABELS, SAMPLE_RATE)
        y_true = split.labels
        # As `compare` groups them: test_stt's clips by the sentence of the test clip they are.
        spoken = spoken_sentences(corpus, split, REFERENCE_LABELS, SAMPLE_RATE) if test_set == "test_stt" else split.sentences
        groups = sentence_units(pd.Series(spoken)).to_numpy()
        seeded = {m: probabilities(runs, m, test_set, args.seeds) for m in ("mult", "linear", "audio")}
        predictions = {**{m: p.argmax(-1) for m, p in seeded.items()},
                       **{f"{m} (ensemble)": p.mean(0).argmax(-1)[None] for m, p in seeded.items()}}  # fmt: skip
        for a, b in (("mult (ensemble)", "linear"), ("mult (ensemble)", "linear (ensemble)"),
                     ("mult (ensemble)", "audio (ensemble)"), ("mult", "audio")):  # fmt: skip
            shape = (max(len(predictions[a]), len(predictions[b])), len(y_true))
            pair = np.broadcast_to(predictions[a], shape), np.broadcast_to(predictions[b], shape)
            by_sentence = paired_test(y_true, *pair, len(REFERENCE_LABELS), groups=groups)
            by_clip = paired_test(y_true, *pair, len(REFERENCE_LABELS))
            print(f"| {test_set} | {a} | {b} | {100 * by_sentence.difference:+.2f} | {by_sentence.p_value:.2g} "
                  f"| {by_clip.p_value:.2g} |")  # fmt: skip


if __name__ == "__main__":
    main()
