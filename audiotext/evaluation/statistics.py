"""How sure a comparison is: spread over training seeds, bootstrap intervals over test sentences,
and a paired test of two models on the same clips.

A comparison predicts the same test clips with every model and every seed (with folds: every clip
of the corpus once per seed). Two kinds of noise then show: the seed's, reported as the standard
deviation of a metric over seeds, and the test set's, reported as a 95% percentile-bootstrap
interval of the seed-averaged metric. The test set is resampled by groups of clips that are not
independent of each other, the clips of one sentence (the demo reads each test sentence in three
voices, and a model that reads text sees that sentence three times): resampled clip by clip, the
macro-F1 interval of the demo's `mult` was 13.1 points wide, by sentence 18.8. The paired test swaps whole
groups likewise.

Metrics are computed here from confusion counts of many resamples at once, rather than by calling
scikit-learn once per resample: a comparison needs thousands of resamples per model and metric, which
sklearn's per-call overhead (about 1 ms) turns into minutes. `classification_metrics` (sklearn)
stays the reference that the tests compare these against.

Shape legend: S seeds, N test clips, G groups of clips, R resamples, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

METRICS = ("accuracy", "macro_f1", "weighted_f1")
CONFIDENCE = 0.95


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, metric: str, weights=None) -> np.ndarray:
    """`metric` of predictions y_pred (..., N) against y_true (..., N): shape (...). `weights`
    (..., N) counts each clip that many times (a bootstrap resample); once each when None.

    F1 of a class with neither true nor predicted clips is 0, and every class counts in the macro
    mean, as in `classification_metrics`; but a class that the clips have and a resample drew none
    of is left out of that resample's macro mean. Counted as 0 it pulled the interval down: with 5
    test sentences a class, 3% of the demo's resamples lacked a class, so the 2.5th percentile was
    such a resample's, 10 points under the others (1.3 points off `mult`'s lower bound); with one
    sentence a class, nearly all lacked one, and the interval lay under the estimate.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    y_true, y_pred = np.broadcast_arrays(np.asarray(y_true), np.asarray(y_pred))
    if weights is not None:
        y_true, y_pred, weights = np.broadcast_arrays(y_true, y_pred, weights)
    if metric == "accuracy":
        right = y_true == y_pred
        return right.mean(axis=-1) if weights is None else (weights * right).sum(axis=-1) / weights.sum(axis=-1)
    classes = np.arange(n_classes)
    is_true = y_true[..., None] == classes  # (..., N, C)
    is_pred = y_pred[..., None] == classes
    # Booleans summed unless weighted: the paired test's thousands of swaps stay a third of the memory.
    count = (lambda x: x.sum(axis=-2)) if weights is None else (lambda x: (x * weights[..., None]).sum(axis=-2))
    hits, support, predicted = count(is_true & is_pred), count(is_true), count(is_pred)  # (..., C) each
    denominator = support + predicted
    f1 = np.divide(2 * hits, denominator, out=np.zeros(hits.shape), where=denominator > 0)
    if metric == "macro_f1":
        if weights is None:
            return f1.mean(axis=-1)
        counted = (support > 0) | ~is_true.any(axis=-2)  # drawn, or absent from the clips (as unweighted: 0)
        return (f1 * counted).sum(axis=-1) / counted.sum(axis=-1)
    return (f1 * support).sum(axis=-1) / support.sum(axis=-1)


def group_ids(groups: Sequence) -> np.ndarray:
    """(N,) the group of each clip as 0..G-1, from any labels of them (sentences, say)."""
    return np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1].reshape(-1)


def resample_weights(groups: Sequence, resamples: int, seed: int = 0) -> np.ndarray:
    """(R, N) how many times each clip is in each resample: G groups drawn with replacement, every
    clip of a drawn group with it. One draw serves every model, so that two models' intervals and
    their paired difference come from the same resampled test sets."""
    ids = group_ids(groups)
    n_groups = ids.max(initial=-1) + 1
    drawn = np.random.default_rng(seed).integers(0, n_groups, size=(resamples, n_groups))  # (R, G)
    counts = np.zeros((resamples, n_groups), dtype=np.int32)
    np.add.at(counts, (np.arange(resamples)[:, None], drawn), 1)
    return counts[:, ids]


@dataclass(frozen=True)
class Estimate:
    mean: float  # over seeds, on the whole test set
    std: float  # over seeds (0 with one seed)
    low: float  # 95% bootstrap interval of the seed mean over the test set's groups of clips
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def estimate(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, metric: str, weights: np.ndarray) -> Estimate:
    """`metric` of predictions (S, N) over seeds against y_true (N,), with its bootstrap interval
    over the resamples `weights` (R, N) of `resample_weights`."""
    per_seed = scores(y_true, y_pred, n_classes, metric)  # (S,)
    resampled = _resampled_means(y_true, y_pred, n_classes, metric, weights)  # (R,)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    std = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0
    return Estimate(float(per_seed.mean()), std, float(low), float(high))


def _resampled_means(y_true, y_pred, n_classes, metric, weights, chunk: int = 200) -> np.ndarray:
    """(R,) seed-averaged metric on each resample; chunks bound memory to about chunk × S × N × C."""
    out = []
    for start in range(0, len(weights), chunk):
        counts = weights[start : start + chunk, None, :]  # (r, 1, N)
        out.append(scores(y_true, np.asarray(y_pred)[None], n_classes, metric, counts).mean(-1))  # (r, S) → (r,)
    return np.concatenate(out)


@dataclass(frozen=True)
class PairedTest:
    difference: float  # seed-averaged metric of a minus b
    p_value: float  # two-sided, approximate randomisation


def paired_test(
    y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, metric: str = "macro_f1",
    permutations: int = 2000, seed: int = 0, groups: Sequence | None = None,
) -> PairedTest:  # fmt: skip
    """Approximate randomisation test (Noreen 1989; as used for F1 by Riezler and Maxwell 2005) of two
    models' predictions (S, N) of the same clips: under the null hypothesis that the models are
    exchangeable, swapping their predictions of a group of clips (`groups`, one label per clip; each
    clip alone when None), in every seed at once, changes nothing, so the observed seed-averaged
    difference is compared with the differences after random swaps.
    p = (1 + #{|swapped difference| >= |observed|}) / (1 + permutations)."""
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    observed = float(scores(y_true, pred_a, n_classes, metric).mean() - scores(y_true, pred_b, n_classes, metric).mean())
    ids = group_ids(range(len(y_true)) if groups is None else groups)
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, permutations, 200):
        swap = (rng.random((min(200, permutations - start), 1, ids.max() + 1)) < 0.5)[..., ids]  # (r, 1, N): same swap every seed
        a = np.where(swap, pred_b, pred_a)  # (r, S, N)
        b = np.where(swap, pred_a, pred_b)
        differences = scores(y_true, a, n_classes, metric).mean(-1) - scores(y_true, b, n_classes, metric).mean(-1)
        extreme += int((np.abs(differences) >= abs(observed) - 1e-12).sum())
    return PairedTest(observed, (1 + extreme) / (1 + permutations))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of the p-values of a family of tests (Holm 1979): rejecting every
    adjusted p below alpha keeps the chance of any false rejection in the family under alpha, where
    the raw p-values of 7 tests would each have alpha's chance. The k-th smallest p is multiplied by
    (m - k + 1), then made non-decreasing in that order, and capped at 1."""
    p_values = np.asarray(p_values, dtype=float)
    order = np.argsort(p_values, kind="stable")
    scaled = p_values[order] * np.arange(len(p_values), 0, -1)
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted
