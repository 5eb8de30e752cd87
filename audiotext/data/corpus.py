"""Loading and validating corpus splits stored in the reference's pickle format.

A split is a pandas DataFrame pickle with one row per clip. The reference spells its columns
`person_ix, audio, Sentence, Emotion`; a later revision spells them `person_idx, audio, sentence,
emotion`. Both load into the canonical names below.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audiotext.errors import DataError
from audiotext.features.audio import check_samples
from audiotext.io import atomic_path

CANONICAL_COLUMNS = ("speaker", "audio", "sentence", "emotion")
_COLUMN_SPELLINGS = {
    "speaker": ("person_ix", "person_idx", "speaker"),
    "audio": ("audio",),
    "sentence": ("Sentence", "sentence"),
    "emotion": ("Emotion", "emotion"),
}


class CorpusError(DataError):
    """A split that cannot be used; the message names the file, the row and the problem."""


@dataclass
class Split:
    """One split: per-clip arrays, aligned by index."""

    name: str
    path: Path
    speakers: list[int]
    audio: Sequence[np.ndarray]  # raw 1-D clips at the corpus sample rate (a manifest's decode when read)
    sentences: list[str]
    labels: np.ndarray  # (N,) class indices into the label list
    rows: list[int] | None = None  # each clip's row in its file, for messages; None: positions 0..N-1

    def __len__(self) -> int:
        return len(self.labels)

    def where(self, i: int) -> str:
        """'FILE: row R' of clip i, as error messages name it."""
        return f"{self.path}: row {i if self.rows is None else self.rows[i]}"


def write_reference_pickle(
    path: str | Path, speakers: Sequence[int], audio: Sequence[np.ndarray], sentences: Sequence[str], labels: Sequence[str]
) -> None:
    """Writes one split in the reference's format (person_ix, audio, Sentence, Emotion), atomically."""
    frame = pd.DataFrame(
        {
            "person_ix": np.asarray(speakers, dtype=np.int64),
            "audio": pd.Series(list(audio), dtype=object),
            # object, not pandas' string dtype, so that the pickles load with older pandas too.
            "Sentence": pd.Series(list(sentences), dtype=object),
            "Emotion": pd.Series(list(labels), dtype=object),
        }
    )
    with atomic_path(path) as tmp:
        frame.to_pickle(tmp)


def resolve_split_path(data_path: str | Path, split: str) -> Path:
    """`split` is a split name inside `data_path` ("test_stt" → data_path/test_stt.pkl) or a .pkl file."""
    candidate = Path(split)
    return candidate if candidate.suffix == ".pkl" else Path(data_path) / f"{split}.pkl"


def load_split(path: str | Path, labels: Sequence[str]) -> Split:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such split file")
    try:
        frame = pd.read_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise CorpusError(f"{path}: not a readable pandas pickle ({err})") from err
    if not isinstance(frame, pd.DataFrame):
        raise CorpusError(f"{path}: holds a {type(frame).__name__}, expected a pandas DataFrame")
    frame = _canonical_columns(frame, path)
    label_index = {label: i for i, label in enumerate(labels)}

    audio, sentences, label_ids, speakers = [], [], [], []
    for position, row in enumerate(frame.itertuples(index=False)):
        where = f"{path}: row {position}"
        audio.append(_validated_audio(row.audio, where))
        sentence = row.sentence
        if not isinstance(sentence, str) or not sentence.strip():
            raise CorpusError(f"{where}: column 'sentence' is empty")
        sentences.append(sentence)
        if row.emotion not in label_index:
            raise CorpusError(
                f"{where}: column 'emotion' has unknown label {row.emotion!r}; known labels: {', '.join(labels)}"
            )
        label_ids.append(label_index[row.emotion])
        try:
            speakers.append(int(row.speaker))
        except (TypeError, ValueError):
            raise CorpusError(f"{where}: column 'speaker' is not an integer id: {row.speaker!r}") from None
    if not label_ids:
        raise CorpusError(f"{path}: the split has no rows")
    return Split(path.stem, path, speakers, audio, sentences, np.asarray(label_ids, dtype=np.int64))


def _canonical_columns(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    renames = {}
    for canonical, spellings in _COLUMN_SPELLINGS.items():
        found = [name for name in spellings if name in frame.columns]
        if not found:
            raise CorpusError(
                f"{path}: missing column {canonical!r} (expected one of {', '.join(spellings)}; "
                f"found {', '.join(map(str, frame.columns))})"
            )
        renames[found[0]] = canonical
    return frame.rename(columns=renames)[list(CANONICAL_COLUMNS)]


def _validated_audio(value: object, where: str) -> np.ndarray:
    try:
        clip = np.asarray(value)
    except (TypeError, ValueError):
        raise CorpusError(f"{where}: column 'audio' is not an array of samples") from None
    if clip.dtype.kind not in "iuf":
        raise CorpusError(f"{where}: column 'audio' is not numeric (dtype {clip.dtype})")
    if clip.ndim != 1:
        raise CorpusError(f"{where}: column 'audio' must be 1-D mono samples, got shape {clip.shape}")
    if clip.size == 0:
        raise CorpusError(f"{where}: column 'audio' is empty")
    try:
        check_samples(clip)
    except DataError as err:
        raise CorpusError(f"{where}: column 'audio': {err}") from None
    return clip
