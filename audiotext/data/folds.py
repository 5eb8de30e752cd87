"""K speaker- or sentence-independent folds of a prepared corpus, each written as a corpus of its own
(train, dev, test) that every command reads like any other.

The corpus's train, dev and test splits are pooled and dealt into folds (`assign_folds`); fold i
tests on its own clips and picks epochs on the next fold's. A folder of pickles gives folders of
pickles; a manifest gives manifests that point at the same audio files, so nothing is decoded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audiotext.data.corpus import Split, write_reference_pickle
from audiotext.data.manifest import LABELS_FILE, ManifestClips, load_any_split
from audiotext.data.splits import SPLITS, assign_folds, check_leakage, fold_splits
from audiotext.io import atomic_path, write_json

FOLD_MANIFEST = "manifest.csv"


def write_fold_corpora(
    data_path: str | Path, labels: Sequence[str], sample_rate: int, k: int, split_by: str, seed: int, out: str | Path
) -> list[Path]:
    """Writes fold i of `data_path` to out/fold{i}/ and returns each fold's data path."""
    parts = [load_any_split(data_path, name, labels, sample_rate) for name in SPLITS]
    frame = pd.DataFrame(
        {
            "speaker": [s for part in parts for s in part.speakers],
            "text": [s for part in parts for s in part.sentences],
            "label": [labels[i] for part in parts for i in part.labels],
        }
    )
    folds = assign_folds(frame, k, split_by, seed)
    from_manifest = all(isinstance(part.audio, ManifestClips) for part in parts)
    audio = [] if from_manifest else [clip for part in parts for clip in part.audio]
    written = []
    for fold in range(k):
        names = pd.Series(fold_splits(folds, fold))
        check_leakage(frame, names, split_by)
        folder = Path(out) / f"fold{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / LABELS_FILE, list(labels))
        if from_manifest:
            written.append(_write_manifest(folder / FOLD_MANIFEST, parts, frame, names))
        else:
            for name in SPLITS:
                rows = np.flatnonzero(names == name)
                write_reference_pickle(folder / f"{name}.pkl", frame["speaker"][rows].tolist(),
                                       [audio[i] for i in rows], frame["text"][rows].tolist(),
                                       frame["label"][rows].tolist())  # fmt: skip
            written.append(folder)
    return written


def _write_manifest(path: Path, parts: list[Split], frame: pd.DataFrame, names: pd.Series) -> Path:
    clips = [part.audio for part in parts]
    segments = [segment for c in clips for segment in c.segments]
    rows = frame.assign(
        audio=[str(Path(p).resolve()) for c in clips for p in c.paths],
        start=[start for start, _ in segments],
        end=[end for _, end in segments],
        split=names.to_numpy(),
    )
    with atomic_path(path) as tmp:
        rows[["audio", "text", "label", "speaker", "split", "start", "end"]].to_csv(tmp, index=False)
    return path
