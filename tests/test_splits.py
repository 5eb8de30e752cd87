"""Partitions: stratified by label, and no test sentence or speaker in train when promised."""

import unicodedata

import numpy as np
import pandas as pd
import pytest

from audiotext.data.splits import LeakageError, assign_folds, assign_splits, check_leakage, fold_splits, split_counts

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


def test_check_leakage_watches_dev_as_well_as_train(frame):
    """A test sentence or speaker that reaches only dev still steered the model (its epoch choice)."""
    splits = pd.Series("train", index=frame.index)
    test_sentence = frame["text"].iloc[0]
    splits[frame["text"] == test_sentence] = "dev"
    splits[frame.index[0]] = "test"
    with pytest.raises(LeakageError, match="1 test sentence.* also in dev"):
        check_leakage(frame, splits, "sentence")
    test_speaker = frame["speaker"].iloc[0]
    splits = pd.Series(np.where(frame["speaker"] == test_speaker, "dev", "train"), index=frame.index)
    splits[frame.index[0]] = "test"
    with pytest.raises(LeakageError, match="1 test speaker.* also in dev"):
        check_leakage(frame, splits, "speaker")


def test_bad_arguments(frame):
    with pytest.raises(ValueError, match="split_by"):
        assign_splits(frame, "script")
    with pytest.raises(ValueError, match="ratios"):
        assign_splits(frame, "clip", ratios=(0.5, 0.5))


def corpus_frame(n_speakers: int = 4, n_sentences: int = 30, labels: str = "abc") -> pd.DataFrame:
    """Every speaker reads every sentence; sentence i has label i mod len(labels)."""
    return pd.DataFrame(
        [{"speaker": f"s{s}", "text": f"sentence {i}", "label": labels[i % len(labels)]}
         for s in range(n_speakers) for i in range(n_sentences)]  # fmt: skip
    )


@pytest.mark.parametrize("split_by", ["speaker", "sentence"])
def test_folds_never_share_a_speaker_or_sentence_and_each_fold_tests_once(split_by):
    frame = corpus_frame()
    folds = assign_folds(frame, 4, split_by, seed=3)
    column = "speaker" if split_by == "speaker" else "text"
    assert frame.assign(fold=folds).groupby(column)["fold"].nunique().max() == 1
    assert sorted(set(folds)) == [0, 1, 2, 3]
    tested = np.zeros(len(frame), dtype=int)
    for fold in range(4):
        names = pd.Series(fold_splits(folds, fold))
        check_leakage(frame, names, split_by)
        assert set(names) == {"train", "dev", "test"}
        tested += (names == "test").to_numpy()
    assert (tested == 1).all()
    if split_by == "sentence":  # dealt within each label: every fold holds every label
        assert frame.assign(fold=folds).groupby("fold")["label"].nunique().min() == 3


def test_spellings_of_one_sentence_never_cross_a_sentence_split_or_fold():
    spellings = [lambda t: t, lambda t: f"  {t.upper()}~", lambda t: unicodedata.normalize("NFD", t.replace(" ", "  "))]
    frame = pd.DataFrame([{"speaker": 0, "text": spell(f"문장 {i} 입니다 ok"), "label": "ab"[i % 2]}
                          for i in range(20) for spell in spellings])  # fmt: skip
    read_as = frame["text"].map(lambda t: unicodedata.normalize("NFC", " ".join(t.split()).strip("~").casefold()))
    splits = assign_splits(frame, "sentence", seed=0)
    assert splits.groupby(read_as).nunique().max() == 1
    assert set(splits) == {"train", "dev", "test"}
    folds = assign_folds(frame, 4, "sentence", seed=0)
    assert pd.Series(folds).groupby(read_as).nunique().max() == 1
    leaked = splits.copy()
    leaked[(read_as == read_as[splits == "test"].iloc[0]) & (frame["text"] == frame["text"].str.strip())] = "train"
    with pytest.raises(LeakageError, match="test sentence"):
        check_leakage(frame, leaked, "sentence")


def test_folds_refuse_a_number_the_corpus_cannot_give():
    with pytest.raises(ValueError, match=r"--folds 5 by speaker: .* 3 to 4 \(the corpus has 4 speakers\)"):
        assign_folds(corpus_frame(), 5, "speaker")
    with pytest.raises(ValueError, match="3 to"):
        assign_folds(corpus_frame(), 2, "sentence")


def one_label(n: int, index=None) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"s{i}" for i in range(n)], "label": "x", "speaker": [f"p{i}" for i in range(n)]},
                        index=index)  # fmt: skip


def test_ratios_are_shares_of_their_sum_and_remainders_go_to_the_largest_fraction():
    frame = one_label(10)
    # 10 x (0.15, 0.45, 0.40) = 1.5, 4.5, 4: floors 1, 4, 4; the one unit left goes to the first of
    # the two largest remainders (train), not to the largest share (dev).
    counts = assign_splits(frame, "clip", ratios=(0.15, 0.45, 0.40)).value_counts().to_dict()
    assert counts == {"train": 2, "dev": 4, "test": 4}
    assert assign_splits(frame, "clip", ratios=(15, 45, 40)).value_counts().to_dict() == counts


def test_a_held_out_split_gets_a_unit_when_asked_for_and_none_when_not():
    frame = one_label(5)
    assert assign_splits(frame, "clip", ratios=(0.9, 0.05, 0.05)).value_counts().to_dict() == {"train": 3, "dev": 1, "test": 1}
    assert set(assign_splits(frame, "clip", ratios=(0.5, 0, 0.5))) == {"train", "test"}
    assert assign_splits(one_label(1), "clip", ratios=(0.5, 0.25, 0.25)).tolist() == ["train"]  # train keeps its one


@pytest.mark.parametrize("ratios", [(0, 0.5, 0.5), (0.8, -0.1, 0.3), (0.8, 0.2), (float("nan"), 0.1, 0.1),
                                    (float("inf"), 1, 1)])
def test_ratios_without_train_negative_not_finite_or_not_three_are_refused(ratios):
    # A NaN share gave every clip to test, without a word.
    with pytest.raises(ValueError, match="ratios must be three finite non-negative shares"):
        assign_splits(one_label(10), "clip", ratios=ratios)


@pytest.mark.parametrize("split_by", ["clip", "sentence", "speaker"])
def test_splits_are_indexed_like_the_frame(split_by):
    frame = one_label(12, index=range(100, 112))
    splits = assign_splits(frame, split_by)
    assert list(splits.index) == list(frame.index) and splits.name == "split"


def test_split_counts_put_train_dev_test_first_other_splits_after_and_zeros_where_empty():
    labels = pd.Series(["a", "a", "b", "b"])
    table = split_counts(labels, pd.Series(["train", "held", "train", "test"]))
    assert list(table.columns) == ["train", "dev", "test", "held", "total"]
    assert table.loc["a"].to_dict() == {"train": 1, "dev": 0, "test": 0, "held": 1, "total": 2}
    assert table.index.name == "label"
