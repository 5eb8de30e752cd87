"""Seed spread, bootstrap intervals and the paired test of `audiotext compare`."""

import numpy as np
import pytest

from audiotext.evaluation.metrics import classification_metrics
from audiotext.evaluation.statistics import METRICS, estimate, paired_test, resample_indices, scores

LABELS = list("abcde")


def noisy_predictions(y_true: np.ndarray, accuracy: float, seeds: int, rng: np.random.Generator) -> np.ndarray:
    """(S, N): each clip right with probability `accuracy`, else a random class."""
    wrong = rng.integers(0, len(LABELS), size=(seeds, len(y_true)))
    return np.where(rng.random((seeds, len(y_true))) < accuracy, y_true, wrong)


@pytest.mark.parametrize("trial", range(5))
def test_vectorised_metrics_equal_scikit_learns(trial):
    rng = np.random.default_rng(trial)
    y_true = rng.integers(0, len(LABELS) - trial % 2, size=60)  # odd trials: one class never true
    y_pred = rng.integers(0, len(LABELS), size=60)
    reference = classification_metrics(y_true.tolist(), y_pred.tolist(), LABELS)
    for metric in METRICS:
        assert scores(y_true, y_pred, len(LABELS), metric) == pytest.approx(reference[metric], abs=1e-12)


@pytest.mark.parametrize("accuracy", [0.3, 0.7, 0.95])
def test_bootstrap_intervals_contain_the_point_estimate_and_narrow_with_more_clips(accuracy):
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        y_true = rng.integers(0, len(LABELS), size=n)
        predictions = noisy_predictions(y_true, accuracy, seeds=3, rng=rng)
        for metric in METRICS:
            e = estimate(y_true, predictions, len(LABELS), metric, resample_indices(n, 500))
            assert e.low < e.high and e.contains(e.mean)
            assert e.mean == pytest.approx(np.mean([scores(y_true, p, len(LABELS), metric) for p in predictions]))
        widths.append(e.high - e.low)
    assert widths[1] < 0.5 * widths[0]  # 16 times the clips: about a quarter of the width


def test_paired_test_tells_a_better_model_from_an_equal_one():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, len(LABELS), size=300)
    good, bad = noisy_predictions(y_true, 0.8, 3, rng), noisy_predictions(y_true, 0.5, 3, rng)
    better = paired_test(y_true, good, bad, len(LABELS), permutations=999)
    assert better.difference > 0.2 and better.p_value == pytest.approx(1 / 1000)
    same = paired_test(y_true, good, good, len(LABELS), permutations=999)
    assert same.difference == 0 and same.p_value == 1.0
    twin = noisy_predictions(y_true, 0.8, 3, rng)  # another model as good as `good`
    assert paired_test(y_true, good, twin, len(LABELS), permutations=999).p_value > 0.01
