"""Seed spread, bootstrap intervals and the paired test of `audiotext compare`."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from audiotext.evaluation.metrics import classification_metrics
from audiotext.evaluation.statistics import METRICS, estimate, holm, paired_test, resample_weights, scores

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


def test_weighted_metrics_equal_scikit_learns_on_the_clips_repeated():
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.integers(0, len(LABELS), size=40), rng.integers(0, len(LABELS), size=40)
    weights = resample_weights(rng.integers(0, 12, size=40), 3, seed=3)  # (3, 40): 12 groups drawn
    for counts in weights:
        repeated = np.repeat(np.arange(40), counts)
        reference = classification_metrics(y_true[repeated].tolist(), y_pred[repeated].tolist(), LABELS)
        for metric in METRICS:
            assert scores(y_true, y_pred, len(LABELS), metric, counts) == pytest.approx(reference[metric], abs=1e-12)


def test_a_class_a_resample_did_not_draw_is_left_out_of_its_macro_mean():
    # 5 classes of 2 sentences (3 voices each): most resamples miss a class. A perfect model scores
    # F1 1 on every class drawn; the class not drawn, counted as 0, put its interval under 0.8.
    y_true = (np.arange(10) % 5).repeat(3)
    weights = resample_weights(np.arange(10).repeat(3), 500)
    perfect = estimate(y_true, y_true[None], 5, "macro_f1", weights)
    assert perfect.mean == perfect.low == perfect.high == 1.0
    # A class that no clip has still counts as 0, as in the figure itself.
    assert estimate(y_true, y_true[None], 6, "macro_f1", weights).high == pytest.approx(5 / 6)
    # Resample by resample, scikit-learn's macro-F1 over the classes drawn.
    for counts in weights[:20]:
        repeated = np.repeat(np.arange(30), counts)
        noisy = (y_true + (np.arange(30) % 4 == 0)) % 5
        reference = f1_score(y_true[repeated], noisy[repeated], average="macro", labels=np.unique(y_true[repeated]))
        assert scores(y_true, noisy, 5, "macro_f1", counts) == pytest.approx(reference, abs=1e-12)


def test_a_resample_draws_whole_groups_and_a_grouped_interval_is_wider():
    groups = np.repeat(np.arange(50), 3)  # 50 sentences, 3 voices each
    weights = resample_weights(groups, 400)
    assert weights.shape == (400, 150) and (weights.sum(axis=1) == 150).all()
    assert (weights.reshape(400, 50, 3) == weights.reshape(400, 50, 3)[..., :1]).all()  # a sentence's clips together
    # A model right or wrong on a whole sentence at once: its clips are one observation, not three.
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, len(LABELS), size=50).repeat(3)
    right = (rng.random(50) < 0.6).repeat(3)
    predictions = np.where(right, y_true, (y_true + 1) % len(LABELS))[None]
    by_clip = estimate(y_true, predictions, len(LABELS), "accuracy", resample_weights(range(150), 400))
    by_sentence = estimate(y_true, predictions, len(LABELS), "accuracy", weights)
    assert by_sentence.high - by_sentence.low > 1.4 * (by_clip.high - by_clip.low)  # about sqrt(3) times


@pytest.mark.parametrize("accuracy", [0.3, 0.7, 0.95])
def test_bootstrap_intervals_contain_the_point_estimate_and_narrow_with_more_clips(accuracy):
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        y_true = rng.integers(0, len(LABELS), size=n)
        predictions = noisy_predictions(y_true, accuracy, seeds=3, rng=rng)
        for metric in METRICS:
            e = estimate(y_true, predictions, len(LABELS), metric, resample_weights(range(n), 500))
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


def test_a_paired_test_by_sentence_swaps_whole_sentences():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(20), 3)
    y_true = rng.integers(0, len(LABELS), size=20).repeat(3)
    # Better on 8 of 20 sentences, each in its 3 voices: 24 clips apart by clip, but 8 sentences.
    better_on = np.zeros(20, bool)
    better_on[:8] = True
    good = np.where(better_on.repeat(3), y_true, (y_true + 1) % len(LABELS))[None]
    bad = ((y_true + 1) % len(LABELS))[None]
    by_clip = paired_test(y_true, good, bad, len(LABELS), permutations=1999)
    by_sentence = paired_test(y_true, good, bad, len(LABELS), permutations=1999, groups=groups)
    assert by_clip.difference == by_sentence.difference > 0
    assert by_clip.p_value < by_sentence.p_value  # 2**24 swap patterns against 2**8
    assert by_sentence.p_value == pytest.approx(2 / 2**8, abs=0.01)  # exact: only all-or-none of 8 is as extreme


def test_holm_adjusts_the_smallest_p_most_and_keeps_the_order():
    # Sorted 0.01, 0.02, 0.03, 0.5 times 4, 3, 2, 1: 0.04, 0.06, 0.06, 0.5 (0.03 * 2 lifted to 0.06).
    adjusted = holm([0.5, 0.01, 0.03, 0.02])
    assert adjusted == pytest.approx([0.5, 0.04, 0.06, 0.06])
    assert holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # capped by the running maximum, never over 1
    assert holm([0.9, 0.8]).max() == 1.0
    assert len(holm([])) == 0
