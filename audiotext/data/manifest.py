"""Manifests: one row per clip, in CSV (header row) or JSON Lines (one object per line).

Columns:
- `audio`: media file, relative to the manifest's folder (or absolute); any format `media.load_audio`
  reads: wav, flac, mp3, ogg, m4a, or the audio track of an mp4/mkv/m2ts video.
- `text`: what is said; `label`: the class, any string in any language.
- optional `speaker` (integer id, or any name: names get the index of their sorted position),
  `split` (train/dev/test or any name), `start` and `end` (seconds: a segment of a longer file).

Row numbers in errors count data rows from 1 (a CSV's header is not a row; a JSON Lines file's
row n is its line n).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from audiotext.data.corpus import CorpusError, Split, load_split, resolve_split_path
from audiotext.data.media import MediaError, load_audio
from audiotext.features.audio import resample_keeping_dtype
from audiotext.io import file_digest, folder_digest

REQUIRED_COLUMNS = ("audio", "text", "label")
OPTIONAL_COLUMNS = ("speaker", "split", "start", "end")
LABELS_FILE = "labels.json"
MIN_LABEL_CLIPS = 3  # a label on fewer clips than this is more likely a typo than a class


MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


def is_manifest(path: str | Path) -> bool:
    return Path(path).suffix.lower() in MANIFEST_SUFFIXES


def data_labels(data_path: str | Path) -> list[str] | None:
    """The label set a data source declares (a manifest, or a folder with labels.json); None if none."""
    data_path = Path(data_path)
    if is_manifest(data_path) or (data_path / LABELS_FILE).is_file():
        return read_label_set(data_path)
    return None


class ManifestError(CorpusError):
    """A manifest that cannot be used; the message names the manifest, the row and the column."""


def read_manifest(path: str | Path, required: Sequence[str] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """The manifest's rows as strings (start/end as floats or NaN), columns as in the module docstring,
    plus `row` (1-based) and `audio_path` (resolved against the manifest's folder).

    A column of REQUIRED_COLUMNS that `required` leaves out (prediction needs only the audio) may
    be missing: it is then empty in every row."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            frame, rows = _read_jsonl(path)
        elif path.suffix.lower() in (".csv", ".tsv"):
            # All strings: pandas would turn speaker "007" into 7 and a label "NA" into NaN.
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
            if not isinstance(frame.index, pd.RangeIndex):  # pandas takes a first column the header lacks as the index
                raise ManifestError(f"{path}: the rows hold more fields than the header names ({', '.join(frame.columns)})")
            # pandas renames a repeated column ("label", "label.1") and the first would be read unsaid.
            header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False, encoding="utf-8")
            _require_columns_once(list(header.iloc[0]), path, "in its header")
            rows = np.arange(1, len(frame) + 1)
        else:
            raise ManifestError(f"{path}: unknown manifest format {path.suffix!r} (expected .csv, .tsv or .jsonl)")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text (byte {err.start} cannot be read as UTF-8): save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{path}: the file is empty (expected a header row, then one row per clip)") from None
    except pd.errors.ParserError as err:
        raise ManifestError(f"{path}: not a well-formed table ({str(err).strip()})") from None
    if frame.empty:
        raise ManifestError(f"{path}: no rows (one row per clip is expected)")
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(map(str, frame.columns))})"
        )
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame = frame[[c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]].copy()
    if path.suffix.lower() in (".csv", ".tsv"):  # the columns read, all strings still
        _check_one_line_fields(frame, path)
    frame.insert(0, "row", rows)
    for column in REQUIRED_COLUMNS + tuple(c for c in ("speaker", "split") if c in frame.columns):
        frame[column] = frame[column].map(_field_text)
    # A label typed decomposed (NFD, as macOS file names are) is the same class as the composed one.
    frame["label"] = frame["label"].map(lambda label: unicodedata.normalize("NFC", label))
    for column in ("start", "end"):
        frame[column] = (
            [_seconds(value, path, row, column) for row, value in zip(frame["row"], frame[column])]
            if column in frame.columns
            else math.nan
        )
    for row, audio in zip(frame["row"], frame["audio"]):
        if not audio:
            raise ManifestError(f"{path}: row {row}, column 'audio' is empty")
    frame["audio_path"] = [str(path.parent / audio) for audio in frame["audio"]]  # an absolute one wins
    return frame


def _field_text(value: object) -> str:
    """A field as text: None and NaN (a key absent from some JSON lines) are empty, and a JSON number
    is written as JSON means it: speaker 1.0 (as pandas writes an integer column holding a NaN) is
    speaker 1, not a name of its own that splits one speaker in two."""
    if value is None or value != value:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _check_one_line_fields(frame: pd.DataFrame, path: Path) -> None:
    """Refuses a field holding a line break: a transcript is one line, and the usual cause is a stray
    quote (`"Quiet` opens a quoted field that runs on to the next quote, swallowing the rows between
    into one, whose label is then another row's)."""
    for column in frame.columns:
        broken = frame[column].str.contains("\n|\r", regex=True)
        if broken.any():
            row = int(np.flatnonzero(broken.to_numpy())[0]) + 1
            raise ManifestError(f"{path}: row {row}, column {column!r} runs over several lines: a field that starts "
                                'with a quote (") runs on to the next one; put such a field in quotes, each '
                                'quote inside it doubled (""), or use JSON Lines')  # fmt: skip


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """The objects of a JSON Lines file, and the line each came from (its row number)."""
    rows, numbers = [], []
    # utf-8-sig: a byte order mark, as Windows editors write, would make row 1 invalid JSON (pandas skips it in a CSV).
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():  # a blank line (a trailing one, say) holds no clip
            continue
        try:
            pairs = json.loads(line, object_pairs_hook=tuple)  # an object's keys as written: a repeated one too
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path}: row {number} is not valid JSON ({err.msg})") from None
        if not isinstance(pairs, tuple):  # an array is a list
            raise ManifestError(f"{path}: row {number} is not a JSON object")
        _require_columns_once([key for key, _ in pairs], path, f"in row {number}")
        rows.append(dict(pairs))
        numbers.append(number)
    return pd.DataFrame(rows, dtype=object), numbers


def _require_columns_once(names: list[str], path: Path, where: str) -> None:
    """Refuses a column the manifest is read by named twice (two `label` columns, an old and a
    corrected one): one of them would be read and the other ignored, unsaid."""
    repeated = sorted({name for name in names if name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) and names.count(name) > 1})
    if repeated:
        raise ManifestError(f"{path}: column(s) {', '.join(map(repr, repeated))} appear more than once {where}: "
                            "keep one of each")  # fmt: skip


def _seconds(value: object, path: Path, row: int, column: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()) or value != value:
        return math.nan
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{path}: row {row}, column {column!r} is not a number of seconds: {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ManifestError(f"{path}: row {row}, column {column!r} must be a non-negative time, got {value!r}")
    return seconds


def read_label_set(path: str | Path) -> list[str]:
    """The class labels: from a `labels.json` (or a folder holding one), else those the manifest's
    rows use, sorted by code point so that every reader derives the same class indices (for the
    reference's Korean labels this is the reference's own order)."""
    path = Path(path)
    if path.is_dir():
        path = path / LABELS_FILE
    if path.suffix.lower() == ".json":
        try:
            labels = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ManifestError(f"{path}: not a readable label list ({err})") from None
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise ManifestError(f"{path}: expected a non-empty JSON list of label strings")
        return labels
    frame = read_manifest(path)
    for row, label in zip(frame["row"], frame["label"]):
        if not label:
            raise ManifestError(f"{path}: row {row}, column 'label' is empty")
    return sorted(set(frame["label"]))


def speaker_ids(speakers: Sequence[str]) -> list[int]:
    """Integer ids as they are; otherwise each name's index among the sorted names; blank → -1.

    Ids are integers only when every one is plain ASCII digits that fit in int64 and no two are the
    same number written differently ("007" and "7" are two speakers, "²" no number)."""
    named = sorted({s for s in speakers if s})
    numbers = {int(s) for s in named if re.fullmatch(r"-?[0-9]+", s) and -(2**63) <= int(s) < 2**63}
    if len(numbers) == len(named):
        return [int(s) if s else -1 for s in speakers]
    index = {name: i for i, name in enumerate(named)}
    return [index[s] if s else -1 for s in speakers]


def split_rows(frame: pd.DataFrame, path: Path, split: str, setting: str = "split") -> pd.DataFrame:
    """The rows of a manifest's `frame` (read from `path`) in `split`; ManifestError naming `setting`
    and the manifest's splits when there are none: a mistyped split would be an empty one."""
    if "split" not in frame.columns:
        raise ManifestError(f"{path}: asked for split {split!r} but the manifest has no 'split' column")
    require_distinct_splits(frame, path)
    rows = frame[frame["split"] == split]
    if rows.empty:
        splits = ", ".join(map(repr, sorted(set(frame["split"]))))
        raise ManifestError(f"{path}: no rows with {setting} {split!r}; the manifest's splits are {splits}")
    return rows


def require_distinct_splits(frame: pd.DataFrame, path: Path) -> None:
    """Refuses split names that differ only in case ("test" and "Test"): the rows of one would be
    left out of the split the other names, unsaid, and where file names ignore case (macOS, Windows)
    one split's pickle would replace the other's."""
    first_of = {}
    for row, name in zip(frame["row"], frame["split"]):
        seen = first_of.setdefault(name.casefold(), (row, name))
        if seen[1] != name:
            raise ManifestError(f"{path}: row {row}, column 'split' is {name!r}, but row {seen[0]}'s is {seen[1]!r}: "
                                "split names that differ only in case would be two splits; write them alike")  # fmt: skip


def load_manifest_split(
    path: str | Path,
    split: str | None,
    labels: Sequence[str] | None,
    sample_rate: int,
    progress: bool = False,
    with_audio: bool = True,
) -> Split:
    """The rows of `split` (all rows when None) as a `Split`, every clip mono at `sample_rate`
    (resampled with soxr where the file's rate differs; int16 sources stay int16).

    `labels` defaults to `read_label_set(path)`. `with_audio=False` decodes nothing (for text models).
    """
    path = Path(path)
    frame = read_manifest(path)
    labels = list(labels) if labels is not None else read_label_set(path)
    # Numbered over the whole manifest: a name numbered split by split would get another id in each
    # split and share ids with others, and speaker-independent folds would mix speakers.
    speakers = speaker_ids(list(frame["speaker"])) if "speaker" in frame.columns else [-1] * len(frame)
    frame = frame.assign(speaker_id=speakers)
    if split is not None:
        frame = split_rows(frame, path, split)
    label_index = {label: i for i, label in enumerate(labels)}
    label_ids = []
    for row in tqdm(frame.itertuples(index=False), total=len(frame), desc=f"{path.name}", disable=not progress):
        where = f"{path}: row {row.row}"
        if not row.text:
            raise ManifestError(f"{where}, column 'text' is empty")
        if row.label not in label_index:
            raise ManifestError(
                f"{where}, column 'label' has unknown label {row.label!r}; known labels: {', '.join(labels)}"
            )
        label_ids.append(label_index[row.label])
        if with_audio and not Path(row.audio_path).is_file():
            raise ManifestError(f"{where}, column 'audio': {row.audio_path}: unreadable path (no such file)")
    audio = ManifestClips(path, frame, sample_rate) if with_audio else []
    return Split(split or path.stem, path, list(frame["speaker_id"]), audio, list(frame["text"]),
                 np.asarray(label_ids, np.int64), rows=list(frame["row"]))  # fmt: skip


class ManifestClips(Sequence[np.ndarray]):
    """The clips of a manifest's rows, each decoded when it is read and then dropped, so a split of
    any size costs the memory of one clip: features are computed one clip at a time, and from the
    feature cache no clip is decoded at all."""

    def __init__(self, manifest: Path, frame: pd.DataFrame, sample_rate: int) -> None:
        self.manifest, self.sample_rate = manifest, sample_rate
        self.rows = frame["row"].tolist()
        self.paths = frame["audio_path"].tolist()
        self.segments = [(None if math.isnan(s) else s, None if math.isnan(e) else e)
                         for s, e in zip(frame["start"], frame["end"])]  # fmt: skip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        try:
            clip, rate = load_audio(self.paths[i], *self.segments[i])
        except MediaError as err:
            raise ManifestError(f"{self.manifest}: row {self.rows[i]}, column 'audio': {err}") from None
        return resample_keeping_dtype(clip, rate, self.sample_rate)

    def identity(self, i: int) -> bytes:
        """What clip i's samples are made of: the bytes of its file, its segment and the rate it is
        read at; hashing these instead of decoded samples decodes nothing."""
        return file_digest(self.paths[i]) + repr((self.segments[i], self.sample_rate)).encode()


def load_any_split(
    data_path: str | Path, split: str, labels: Sequence[str], sample_rate: int, with_audio: bool = True
) -> Split:
    """A split from any source: `split` names a split of `data_path` (a folder of pickles, or a
    manifest with a split column), or is a .pkl file or a manifest of its own."""
    if is_manifest(split):
        _require_one_split(split)
        return load_manifest_split(split, None, labels, sample_rate, with_audio=with_audio)
    if is_manifest(data_path) and not str(split).endswith(".pkl"):
        return load_manifest_split(data_path, split, labels, sample_rate, with_audio=with_audio)
    return load_split(resolve_split_path(data_path, split), labels)


def require_split(data_path: str | Path, split: str) -> None:
    """Raises what `load_any_split` would for a split that is not there, reading no clip: a command
    naming several splits checks them all before it works on the first."""
    if is_manifest(split):
        if not Path(split).is_file():
            raise ManifestError(f"{split}: no such manifest file")
        _require_one_split(split)
    elif is_manifest(data_path) and not str(split).endswith(".pkl"):
        split_rows(read_manifest(data_path), Path(data_path), split)
    elif not resolve_split_path(data_path, split).is_file():
        raise CorpusError(f"{resolve_split_path(data_path, split)}: no such split file")


def _require_one_split(manifest: str | Path) -> None:
    """Refuses a manifest given as a split of its own whose split column names several: every row
    of it, the training rows too, would be scored as one test set."""
    frame = read_manifest(manifest)
    if "split" in frame.columns and frame["split"].nunique() > 1:
        splits = ", ".join(map(repr, sorted(set(frame["split"]))))
        raise ManifestError(f"{manifest} holds the splits {splits}: name one (--data_path {manifest} --split NAME)")


def corpus_digest(data_path: str | Path) -> str:
    """A hex digest of what a corpus is made of: a manifest and every audio file it names, or a
    folder's split files (pickles and manifests), so that work done on it can tell it has changed."""
    path = Path(data_path)
    if is_manifest(path):
        # A missing file is for loading to name, with its row.
        audio = sorted(a for a in set(read_manifest(path, required=("audio",))["audio_path"]) if Path(a).is_file())
        return (file_digest(path) + file_digest(*audio)).hex()
    return folder_digest(path)


def has_split(data_path: str | Path, split: str) -> bool:
    """Whether `data_path` (a folder of pickles or a manifest with a split column) holds `split`."""
    if is_manifest(data_path):
        frame = read_manifest(data_path)
        return "split" in frame.columns and bool((frame["split"] == split).any())
    return resolve_split_path(data_path, split).is_file()

