"""Turns a raw corpus into the reference's split pickles, once, resumably.

`prepare_korean` reads the raw Korean corpus (actor folders `000` … `099` of `{actor}-{script_id}.m2ts`
videos and the script file); `prepare_manifest` reads any manifest (`audiotext.data.manifest`).
Both write into `out_dir`:

- `audio/{clip}.flac`: each clip's audio track, mono int16 at `sample_rate`, the cache a rerun
  resumes from (a clip already there at that rate, from a file of the same size and modification
  time, is not decoded again);
- `train.pkl`, `dev.pkl`, `test.pkl`: the reference's pickles (person_ix, audio int16, Sentence, Emotion);
- `manifest.csv` (audio, text, label, speaker, split; audio pointing into `audio/`), `labels.json`,
  `splits.json` (how the partition was drawn, counts per label, clips per split), `rejects.csv`
  (path, row, reason of every input left out), `prepare.json` (the job: its source and settings).

A folder is prepared by one job only: a rerun of the same job resumes it, anything else is refused,
so no split file of another job is left beside this one's. Duplicate clips (the same file and
segment, or the same samples) are kept once, and a segment overlapping a kept segment of the same
file is left out, so no copy or shared stretch of audio lands in two splits.

Every file is written beside its target and renamed into place, so an interrupted run leaves
nothing half-written. Bad inputs are left out and reported; the run fails only when nothing usable
remains, or at the first bad input's report with `strict`. Audio is decoded one file at a time and
only one split's clips are in memory at once (while its pickle is written).
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from audiotext.config import REFERENCE_LABELS, AudioConfig, checked_labels
from audiotext.data.corpus import write_reference_pickle
from audiotext.data.manifest import LABELS_FILE, MIN_LABEL_CLIPS, read_manifest, require_distinct_splits, speaker_ids
from audiotext.data.media import load_audio
from audiotext.data.splits import assign_splits, check_leakage, check_split_request, split_counts
from audiotext.errors import AudiotextError, DataError
from audiotext.features.audio import int16_samples, resample_keeping_dtype, samples_digest, trim_zeros
from audiotext.features.text import normalize_text
from audiotext.io import atomic_path, file_digest, write_json

AUDIO_DIR = "audio"
JOB_FILE = "prepare.json"
SPLITS_FILE = "splits.json"  # written last but for rejects.csv: the mark of a job that finished
_ACTOR_DIR = re.compile(r"\d{3}")
_VIDEO_NAME = re.compile(r"(?P<actor>\d{3})-(?P<script_id>\d+)")


class PrepareError(AudiotextError, RuntimeError):
    """Nothing usable remains, or (with strict) something was rejected; the message has the summary."""


@dataclass
class Reject:
    path: str
    reason: str
    row: int | None = None  # the manifest's row, where there is one


@dataclass
class PrepareReport:
    out_dir: Path
    labels: list[str]
    counts: pd.DataFrame  # clips per label (rows) and split (columns)
    n_decoded: int  # clips decoded in this run
    n_cached: int  # clips found in the cache from an earlier run
    rejects: list[Reject] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"prepared {int(self.counts['total'].sum())} clips into {self.out_dir} "
            f"({self.n_decoded} decoded, {self.n_cached} from cache)",
            self.counts.to_string(),
        ]
        unused = [label for label in self.labels if label not in self.counts.index]
        if unused:  # a label typed in --labels, say: a model would have a class it never sees
            lines.append(f"no clip has the label(s) {', '.join(map(repr, unused))}")
        return "\n".join(lines + [_rejects_summary(self.rejects)] if self.rejects else lines)


def _rejects_summary(rejects: Sequence[Reject]) -> str:
    lines = [f"{len(rejects)} input(s) rejected:"]
    lines += [f"  {r.path}" + (f" (row {r.row})" if r.row else "") + f": {r.reason}" for r in rejects]
    return "\n".join(lines)


def min_samples(sample_rate: int, audio: AudioConfig = AudioConfig()) -> int:
    """The shortest usable clip at `sample_rate`: one MFCC window at the feature rate."""
    return int(np.ceil(audio.n_fft_size * sample_rate / audio.resample_rate))


def parse_script_file(path: str | Path) -> pd.DataFrame:
    """Scripts of the Korean corpus: columns script_id, emotion, sentence; one row per script.

    Plain text. Each script is written inside `[` `]`; a number just before the bracket on its line
    is its id, else it takes the previous id + 1. An emotion block is headed by a line outside
    brackets whose words, numbering and punctuation removed ("2. 놀람 (51~100)" → "놀람"), are one
    word: the block's label, kept as written (an unknown one rejects its clips later). Lines of
    several words (titles, notes) are ignored.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise PrepareError(f"{path}: unreadable script file ({err})") from None
    rows, emotion, script_id = [], None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        scripts = list(re.finditer(r"\[([^\]]*)\]", line))
        if not scripts:
            words = re.sub(r"[\d\W_]+", " ", line).split()
            if len(words) == 1:
                emotion = words[0]
            continue
        for match in scripts:
            if emotion is None:
                raise PrepareError(f"{path}: line {number}: script before any emotion heading")
            given = re.search(r"(\d+)\s*[.):-]?\s*$", line[: match.start()])
            script_id = int(given.group(1)) if given else script_id + 1
            rows.append((script_id, emotion, " ".join(match.group(1).split())))
    scripts = pd.DataFrame(rows, columns=["script_id", "emotion", "sentence"])
    duplicated = scripts["script_id"][scripts["script_id"].duplicated()].tolist()
    if duplicated:
        raise PrepareError(f"{path}: script id(s) {duplicated[:5]} appear more than once")
    if scripts.empty:
        raise PrepareError(f"{path}: no scripts in [ ] found")
    return scripts


def prepare_korean(
    raw_dir: str | Path,
    script_file: str | Path,
    out_dir: str | Path,
    split_by: str = "clip",
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    strict: bool = False,
    sample_rate: int = 48000,
    progress: bool = True,
    pickles: bool = True,
) -> PrepareReport:
    """The raw Korean corpus (see the module docstring) prepared into `out_dir`; split_by is
    "clip", "sentence" (whole scripts) or "speaker" (whole actors)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise PrepareError(f"{raw_dir}: no such corpus folder")
    scripts = parse_script_file(script_file).set_index("script_id")
    rows, rejects = [], []
    for actor_dir in sorted(p for p in raw_dir.iterdir() if _ACTOR_DIR.fullmatch(p.name)):
        try:
            videos = sorted(p for p in actor_dir.iterdir() if p.suffix.lower() == ".m2ts")
        except OSError as err:
            rejects.append(Reject(str(actor_dir), f"unreadable path ({err.strerror or err})"))
            continue
        for video in videos:
            name = _VIDEO_NAME.fullmatch(video.stem)
            if name is None or name["actor"] != actor_dir.name:
                rejects.append(Reject(str(video), f"name is not {actor_dir.name}-{{script_id}}.m2ts"))
            elif int(name["script_id"]) not in scripts.index:
                rejects.append(Reject(str(video), f"unknown script id {int(name['script_id'])} (not in {script_file})"))
            else:
                script = scripts.loc[int(name["script_id"])]
                rows.append((video.stem, str(video), script.sentence, script.emotion, int(name["actor"])))
    clips = pd.DataFrame(rows, columns=["key", "audio_path", "text", "label", "speaker"])
    clips["row"], clips["start"], clips["end"] = 0, np.nan, np.nan
    job = {"source": str(raw_dir.resolve()), "script": file_digest(script_file).hex(), "split_by": split_by,
           "ratios": list(ratios), "seed": seed, "sample_rate": sample_rate, "pickles": pickles}  # fmt: skip
    check_split_request(clips, split_by, ratios)
    _claim_folder(Path(out_dir), job)
    return _prepare(
        clips, Path(out_dir), list(REFERENCE_LABELS), split_by, ratios, seed, strict, sample_rate, progress, rejects,
        pickles,
    )


def prepare_manifest(
    manifest: str | Path,
    out_dir: str | Path,
    split_by: str | None = "clip",
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    strict: bool = False,
    labels: Sequence[str] | None = None,
    sample_rate: int = 48000,
    progress: bool = True,
    pickles: bool = True,
    min_label_clips: int = MIN_LABEL_CLIPS,
) -> PrepareReport:
    """A manifest's clips prepared into `out_dir`. `split_by=None` keeps the manifest's own `split`
    column. `labels` defaults to the labels the rows use (sorted), refused when one of them has
    fewer than `min_label_clips` clips (a probable typo); rows with labels outside `labels` are rejected."""
    manifest = Path(manifest)
    clips = read_manifest(manifest)
    job = {"source": str(manifest.resolve()), "manifest": file_digest(manifest).hex(), "split_by": split_by,
           "ratios": list(ratios), "seed": seed, "sample_rate": sample_rate, "pickles": pickles,
           "labels": list(labels) if labels is not None else None, "min_label_clips": min_label_clips}  # fmt: skip
    if split_by is None:
        if "split" not in clips.columns:
            raise PrepareError(f"{manifest}: split_by=None keeps the manifest's splits, but it has no 'split' column")
        blank = clips["row"][clips["split"] == ""].tolist()
        if blank:
            raise PrepareError(f"{manifest}: row {blank[0]}, column 'split' is empty (split_by=None keeps its splits)")
        require_distinct_splits(clips, manifest)
        # A split becomes the file NAME.pkl in out_dir: "../x" would be written outside it.
        for row, name in zip(clips["row"], clips["split"]):
            if name.startswith(".") or re.search(r"[/\\\x00]", name):
                raise PrepareError(f"{manifest}: row {row}, column 'split' is {name!r}: a split is a name for a file "
                                   "in --out, with no '/', '\\' or leading '.'")  # fmt: skip
    clips["key"] = [_clip_key(*row) for row in zip(clips["audio_path"], clips["start"], clips["end"])]
    clips["speaker"] = speaker_ids(list(clips["speaker"])) if "speaker" in clips.columns else -1
    if labels is None:
        labels = _labels_in_use(clips, manifest, min_label_clips)
    else:
        labels = checked_labels(labels)
    if split_by is not None:
        check_split_request(clips, split_by, ratios)
    _claim_folder(Path(out_dir), job)
    return _prepare(
        clips, Path(out_dir), list(labels), split_by, ratios, seed, strict, sample_rate, progress, [], pickles
    )


def _labels_in_use(clips: pd.DataFrame, manifest: Path, min_label_clips: int) -> list[str]:
    counts = clips["label"][clips["label"] != ""].value_counts()
    rare = counts[counts < min_label_clips]
    if len(rare):
        listed = "; ".join(f"{label!r}: {n} clip(s), row(s) {', '.join(map(str, clips['row'][clips['label'] == label][:5]))}"
                           for label, n in rare.items())  # fmt: skip
        raise PrepareError(
            f"{manifest}: label(s) used by fewer than {min_label_clips} clips, probably typos: {listed}. Correct "
            f"them, or name the classes with --labels (rows with other labels are then rejected)"
        )
    return checked_labels(sorted(counts.index))


def _claim_folder(out_dir: Path, job: dict) -> None:
    """Records `job` in `out_dir`, which must be empty, hold the same job (then it resumes), or hold
    a job that failed or stopped before its end (then it is cleared: the manifest fixed after a
    strict run's rejects is another job, and a folder only this tool wrote in holds nothing else)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PrepareError(f"{out_dir} is a file, not a folder: prepare into a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        recorded = _recorded_job(out_dir / JOB_FILE)
        if recorded is not None and recorded != job and not (out_dir / SPLITS_FILE).is_file():
            shutil.rmtree(out_dir)
        elif recorded != job:
            changed = "other files" if recorded is None else "another job (" + ", ".join(
                k for k in job if recorded.get(k) != job[k]) + " differ)"  # fmt: skip
            raise PrepareError(f"{out_dir} holds {changed}: prepare into an empty folder, or rerun the same job to resume it")
    write_json(out_dir / JOB_FILE, job)


def _recorded_job(path: Path) -> dict | None:
    """The job `path` records (None when there is none); an edited one that is no JSON object names the file."""
    if not path.is_file():
        return None
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PrepareError(f"{path}: not the record of a prepare job ({err}): remove the folder, or prepare into another") from None
    if not isinstance(job, dict):
        raise PrepareError(f"{path}: not the record of a prepare job (no JSON object): remove the folder, or prepare into another")
    return job


def _clip_key(audio_path: str, start: float, end: float) -> str:
    """A cache name unique to the file, its version and the segment, readable by its file name. The
    version (size, modification time) keeps a rerun from reusing a clip whose file changed since."""
    try:
        stat = os.stat(audio_path)
        version = f"{stat.st_size}|{stat.st_mtime_ns}"
    except OSError:  # missing or unreadable: rejected when it is extracted
        version = "unreadable"
    digest = hashlib.sha1(f"{Path(audio_path).resolve()}|{start}|{end}|{version}".encode()).hexdigest()[:12]
    return f"{re.sub(r'[^0-9A-Za-z_-]+', '_', Path(audio_path).stem)[:40]}-{digest}"


def _prepare(
    clips: pd.DataFrame,
    out_dir: Path,
    labels: list[str],
    split_by: str | None,
    ratios: Sequence[float],
    seed: int,
    strict: bool,
    sample_rate: int,
    progress: bool,
    rejects: list[Reject],
    pickles: bool,
) -> PrepareReport:
    """Validates, extracts (or finds cached) every clip, splits, writes everything; see module docstring."""
    known = set(labels)
    kept, n_decoded, n_cached = [], 0, 0
    first_of_key: dict[str, object] = {}  # clip key → the first clip of that file and segment
    first_of_samples: dict[bytes, object] = {}  # digest of the samples → the first clip holding them
    kept_segments: dict[str, _Segments] = {}  # resolved file → its kept clips' segments
    for clip in tqdm(clips.itertuples(index=False), total=len(clips), desc="extract", disable=not progress):
        if strict and rejects:
            break
        cached = out_dir / AUDIO_DIR / f"{clip.key}.flac"
        if not clip.text:
            reason = "empty transcript"
        elif not normalize_text(clip.text):
            reason = f"the transcript {clip.text!r} has no letters or digits"
        elif clip.label not in known:
            reason = f"unknown label {clip.label!r} (known: {', '.join(labels)})"
        elif clip.key in first_of_key:
            reason = f"the same file and segment as {_named(first_of_key[clip.key])}"
        elif _cached_rate(cached) == sample_rate:
            n_cached, reason = n_cached + 1, None
        else:
            reason = _extract(clip, cached, sample_rate)
            n_decoded += reason is None
        if reason is None:
            first_of_key[clip.key] = clip
            # Checked once the segment is known to be readable: an empty or inverted one has that reason.
            overlapped = _segments_of(kept_segments, clip).overlapping(clip)
            samples = samples_digest(sf.read(cached, dtype="int16")[0])  # whatever file or container it came in
            if overlapped is not None:
                reason = (f"its segment ({_Segments.text(clip)}) overlaps that of {_named(overlapped)} "
                          f"({_Segments.text(overlapped)}): two splits could share that audio")  # fmt: skip
            elif samples in first_of_samples:
                reason = f"the same samples as {_named(first_of_samples[samples])}"
            else:
                first_of_samples[samples] = clip
        if reason is None:
            _segments_of(kept_segments, clip).add(clip)
            kept.append(clip)
        else:
            rejects.append(Reject(clip.audio_path, reason, clip.row or None))
    if not kept or (strict and rejects):
        problem = "strict mode, and an input was rejected" if strict and rejects else "nothing usable remains"
        _write_rejects(out_dir, rejects)
        raise PrepareError(f"{problem}\n{_rejects_summary(rejects)}")

    kept = pd.DataFrame(kept).reset_index(drop=True)
    splits = kept["split"] if split_by is None else assign_splits(kept, split_by, ratios, seed)
    if split_by is not None:
        check_leakage(kept, splits, split_by)
    kept["split"] = splits.to_numpy()
    counts = split_counts(kept["label"], kept["split"])
    # Only splits that have clips: an empty pickle is no split at all (load_split refuses it).
    names = [name for name in counts.columns.drop("total") if counts[name].any()]
    # A split's pickle holds all its audio at once; without pickles memory stays at one clip, and
    # training reads manifest.csv instead.
    for name in tqdm(names if pickles else [], desc="pickles", disable=not progress):
        _write_split_pickle(kept[kept["split"] == name], out_dir, out_dir / f"{name}.pkl")
    _write_manifest(kept, out_dir)
    write_json(out_dir / LABELS_FILE, labels)
    write_json(
        out_dir / SPLITS_FILE,
        {
            "split_by": split_by or "manifest",
            "ratios": list(ratios),
            "seed": seed,
            "sample_rate": sample_rate,
            "counts": {name: counts[name].to_dict() for name in counts.columns},
            "clips": {name: kept["key"][kept["split"] == name].tolist() for name in names},
        },
    )
    _write_rejects(out_dir, rejects)
    report = PrepareReport(out_dir, labels, counts, n_decoded, n_cached, rejects)
    if progress:
        print(report.summary())
    return report


class _Segments:
    """The kept segments of one file, disjoint and sorted by start, so that whether a new segment
    overlaps one of them is a look at its two neighbours (a long recording can hold thousands)."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, object]] = []  # (start, end, clip), seconds, by start

    @staticmethod
    def span(clip) -> tuple[float, float]:
        """(start, end) in seconds; a missing start is the file's beginning, a missing end its end."""
        return (0.0 if math.isnan(clip.start) else clip.start, math.inf if math.isnan(clip.end) else clip.end)

    @classmethod
    def text(cls, clip) -> str:
        start, end = cls.span(clip)
        return f"{start:g} s to " + ("the end" if math.isinf(end) else f"{end:g} s")

    def overlapping(self, clip):
        """A kept clip whose segment shares time with `clip`'s (touching ends share none), or None."""
        start, end = self.span(clip)
        i = bisect.bisect_right(self.spans, start, key=lambda span: span[0])
        if i and self.spans[i - 1][1] > start:
            return self.spans[i - 1][2]
        if i < len(self.spans) and self.spans[i][0] < end:
            return self.spans[i][2]
        return None

    def add(self, clip) -> None:
        bisect.insort_right(self.spans, (*self.span(clip), clip), key=lambda span: span[0])


def _segments_of(kept: dict[str, _Segments], clip) -> _Segments:
    return kept.setdefault(str(Path(clip.audio_path).resolve()), _Segments())


def _named(clip) -> str:
    return f"row {clip.row} ({clip.audio_path})" if clip.row else clip.audio_path


def _cached_rate(cached: Path) -> int | None:
    """The sample rate of a clip in the cache; None when it is not there or cannot be read (damaged
    since: it is decoded again, as a missing one is)."""
    try:
        return sf.info(cached).samplerate
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None


def _extract(clip, cached: Path, sample_rate: int) -> str | None:
    """Decodes one clip into the cache as mono int16 FLAC; the reason it is unusable, or None."""
    start, end = (None if np.isnan(t) else float(t) for t in (clip.start, clip.end))
    try:
        samples, rate = load_audio(clip.audio_path, start, end)
        samples = int16_samples(resample_keeping_dtype(samples, rate, sample_rate))
    except DataError as err:  # the file's (MediaError), or float samples that are not audio in [-1, 1]
        return str(err).removeprefix(f"{clip.audio_path}: ")
    shortest, sounding = min_samples(sample_rate), len(trim_zeros(samples))
    if not sounding:
        return "silent: every sample is zero"
    if sounding < shortest:  # features are computed once the edge zeros are trimmed
        return f"too short: {sounding} samples at {sample_rate} Hz once its edge zeros are trimmed, under one {shortest}-sample window"
    with atomic_path(cached) as tmp:
        sf.write(tmp, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return None


def _write_split_pickle(clips: pd.DataFrame, out_dir: Path, path: Path) -> None:
    audio = [sf.read(out_dir / AUDIO_DIR / f"{key}.flac", dtype="int16")[0] for key in clips["key"]]
    write_reference_pickle(path, clips["speaker"].tolist(), audio, clips["text"].tolist(), clips["label"].tolist())


def _write_manifest(clips: pd.DataFrame, out_dir: Path) -> None:
    frame = pd.DataFrame(
        {
            "audio": [f"{AUDIO_DIR}/{key}.flac" for key in clips["key"]],
            "text": clips["text"],
            "label": clips["label"],
            "speaker": clips["speaker"],
            "split": clips["split"],
        }
    )
    with atomic_path(out_dir / "manifest.csv") as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def _write_rejects(out_dir: Path, rejects: Sequence[Reject]) -> None:
    with atomic_path(out_dir / "rejects.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "row", "reason"])
        writer.writerows([r.path, r.row or "", r.reason] for r in rejects)
