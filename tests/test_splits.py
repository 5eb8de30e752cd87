"""Partitions: stratified by label, and no test sentence or speaker in train when promised."""

import numpy as np
import pandas as pd
import pytest

from audiotext.data.splits import LeakageError, assign_splits, check_leakage, split_counts

LABELS = ("공포", "행복", "anger")


@pytest.fixture
def frame() -> pd.DataFrame:
    """6 speakers each reading 20 sentences per label once: 360 clips, 60 sentences."""
    rows = [
        (f"spk{speaker}", f"{label} sentence {i}", label)
        for speaker in range(6)
        for label in LABELS
        for i in range(20)
    ]
    return pd.DataFrame(rows, columns=["speaker", "text", "label"])


@pytest.mark.parametrize("split_by", ["clip", "sentence", "speaker"])
def test_every_clip_gets_a_split_deterministically(frame, split_by):
    splits = assign_splits(frame, split_by, seed=3)
    assert set(splits) == {"train", "dev", "test"}
    assert splits.index.equals(frame.index)
    assert splits.equals(assign_splits(frame, split_by, seed=3))
    assert not splits.equals(assign_splits(frame, split_by, seed=4))
    check_leakage(frame, splits, split_by)


@pytest.mark.parametrize("split_by", ["clip", "sentence"])
def test_stratified_by_label(frame, split_by):
    counts = split_counts(frame["label"], assign_splits(frame, split_by))
    # 120 clips per label: 96/12/12 by clip; by sentence 16/2/2 sentences of 6 clips each.
    for label in LABELS:
        assert counts.loc[label, ["train", "dev", "test"]].tolist() == [96, 12, 12]
    assert counts["total"].sum() == len(frame)


def test_sentence_split_never_puts_a_test_sentence_in_train(frame):
    splits = assign_splits(frame, "sentence")
    test_sentences = set(frame["text"][splits == "test"])
    assert test_sentences and not test_sentences & set(frame["text"][splits != "test"])


def test_speaker_split_never_puts_a_test_speaker_in_train(frame):
    splits = assign_splits(frame, "speaker")
    per_split = {name: set(frame["speaker"][splits == name]) for name in ("train", "dev", "test")}
    assert [len(s) for s in per_split.values()] == [4, 1, 1]
    assert not per_split["test"] & (per_split["train"] | per_split["dev"])


def test_few_speakers(frame):
    three = frame[frame["speaker"].isin(["spk0", "spk1", "spk2"])]
    assert sorted(assign_splits(three, "speaker").value_counts().tolist()) == [60, 60, 60]
    two = frame[frame["speaker"].isin(["spk0", "spk1"])]
    with pytest.raises(ValueError, match="at least 3 speakers, got 2"):
        assign_splits(two, "speaker")
    # Without a dev split two speakers are enough.
    assert set(assign_splits(two, "speaker", ratios=(0.5, 0, 0.5))) == {"train", "test"}


def test_label_with_one_unit_stays_in_train():
    frame = pd.DataFrame({"text": ["a", "b", "c", "d", "e"], "label": ["x", "x", "x", "x", "rare"]})
    splits = assign_splits(frame, "sentence")
    assert splits[4] == "train"


def test_check_leakage_names_the_offenders(frame):
    # spk0's first 30 clips in test: their sentences, and spk0, are in train too.
    splits = pd.Series(np.where(np.arange(len(frame)) < 30, "test", "train"), index=frame.index)
    with pytest.raises(LeakageError, match="test sentence"):
        check_leakage(frame, splits, "sentence")
    with pytest.raises(LeakageError, match="test speaker.*spk"):
        check_leakage(frame, splits, "speaker")
    check_leakage(frame, splits, "clip")  # promises nothing


def test_bad_arguments(frame):
    with pytest.raises(ValueError, match="split_by"):
        assign_splits(frame, "script")
    with pytest.raises(ValueError, match="ratios"):
        assign_splits(frame, "clip", ratios=(0.5, 0.5))
