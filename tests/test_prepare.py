"""`prepare_korean` and `prepare_manifest` on real media files: demo-corpus speech in m2ts videos."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audiotext.config import REFERENCE_LABELS
from audiotext.data.corpus import load_split
from audiotext.data.manifest import load_manifest_split, read_label_set
from audiotext.data.media import write_media
from audiotext.data.prepare import PrepareError, parse_script_file, prepare_korean, prepare_manifest
from audiotext.data.splits import check_leakage

RATE = 48000
ACTORS = ("000", "001", "002", "003")
# The script file's layout: ids 1-2 행복, 3-4 놀람, ... (2 per emotion, in the real corpus' order).
ORDER = ("행복", "놀람", "중립", "공포", "혐오", "분노", "슬픔")
AC3_FRAME = 1536


@pytest.fixture(scope="module")
def speech(demo_corpus) -> dict[str, list[np.ndarray]]:
    """Two demo clips per emotion, cut to 0.6 s to keep the fixture small."""
    frame = pd.read_pickle(demo_corpus / "train.pkl")
    return {e: [a[: int(0.6 * RATE)] for a in frame.audio[frame.Emotion == e][:2]] for e in ORDER}


def _write_scripts(path: Path, speech) -> Path:
    lines = ["감정 대본 (시험용)"]
    for block, emotion in enumerate(ORDER):
        lines.append(f"{block + 1}. {emotion} ({2 * block + 1}~{2 * block + 2})")
        lines += [f"{2 * block + i + 1}. [{emotion} 문장 {i} 입니다.]" for i in range(2)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def korean(tmp_path_factory, speech) -> tuple[Path, Path]:
    """4 actors x 14 scripts: 56 m2ts videos (AC-3 stereo audio, a black video track)."""
    root = tmp_path_factory.mktemp("korean")
    for a, actor in enumerate(ACTORS):
        (root / "raw" / actor).mkdir(parents=True)
        for block, emotion in enumerate(ORDER):
            for i, clip in enumerate(speech[emotion]):
                video = root / "raw" / actor / f"{actor}-{2 * block + i + 1}.m2ts"
                louder = np.round(clip * (1 + 0.1 * a)).astype(np.int16)  # each actor's own samples
                write_media(video, louder, RATE, "ac3", channels=2, video=True)
    return root / "raw", _write_scripts(root / "scripts.txt", speech)


def _copy(korean, tmp_path) -> tuple[Path, Path]:
    raw, scripts = korean
    shutil.copytree(raw, tmp_path / "raw")
    return tmp_path / "raw", scripts


def test_parse_script_file(korean):
    scripts = parse_script_file(korean[1])
    assert scripts["script_id"].tolist() == list(range(1, 15))
    assert scripts["emotion"].tolist() == [e for e in ORDER for _ in range(2)]
    assert scripts["sentence"][0] == "행복 문장 0 입니다."


def test_prepare_korean_writes_reference_pickles(korean, speech, tmp_path):
    # Two scripts per emotion: one for train, one for test.
    report = prepare_korean(*korean, tmp_path, split_by="sentence", ratios=(0.5, 0, 0.5), progress=False)
    assert report.n_decoded == 56 and report.n_cached == 0 and not report.rejects
    assert report.counts["total"].to_dict() == {e: 8 for e in REFERENCE_LABELS}
    assert read_label_set(tmp_path) == list(REFERENCE_LABELS)
    assert not (tmp_path / "dev.pkl").exists()
    splits = {name: load_split(tmp_path / f"{name}.pkl", REFERENCE_LABELS) for name in ("train", "test")}
    assert sum(len(s) for s in splits.values()) == 56
    frame = pd.read_pickle(tmp_path / "train.pkl")
    assert list(frame.columns) == ["person_ix", "audio", "Sentence", "Emotion"]
    assert frame.audio[0].dtype == np.int16 and set(frame.person_ix) <= {0, 1, 2, 3}
    # AC-3 is lossy: length within one frame of the source, 48 kHz kept.
    assert all(0 <= len(a) - int(0.6 * RATE) <= AC3_FRAME for a in frame.audio)
    assert not set(splits["test"].sentences) & set(splits["train"].sentences)
    # The manifest written beside the pickles loads into the same clips.
    from_manifest = load_manifest_split(tmp_path / "manifest.csv", "test", None, RATE)
    assert [np.array_equal(a, b) for a, b in zip(from_manifest.audio, splits["test"].audio)] == [True] * 28
    assert from_manifest.labels.tolist() == splits["test"].labels.tolist()


def test_speaker_split_keeps_actors_apart(korean, tmp_path):
    prepare_korean(*korean, tmp_path, split_by="speaker", progress=False)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    check_leakage(manifest, manifest["split"], "speaker")
    assert manifest.groupby("split")["speaker"].nunique().to_dict() == {"dev": 1, "test": 1, "train": 2}


def test_bad_inputs_are_rejected_and_the_rest_prepared(korean, speech, tmp_path):
    raw, scripts = _copy(korean, tmp_path)
    good = (raw / "000" / "000-1.m2ts").read_bytes()
    (raw / "000" / "000-1.m2ts").write_bytes(np.random.default_rng(0).bytes(len(good)))  # corrupt
    (raw / "000" / "000-2.m2ts").write_bytes(good[:1000])  # truncated
    write_media(raw / "000" / "000-4.m2ts", speech["놀람"][1], RATE, "ac3", video=True, audio=False)
    (raw / "000" / "000-6.m2ts").unlink()
    (raw / "000" / "000-6.m2ts").symlink_to(tmp_path / "nowhere.m2ts")  # unreadable path
    sounding = speech["중립"][0][np.flatnonzero(speech["중립"][0])[0] :]  # its leading zeros are no sound
    write_media(raw / "000" / "000-5.m2ts", sounding[:800], RATE, "pcm_s16le", "matroska")  # too short
    (raw / "000" / "000-99.m2ts").write_bytes(good)  # no such script
    lines = scripts.read_text(encoding="utf-8").replace("[놀람 문장 0 입니다.]", "[ ]")  # empty transcript
    lines = lines.replace("4. 공포", "4. 기쁨")  # unknown label: scripts 7, 8
    (tmp_path / "scripts.txt").write_text(lines, encoding="utf-8")

    report = prepare_korean(raw, tmp_path / "scripts.txt", tmp_path / "out", progress=False)
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv")
    reasons = {Path(p).name: reason for p, reason in zip(rejects["path"], rejects["reason"])}
    assert reasons["000-1.m2ts"].startswith("not a readable media file")
    assert reasons["000-2.m2ts"].startswith(("not a readable media file", "no audio", "corrupt audio"))
    assert reasons["000-4.m2ts"] == "no audio track"
    assert reasons["000-6.m2ts"].startswith("unreadable path")
    assert reasons["000-5.m2ts"].startswith("too short")
    assert reasons["000-99.m2ts"].startswith("unknown script id 99")
    for actor in ACTORS:
        assert reasons[f"{actor}-3.m2ts"] == "empty transcript"
        assert reasons[f"{actor}-7.m2ts"].startswith("unknown label '기쁨'")
    # 56 videos + 1 stray: 5 bad files of actor 000, the stray, 4 x (1 empty + 2 unknown label).
    assert len(rejects) == len(report.rejects) == 5 + 1 + 4 * 3
    assert report.n_decoded == 57 - len(rejects)
    assert report.counts["total"].sum() == 57 - len(rejects)


def test_rerun_resumes_from_the_cache(korean, tmp_path):
    first = prepare_korean(*korean, tmp_path, progress=False)
    before = (tmp_path / "train.pkl").read_bytes()
    second = prepare_korean(*korean, tmp_path, progress=False)
    assert (second.n_decoded, second.n_cached) == (0, first.n_decoded)
    assert (tmp_path / "train.pkl").read_bytes() == before
    (tmp_path / "audio" / "002-9.flac").unlink()  # as if interrupted before this clip
    assert prepare_korean(*korean, tmp_path, progress=False).n_decoded == 1
    assert not list(tmp_path.rglob(".*.tmp*"))  # no temporary file left behind


def test_manifest_only_writes_no_pickles_and_its_manifest_loads(korean, tmp_path):
    from audiotext.data.manifest import load_manifest_split

    report = prepare_korean(*korean, tmp_path, progress=False, pickles=False)
    assert not list(tmp_path.glob("*.pkl"))
    train = load_manifest_split(tmp_path / "manifest.csv", "train", report.labels, 48000)
    assert len(train) == report.counts["train"].sum() > 0


def test_strict_and_nothing_usable(korean, tmp_path):
    raw, scripts = _copy(korean, tmp_path)
    (raw / "001" / "001-1.m2ts").write_bytes(b"not a video")
    with pytest.raises(PrepareError, match="(?s)strict.*001-1.m2ts: not a readable media file"):
        prepare_korean(raw, scripts, tmp_path / "strict", strict=True, progress=False)
    assert not (tmp_path / "strict" / "train.pkl").exists()
    assert (tmp_path / "strict" / "rejects.csv").exists()
    empty = tmp_path / "empty"
    (empty / "000").mkdir(parents=True)
    (empty / "000" / "000-1.m2ts").write_bytes(b"not a video")
    with pytest.raises(PrepareError, match="nothing usable remains"):
        prepare_korean(empty, scripts, tmp_path / "none", progress=False)


def test_prepare_manifest_lossless_and_given_splits(tmp_path, speech):
    rows = []
    for i, emotion in enumerate(ORDER):
        for j, clip in enumerate(speech[emotion]):
            write_media(tmp_path / f"{i}{j}.flac", clip, RATE, "flac", channels=2)
            rows.append({"audio": f"{i}{j}.flac", "text": f"{emotion} {j}", "label": emotion,
                         "speaker": f"s{j}", "split": "train" if j == 0 else "test"})  # fmt: skip
    rows[0]["split"] = "held_out"  # any split name the manifest uses is kept
    rows.append({"audio": "00.flac", "text": "x", "label": "없는감정", "speaker": "s0", "split": "train"})
    manifest = tmp_path / "data.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = prepare_manifest(manifest, tmp_path / "out", split_by=None, labels=REFERENCE_LABELS, progress=False)
    assert [(r.row, r.reason.split(" (")[0]) for r in report.rejects] == [(15, "unknown label '없는감정'")]
    assert report.counts.loc["행복"].to_dict() == {"train": 0, "dev": 0, "test": 1, "held_out": 1, "total": 2}
    assert not (tmp_path / "out" / "dev.pkl").exists() and (tmp_path / "out" / "held_out.pkl").exists()
    test = load_split(tmp_path / "out" / "test.pkl", REFERENCE_LABELS)
    assert len(test) == 7 and test.speakers == [1] * 7
    # Lossless source: the pickled clips are the source samples exactly.
    assert all(np.array_equal(a, speech[ORDER[i]][1]) for i, a in enumerate(test.audio))
