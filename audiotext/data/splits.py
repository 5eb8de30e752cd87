"""Train/dev/test partitions that keep a promise about what the test set has never been seen.

- `clip`: clips drawn at random within each label. A sentence (and every speaker) can be in train
  and test, as the reference's main partition: a text model can memorise sentences.
- `sentence`: whole sentences drawn within each label (a sentence's label is its most common one),
  so no test sentence is ever in train: the honest test of text. Sentences that read the same to
  the text features (`sentence_units`) are one sentence.
- `speaker`: whole speakers drawn, so no test speaker is ever in train. Speakers usually speak every
  label, so this cannot stratify by drawing within a label; it draws speakers by their number, and
  the per-label counts follow the speakers' own mixes (printed by `split_counts`). Each split with a
  non-zero ratio needs at least one speaker: with fewer speakers than such splits it raises
  `ValueError`; with few speakers the shares are coarse (3 speakers always give 1/1/1).

Within a label, units are shuffled with `seed` and allocated by largest remainder, test first and
dev second getting at least one unit each when the label has enough units (a label with a single
unit stays in train).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from audiotext.errors import AudiotextError
from audiotext.features.text import normalize_text

SPLIT_BY = ("clip", "sentence", "speaker")
SPLITS = ("train", "dev", "test")


class LeakageError(AudiotextError, AssertionError):
    """A partition breaks the promise its `split_by` makes."""


def sentence_units(sentences: pd.Series) -> pd.Series:
    """Each row's sentence as the unit a sentence split deals: sentences that differ only in what the
    text features drop (spacing, symbols, case, HTML escapes, composed or decomposed Hangul) are one
    unit, named by the first of them in sorted order, so that no spelling of a test sentence trains.
    A corpus without such variants keeps its sentences, and its splits, as they were."""
    sentences = sentences.astype(str)
    unit_of = {}
    for text in sorted(set(sentences)):
        unit_of[text] = unit_of.setdefault(normalize_text(text).casefold(), text)
    return sentences.map(unit_of)


def _allocate(n_units: int, ratios: Sequence[float]) -> list[int]:
    """Units per split (train, dev, test): largest remainder, at least one held-out unit where possible."""
    shares = np.asarray(ratios, dtype=np.float64) / np.sum(ratios) * n_units
    counts = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - counts), kind="stable")[: n_units - counts.sum()]:
        counts[i] += 1
    for held_out in (2, 1):  # test, then dev, take a unit from train rather than stay empty
        if ratios[held_out] > 0 and counts[held_out] == 0 and counts[0] > 1:
            counts[held_out], counts[0] = 1, counts[0] - 1
    return counts.tolist()


def _draw(units: np.ndarray, ratios: Sequence[float], rng: np.random.Generator) -> dict:
    units = rng.permutation(units)
    n_train, n_dev, _ = _allocate(len(units), ratios)
    names = ["train"] * n_train + ["dev"] * n_dev
    return {unit: names[i] if i < len(names) else "test" for i, unit in enumerate(units.tolist())}


def check_split_request(frame: pd.DataFrame, split_by: str, ratios: Sequence[float], speaker: str = "speaker") -> None:
    """ValueError when `frame`'s rows cannot be split so: an unknown `split_by`, ratios that are not
    three finite non-negative shares with train > 0, or fewer speakers than splits to give them to.
    Checked before any clip is decoded too, since fewer rows only make it worse."""
    if split_by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
    if len(ratios) != 3 or not all(math.isfinite(r) and r >= 0 for r in ratios) or ratios[0] <= 0:
        raise ValueError(f"ratios must be three finite non-negative shares (train, dev, test), train > 0; got {list(ratios)}")
    if split_by == "speaker":
        require_speakers(frame, speaker, "a speaker split")
        speakers, needed = frame[speaker].nunique(), sum(r > 0 for r in ratios)
        if speakers < needed:
            raise ValueError(f"a speaker split with ratios {tuple(ratios)} needs at least {needed} speakers, got {speakers}")


def require_speakers(frame: pd.DataFrame, speaker: str, what: str) -> None:
    """Refuses rows without a speaker (-1) in a split by speaker: together they would pass for one
    speaker, counted towards the minimum and dealt to one split whoever they are."""
    unknown = frame[speaker] == -1
    if unknown.any():
        where = ""
        if "row" in frame.columns:  # a manifest's rows
            rows = list(frame["row"][unknown])
            where = " (row " + ", ".join(map(str, rows[:5])) + (", ...)" if len(rows) > 5 else ")")
        raise ValueError(f"{what} needs each clip's speaker; {int(unknown.sum())} have none{where}")


def assign_splits(
    frame: pd.DataFrame,
    split_by: str,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    label: str = "label",
    sentence: str = "text",
    speaker: str = "speaker",
) -> pd.Series:
    """Each row's split ("train", "dev" or "test"), indexed like `frame`; see the module docstring."""
    check_split_request(frame, split_by, ratios, speaker)
    rng = np.random.default_rng([seed])
    labels = frame[label].to_numpy()
    if split_by == "speaker":
        speakers = frame[speaker].to_numpy()
        split_of = _draw(np.unique(speakers), ratios, rng)
        return pd.Series([split_of[s] for s in speakers], index=frame.index, name="split", dtype=object)

    assignment = np.empty(len(frame), dtype=object)
    if split_by == "clip":
        for value in sorted(set(labels)):
            rows = np.flatnonzero(labels == value)
            split_of = _draw(rows, ratios, rng)
            assignment[rows] = [split_of[i] for i in rows]
    else:
        units = sentence_units(frame[sentence])
        sentences = units.to_numpy()
        # A sentence's stratum is its most common label (ties: the first in sorted order).
        stratum = frame[label].groupby(units, sort=True).agg(lambda s: sorted(s.mode())[0])
        for value in sorted(set(stratum)):
            split_of = _draw(np.asarray(stratum.index[stratum == value], dtype=object), ratios, rng)
            rows = np.flatnonzero(np.isin(sentences, list(split_of)))
            assignment[rows] = [split_of[s] for s in sentences[rows]]
    return pd.Series(assignment, index=frame.index, name="split", dtype=object)


def check_leakage(
    frame: pd.DataFrame, splits: pd.Series, split_by: str, sentence: str = "text", speaker: str = "speaker"
) -> None:
    """Raises `LeakageError` naming the offenders if a test sentence (split_by="sentence") or test
    speaker (split_by="speaker") is also in train or dev; a clip split promises nothing of the kind."""
    if split_by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
    if split_by == "clip":
        return
    column = sentence_units(frame[sentence]) if split_by == "sentence" else frame[speaker]
    held_out = set(column[splits == "test"])
    for other in ("train", "dev"):
        leaked = held_out & set(column[splits == other])
        if leaked:
            shown = ", ".join(map(repr, sorted(map(str, leaked))[:5]))
            raise LeakageError(f"{len(leaked)} test {split_by}(s) also in {other}: {shown}")


def split_counts(labels: pd.Series, splits: pd.Series) -> pd.DataFrame:
    """Clips per label (rows) and split (columns train, dev, test, any other split names, total)."""
    table = pd.crosstab(labels, splits).reindex(columns=[*SPLITS, *sorted(set(splits) - set(SPLITS))], fill_value=0)
    table["total"] = table.sum(axis=1)
    table.index.name, table.columns.name = "label", None
    return table


FOLD_BY = ("speaker", "sentence")


def assign_folds(
    frame: pd.DataFrame, k: int, split_by: str, seed: int = 0, label: str = "label", sentence: str = "text",
    speaker: str = "speaker",
) -> np.ndarray:  # fmt: skip
    """(N,) fold 0..k-1 of each row, whole speakers or whole sentences to a fold.

    Speakers are shuffled and dealt to the folds in turn; sentences likewise within each label (a
    sentence's label is its most common one), so every fold holds every label where it can.
    """
    if split_by not in FOLD_BY:
        raise ValueError(f"folds are split by one of {FOLD_BY}, got {split_by!r}")
    if split_by == "speaker":
        require_speakers(frame, speaker, "folds by speaker")
    column = frame[speaker] if split_by == "speaker" else sentence_units(frame[sentence])
    units = np.unique(column.to_numpy())
    if not 3 <= k <= len(units):
        raise ValueError(
            f"--folds {k} by {split_by}: folds give test, dev and train one fold each, so 3 to {len(units)} "
            f"(the corpus has {len(units)} {split_by}s)"
        )
    rng = np.random.default_rng([seed])
    if split_by == "speaker":
        groups = [units]
    else:
        stratum = frame[label].groupby(column, sort=True).agg(lambda s: sorted(s.mode())[0])
        groups = [np.asarray(stratum.index[stratum == value], dtype=object) for value in sorted(set(stratum))]
    fold_of, dealt = {}, 0
    for group in groups:
        for unit in rng.permutation(group).tolist():
            fold_of[unit] = dealt % k  # carried across labels, so no fold collects every label's remainder
            dealt += 1
    return np.asarray([fold_of[unit] for unit in column.tolist()], dtype=np.int64)


def fold_splits(folds: np.ndarray, fold: int) -> np.ndarray:
    """(N,) "train", "dev" or "test" for `fold`: it is the test set, the next fold the dev set."""
    k = int(folds.max()) + 1
    names = np.full(len(folds), "train", dtype=object)
    names[folds == fold] = "test"
    names[folds == (fold + 1) % k] = "dev"
    return names
