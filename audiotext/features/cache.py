"""Features computed once and kept on disk: MFCCs per clip, encoder states per distinct sentence.

An entry holds one split's features, keyed by a hash of everything they depend on: for MFCCs the
samples of every clip and the audio settings; for text states the normalised sentences, the
encoder's files (weights, vocabulary, out-of-fold states) and the maximum length; both include
`FEATURE_VERSION`, raised whenever the code computing them changes what it computes. So an
unchanged rerun, another model on the same corpus, or `test_stt` after `test` (the same clips)
finds the entry, and changing any input makes a new one.

Layout: ROOT/{audio,text}/KEY/ with `values.bin` (float16, all sequences end to end, read
memory-mapped), `offsets.npy` (where each sequence starts; int64, loaded without pickle) and
`entry.json` (what it was built from). An entry is written into a temporary folder and renamed
into place when complete, so a build killed halfway leaves nothing that passes for an entry.

float16 keeps a value to a relative error of 2^-11 (4.9e-4): MFCCs of -600..+100 dB-units move by
at most 0.3, under the spread between clips, and encoder states (|x| < 20) by under 0.01. Features
computed in memory (no cache) are kept as float16 too, and prediction rounds its features alike
(`as_stored`): a model sees the same values whether an entry was just built, found, or not used,
so a cold, a warm and an uncached run give the same figures, and a clip predicted alone the
probabilities `audiotext test` wrote for it.

Shape legend: N sequences, T_i steps of sequence i, F values per step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from audiotext.config import AudioConfig
from audiotext.errors import DataError
from audiotext.features.audio import iter_audio_features
from audiotext.features.ngrams import CharNgramEncoder
from audiotext.features.text import TextEncoder
from audiotext.io import write_json

FEATURE_VERSION = 1
STORED_DTYPE = np.float16
VALUES_FILE, OFFSETS_FILE, ENTRY_FILE = "values.bin", "offsets.npy", "entry.json"
KINDS = ("audio", "text")
CACHE_ENV = "AUDIOTEXT_CACHE"


def default_cache_dir() -> Path:
    """$AUDIOTEXT_CACHE, else ~/.cache/audiotext/features."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "audiotext" / "features")


def as_stored(values: np.ndarray) -> np.ndarray:
    """float32 `values` rounded as a cache entry keeps them (STORED_DTYPE)."""
    return np.asarray(values).astype(STORED_DTYPE).astype(np.float32)


class PackedSequences:
    """N variable-length sequences (T_i, F) stored end to end in one (sum T_i, F) STORED_DTYPE array,
    in memory or memory-mapped from a cache entry; an item comes out as a float32 tensor."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        if offsets[0] != 0 or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
            raise ValueError(f"offsets do not cut {len(values)} steps into sequences")
        self.values, self.offsets = values, offsets

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray | torch.Tensor]) -> "PackedSequences":
        arrays = [np.asarray(a, dtype=STORED_DTYPE) for a in arrays]
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        return cls(np.concatenate(arrays) if arrays else np.zeros((0, 0), STORED_DTYPE), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:  # (T_i, F)
        return torch.from_numpy(self.values[self.offsets[i] : self.offsets[i + 1]].astype(np.float32))

    @property
    def width(self) -> int:
        return self.values.shape[1]

    def lengths(self) -> np.ndarray:  # (N,)
        return np.diff(self.offsets)

    def mean_std(self, chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
        """Per-column mean and (unbiased) standard deviation over every step, in float64 and in
        chunks, so a memory-mapped corpus is never loaded whole."""
        count, total, squares = 0, np.zeros(self.width), np.zeros(self.width)
        for start in range(0, len(self.values), chunk):
            block = self.values[start : start + chunk].astype(np.float64)
            count, total, squares = count + len(block), total + block.sum(0), squares + (block**2).sum(0)
        mean = total / count
        return mean, np.sqrt(np.maximum(squares - count * mean**2, 0.0) / max(count - 1, 1))


@dataclass(frozen=True)
class EntryInfo:
    kind: str
    key: str
    path: Path
    facts: dict  # entry.json: what the entry was built from, its size and when

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir())


class FeatureCache:
    """A folder of feature entries; see the module docstring."""

    def __init__(self, root: str | Path | None = None, progress: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.progress = progress

    def packed(
        self,
        kind: str,
        key: str,
        n: int,
        compute: Callable[[], Iterable[np.ndarray | torch.Tensor]],
        facts: dict,
        what: str,
    ) -> PackedSequences:
        """The entry `key` of `kind` memory-mapped; built first from `compute()` (n sequences, in
        order) when absent. `what` names the features in the message saying which happened."""
        path = self.root / kind / key
        if path.exists() and not (path / ENTRY_FILE).is_file():
            # An entry is renamed into place whole, entry.json in it: one without was changed since.
            # Found after the build, it made the rename fail with a bare errno.
            raise _damaged(path, f"no {ENTRY_FILE}")
        if not path.exists():
            self._build(path, n, compute, {**facts, "kind": kind, "key": key})
            self._say(f"features: {what}: computed {n} and stored them in {path}")
        else:
            self._say(f"features: {what}: reused from the cache ({path})")
        return self.load(path)

    @staticmethod
    def load(path: Path) -> PackedSequences:
        try:
            facts = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
            offsets = np.load(path / OFFSETS_FILE, allow_pickle=False)
            shape = (int(offsets[-1]), facts["width"])
            values = (
                np.memmap(path / VALUES_FILE, dtype=STORED_DTYPE, mode="r", shape=shape)
                if shape[0]
                else np.zeros(shape, STORED_DTYPE)  # numpy cannot map an empty file
            )
        except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as err:  # written whole: changed since
            raise _damaged(path, err) from None
        return PackedSequences(values, offsets)

    def _build(self, path: Path, n: int, compute, facts: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir()
        try:
            lengths, width = [], 0
            # Streamed to disk one sequence at a time: memory stays at one clip's features.
            with open(tmp / VALUES_FILE, "wb") as values:
                for sequence in compute():
                    array = np.ascontiguousarray(np.asarray(sequence, dtype=STORED_DTYPE))
                    values.write(array.tobytes())
                    lengths.append(len(array))
                    width = array.shape[1]
            if len(lengths) != n:
                raise RuntimeError(f"feature cache: expected {n} sequences, got {len(lengths)}")
            np.save(tmp / OFFSETS_FILE, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            write_json(tmp / ENTRY_FILE, {**facts, "n": n, "steps": int(sum(lengths)), "width": width,
                                          "dtype": np.dtype(STORED_DTYPE).name, "created": time.time()})  # fmt: skip
            try:
                tmp.rename(path)
            except OSError:
                if not (path / ENTRY_FILE).is_file():  # not a twin build that finished first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _entry_paths(self) -> list[tuple[str, Path]]:
        return [(kind, path) for kind in KINDS for path in sorted((self.root / kind).glob("[!.]*"))
                if (path / ENTRY_FILE).is_file()]  # fmt: skip

    def entries(self) -> list[EntryInfo]:
        found = []
        for kind, path in self._entry_paths():
            try:
                facts = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise _damaged(path, err) from None
            found.append(EntryInfo(kind, path.name, path, facts))
        return found

    def clear(self) -> int:
        """Removes every entry (and what an interrupted build left, and damaged entries); returns
        how many entries."""
        n = len(self._entry_paths())
        for kind in KINDS:
            shutil.rmtree(self.root / kind, ignore_errors=True)
        return n

    def _say(self, message: str) -> None:
        if self.progress:
            tqdm.write(message)


def _damaged(path: Path, err: object) -> DataError:
    return DataError(f"feature cache entry {path} is damaged ({err}): remove it (or `audiotext features clear`) "
                     "and it is computed again")  # fmt: skip


def digest(*parts: object) -> str:
    """A hex key of JSON-able parts, numpy arrays (dtype, shape and bytes) and raw bytes."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(memoryview(np.ascontiguousarray(part)).cast("B"))
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\x00")
    return h.hexdigest()


def audio_features(
    clips: Sequence[np.ndarray],
    cfg: AudioConfig,
    cache: FeatureCache | None,
    progress: bool = True,
    name: str = "",
    where: Callable[[int], str] = "row {}".format,
) -> PackedSequences:
    """MFCCs (T_i, n_mfcc) of every clip: from `cache` (built there when absent), or computed in
    memory when `cache` is None. Raises ValueError naming (`where(i)`) a clip without features.

    Clips that can say what they are made of without being decoded (`identity(i)`, as files of a
    manifest can) are keyed by that; others by their samples."""
    desc = f"MFCC {name}".strip()
    if cache is None:
        return PackedSequences.from_arrays(iter_audio_features(clips, cfg, progress, desc, where))
    settings = dataclasses.asdict(cfg)
    identity = getattr(clips, "identity", None)
    identities = [identity(i) for i in range(len(clips))] if identity is not None else clips
    key = digest("mfcc", FEATURE_VERSION, settings, *identities)
    return cache.packed(
        "audio", key, len(clips), lambda: iter_audio_features(clips, cfg, progress, desc, where),
        facts={"what": "MFCC", "split": name, "settings": settings}, what=f"MFCC of {name or 'clips'}",
    )  # fmt: skip


def text_states(
    sentences: Sequence[str],
    encoder: TextEncoder | CharNgramEncoder,
    cache: FeatureCache | None,
    progress: bool = True,
    name: str = "",
) -> PackedSequences:
    """The encoder's last hidden layer (L_j, E) of each of the distinct, normalised `sentences`:
    from `cache` (built there when absent), or computed in memory when `cache` is None."""
    if cache is None:
        return PackedSequences.from_arrays(encoder.encode(sentences, progress=progress))
    key = digest("text", FEATURE_VERSION, encoder.fingerprint, encoder.max_len, list(sentences))
    what = "character n-grams" if isinstance(encoder, CharNgramEncoder) else "encoder states"
    return cache.packed(
        "text", key, len(sentences), lambda: encoder.encode(sentences, progress=progress),
        facts={"what": what, "split": name, "encoder": str(encoder.path), "max_len": encoder.max_len},
        what=f"{what} of {name or 'sentences'} ({len(sentences)} distinct sentences)",
    )  # fmt: skip
