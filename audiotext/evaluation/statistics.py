"""How sure a comparison is: spread over training seeds, bootstrap intervals over test clips, and a
paired test of two models on the same clips.

A comparison predicts the same test clips with every model and every seed (with folds: every clip
of the corpus once per seed). Two kinds of noise then show: the seed's, reported as the standard
deviation of a metric over seeds, and the test set's, reported as a 95% percentile-bootstrap
interval of the seed-averaged metric, the clips resampled with replacement.

Metrics are computed here from confusion counts of many resamples at once, rather than by calling
scikit-learn once per resample: a comparison needs thousands of resamples per model and metric, which
sklearn's per-call overhead (about 1 ms) turns into minutes. `classification_metrics` (sklearn)
stays the reference that the tests compare these against.

Shape legend: S seeds, N test clips, R resamples, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("accuracy", "macro_f1", "weighted_f1")
CONFIDENCE = 0.95


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, metric: str) -> np.ndarray:
    """`metric` of predictions y_pred (..., N) against y_true (..., N): shape (...).

    F1 of a class with neither true nor predicted clips is 0, and every class counts in the macro
    mean, as in `classification_metrics`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    y_true, y_pred = np.broadcast_arrays(np.asarray(y_true), np.asarray(y_pred))
    if metric == "accuracy":
        return (y_true == y_pred).mean(axis=-1)
    classes = np.arange(n_classes)
    is_true = y_true[..., None] == classes  # (..., N, C)
    is_pred = y_pred[..., None] == classes
    hits = (is_true & is_pred).sum(axis=-2)  # (..., C)
    support, predicted = is_true.sum(axis=-2), is_pred.sum(axis=-2)
    denominator = support + predicted
    f1 = np.divide(2 * hits, denominator, out=np.zeros(hits.shape), where=denominator > 0)
    if metric == "macro_f1":
        return f1.mean(axis=-1)
    return (f1 * support).sum(axis=-1) / support.sum(axis=-1)


def resample_indices(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(R, N) clip indices drawn with replacement; one draw serves every model, so that two models'
    intervals and their paired difference come from the same resampled test sets."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


@dataclass(frozen=True)
class Estimate:
    mean: float  # over seeds, on the whole test set
    std: float  # over seeds (0 with one seed)
    low: float  # 95% bootstrap interval of the seed mean over test clips
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def estimate(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, metric: str, indices: np.ndarray) -> Estimate:
    """`metric` of predictions (S, N) over seeds against y_true (N,), with its bootstrap interval
    over the resamples `indices` (R, N)."""
    per_seed = scores(y_true, y_pred, n_classes, metric)  # (S,)
    resampled = _resampled_means(y_true, y_pred, n_classes, metric, indices)  # (R,)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    std = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0
    return Estimate(float(per_seed.mean()), std, float(low), float(high))


def _resampled_means(y_true, y_pred, n_classes, metric, indices, chunk: int = 200) -> np.ndarray:
    """(R,) seed-averaged metric on each resample; chunks bound memory to about chunk × S × N × C."""
    out = []
    for start in range(0, len(indices), chunk):
        rows = indices[start : start + chunk]  # (r, N)
        out.append(scores(y_true[rows][:, None, :], y_pred[:, rows].transpose(1, 0, 2), n_classes, metric).mean(-1))
    return np.concatenate(out)


@dataclass(frozen=True)
class PairedTest:
    difference: float  # seed-averaged metric of a minus b
    p_value: float  # two-sided, approximate randomisation


def paired_test(
    y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, metric: str = "macro_f1",
    permutations: int = 2000, seed: int = 0,
) -> PairedTest:  # fmt: skip
    """Approximate randomisation test (Noreen 1989; as used for F1 by Riezler and Maxwell 2005) of two
    models' predictions (S, N) of the same clips: under the null hypothesis that the models are
    exchangeable, swapping their predictions of a clip (in every seed at once) changes nothing, so
    the observed seed-averaged difference is compared with the differences after random swaps.
    p = (1 + #{|swapped difference| >= |observed|}) / (1 + permutations)."""
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    observed = float(scores(y_true, pred_a, n_classes, metric).mean() - scores(y_true, pred_b, n_classes, metric).mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, permutations, 200):
        swap = rng.random((min(200, permutations - start), 1, len(y_true))) < 0.5  # (r, 1, N): same swap every seed
        a = np.where(swap, pred_b, pred_a)  # (r, S, N)
        b = np.where(swap, pred_a, pred_b)
        differences = scores(y_true, a, n_classes, metric).mean(-1) - scores(y_true, b, n_classes, metric).mean(-1)
        extreme += int((np.abs(differences) >= abs(observed) - 1e-12).sum())
    return PairedTest(observed, (1 + extreme) / (1 + permutations))
