"""Prediction over many clips: a manifest (only its `audio` column is required) or a split of the
reference's pickles, into one predictions.csv."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from audiotext.data.corpus import load_split, resolve_split_path
from audiotext.data.manifest import ManifestError, is_manifest, read_manifest, split_rows
from audiotext.data.media import MediaError, load_audio
from audiotext.inference.predict import probability_columns
from audiotext.inference.recognizer import EmotionRecognizer
from audiotext.io import atomic_path


def predict_manifest(
    recognizer: EmotionRecognizer,
    source: str | Path,
    out: str | Path,
    split: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> Path:
    """Writes `out`: id, audio, text, prediction, p_<label> of every class, and true_value where
    the source gives a label. Rows without a transcript are transcribed offline when the model
    reads text. The CSV appears only once every clip is predicted."""
    source, out = Path(source), Path(out)
    rows = _manifest_rows(source, split) if is_manifest(source) else _pickle_rows(source, split, recognizer)
    known = set(recognizer.labels)
    for row in rows:
        if row["label"] and row["label"] not in known:
            raise ManifestError(f"{row['where']}: label {row['label']!r} is not one of the model's: {', '.join(recognizer.labels)}")

    probabilities = []
    # Closed on an error too, so that the error's line starts on a line of its own.
    with tqdm(total=len(rows), desc="predict", unit="clip", disable=not progress) as bar:
        for batch in recognizer.iter_proba(_clips(rows, recognizer), batch_size=batch_size, read=_read_row):
            probabilities.append(batch)
            bar.update(len(batch))

    labels = recognizer.labels
    probs = np.concatenate(probabilities) if probabilities else np.zeros((0, len(labels)))
    table = pd.DataFrame({
        "id": [row["id"] for row in rows],
        "audio": [row["audio"] for row in rows],
        "text": [row["text"] or "" for row in rows],
        "prediction": [labels[i] for i in probs.argmax(1)],
        **probability_columns(probs, labels),
    })  # fmt: skip
    if any(row["label"] for row in rows):
        table["true_value"] = [row["label"] for row in rows]
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return out


def _manifest_rows(manifest: Path, split: str | None) -> list[dict]:
    frame = read_manifest(manifest, required=("audio",))
    if split is not None:
        frame = split_rows(frame, manifest, split, setting="--split")
    return [
        {"id": row.row, "where": f"{manifest}: row {row.row}", "audio": row.audio, "path": row.audio_path,
         "segment": (None if math.isnan(row.start) else row.start, None if math.isnan(row.end) else row.end),
         "text": row.text, "label": row.label}
        for row in frame.itertuples(index=False)
    ]  # fmt: skip


def _pickle_rows(folder: Path, split: str | None, recognizer: EmotionRecognizer) -> list[dict]:
    """A split of the reference's pickles; its clips are at the rate the model was trained on,
    the only rate such a file can be at (it does not record one)."""
    if split is None:
        raise ValueError(f"{folder}: name the split to predict (--split test), or give a manifest file")
    path = resolve_split_path(folder, split)
    loaded = load_split(path, recognizer.labels)
    rate = recognizer.cfg.audio.sample_rate
    return [
        {"id": i, "where": loaded.where(i), "audio": f"{path.name}:{i}", "samples": (clip, rate),
         "text": sentence, "label": recognizer.labels[label]}
        for i, (clip, sentence, label) in enumerate(zip(loaded.audio, loaded.sentences, loaded.labels))
    ]  # fmt: skip


def _clips(rows: list[dict], recognizer: EmotionRecognizer):
    """(row, transcript or None, name) of each row, for `_read_row` to decode where the features are
    computed. A row without a transcript is decoded here and transcribed offline when the model
    reads text; the row keeps what was heard, for the CSV."""
    for row in rows:
        clip = row
        if recognizer.needs_transcript(row["text"]):
            clip = {**row, "samples": _read_row(row)}
            row["text"] = recognizer.transcribe(*clip["samples"], name=row["where"])
        yield clip, row["text"] or None, row["where"]


def _read_row(row: dict, sampling_rate: int | None = None, where: str | None = None) -> tuple[np.ndarray, int]:
    """(samples, rate) of a row: the reader `iter_proba` is given (a row carries its own rate and name)."""
    if "samples" in row:
        return row["samples"]
    try:
        return load_audio(row["path"], *row["segment"])
    except MediaError as err:
        raise ManifestError(f"{row['where']}, column 'audio': {err}") from None
