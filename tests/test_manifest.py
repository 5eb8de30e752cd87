"""Manifests and media: real files written with PyAV, read back through `load_manifest_split`."""

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from audiotext.data.corpus import Split
from audiotext.data.folds import write_fold_corpora
from audiotext.data.manifest import ManifestError, load_manifest_split, read_label_set
from audiotext.data.media import MediaError, load_audio, write_media

RATE = 48000


def _samples(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * rate)) * 3000).astype(np.int16)


def _csv(path, rows, header="audio,text,label,speaker,split"):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix, codec", [(".wav", "pcm_s16le"), (".flac", "flac"), (".mkv", "flac")])
def test_lossless_audio_equals_the_source_samples(tmp_path, suffix, codec):
    clips = [_samples(0.5, seed) for seed in range(3)]
    for i, clip in enumerate(clips):
        # Stereo with both channels equal: the mono downmix must give back the samples exactly.
        write_media(tmp_path / f"clip{i}{suffix}", clip, RATE, codec, channels=2, video=suffix == ".mkv")
    rows = [f"clip0{suffix},첫 문장,행복,kim,train", f"clip1{suffix},둘,슬픔,lee,train"]
    rows.append(f"clip2{suffix},셋,행복,kim,test")
    manifest = _csv(tmp_path / "m.csv", rows)
    split = load_manifest_split(manifest, "train", None, RATE)
    assert isinstance(split, Split) and split.name == "train" and len(split) == 2
    assert split.sentences == ["첫 문장", "둘"]
    assert split.labels.tolist() == [1, 0]  # label set sorted: 슬픔, 행복
    assert split.speakers == [0, 1]  # names get their sorted index
    for clip, loaded in zip(clips, split.audio):
        assert loaded.dtype == np.int16 and np.array_equal(loaded, clip)


@pytest.mark.parametrize(
    "name, codec, rate",
    [("a.mp3", "libmp3lame", 44100), ("a.ogg", "libopus", 48000), ("a.m4a", "aac", 48000),
     ("a.mp4", "aac", 48000), ("a.m2ts", "ac3", 48000)],
)  # fmt: skip
def test_lossy_audio_keeps_length_and_rate(tmp_path, name, codec, rate):
    clip = _samples(1.0, 0, rate)
    write_media(tmp_path / name, clip, rate, codec, "mp4" if name.endswith(".m4a") else None, channels=2,
                video=name.endswith((".mp4", ".m2ts")))  # fmt: skip
    samples, loaded_rate = load_audio(tmp_path / name)
    assert loaded_rate == rate and samples.dtype == np.float32
    assert abs(len(samples) - len(clip)) <= 2048  # encoder priming and frame padding only
    segment, _ = load_audio(tmp_path / name, 0.25, 0.75)
    assert len(segment) == rate // 2


def test_segments_and_resampling(tmp_path):
    clip = _samples(2.0, 1, rate=16000)
    write_media(tmp_path / "long.wav", clip, 16000, "pcm_s16le")
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"audio": "long.wav", "text": "앞", "label": "a", "start": 0.0, "end": 0.5},
        {"audio": str(tmp_path / "long.wav"), "text": "뒤", "label": "b", "start": 1.25},
        {"audio": "long.wav", "text": "가운데", "label": "a", "start": "0.5", "end": "1.0", "speaker": 7},
    ]
    manifest.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    native = load_manifest_split(manifest, None, ["a", "b"], 16000)
    assert native.name == "m" and native.speakers == [-1, -1, 7]
    assert np.array_equal(native.audio[0], clip[:8000])
    assert np.array_equal(native.audio[1], clip[20000:])
    assert np.array_equal(native.audio[2], clip[8000:16000])
    upsampled = load_manifest_split(manifest, None, ["a", "b"], 48000)
    assert [len(a) for a in upsampled.audio] == [24000, 36000, 24000]
    assert upsampled.audio[0].dtype == np.int16


def test_label_set(tmp_path):
    rows = ["x.wav,t,혐오,,", "x.wav,t,공포,,", "x.wav,t,neutral,,", "x.wav,t,공포,,"]
    manifest = _csv(tmp_path / "m.csv", rows)
    assert read_label_set(manifest) == ["neutral", "공포", "혐오"]
    (tmp_path / "labels.json").write_text(json.dumps(["b", "a"]), encoding="utf-8")
    assert read_label_set(tmp_path) == ["b", "a"]  # a saved label list keeps its order


def test_a_named_speaker_keeps_one_id_across_splits_and_folds(tmp_path):
    speakers = {"train": ["zoe", "amy", "kim"], "dev": ["kim", "lee"], "test": ["zoe", "lee"]}
    rows, who = [], {}
    for split, names in speakers.items():
        for name in names:
            for label in ("a", "b", "c"):
                clip = tmp_path / f"{len(rows)}.wav"
                write_media(clip, _samples(0.05, len(rows)), RATE, "pcm_s16le")
                who[str(clip.resolve())] = name
                rows.append(f"{clip.name},sentence {len(rows)},{label},{name},{split}")
    manifest = _csv(tmp_path / "m.csv", rows)
    ids = {}
    for split in speakers:
        for name, speaker in zip(np.repeat(speakers[split], 3), load_manifest_split(manifest, split, None, RATE).speakers):
            assert ids.setdefault(name, speaker) == speaker, f"{name} has two ids"
    assert sorted(ids.values()) == [0, 1, 2, 3]
    for fold in write_fold_corpora(manifest, ["a", "b", "c"], RATE, 3, "speaker", 0, tmp_path / "folds"):
        written = pd.read_csv(fold)
        names = written["audio"].map(who)
        assert not set(names[written["split"] == "test"]) & set(names[written["split"] != "test"]), fold


def test_errors_name_manifest_row_and_column(tmp_path):
    write_media(tmp_path / "ok.wav", _samples(0.1, 0), RATE, "pcm_s16le")
    with pytest.raises(ManifestError, match=r"m1.csv: missing column\(s\) label"):
        load_manifest_split(_csv(tmp_path / "m1.csv", ["ok.wav,t"], header="audio,text"), None, None, RATE)
    bad_time = _csv(tmp_path / "m2.csv", ["ok.wav,t,a,,,x"], header="audio,text,label,speaker,split,start")
    with pytest.raises(ManifestError, match=r"m2.csv: row 1, column 'start' is not a number"):
        load_manifest_split(bad_time, None, None, RATE)
    unknown = _csv(tmp_path / "m3.csv", ["ok.wav,t,a,,", "ok.wav,t,zz,,"])
    with pytest.raises(ManifestError, match=r"m3.csv: row 2, column 'label' has unknown label 'zz'"):
        load_manifest_split(unknown, None, ["a"], RATE)
    missing = _csv(tmp_path / "m4.csv", ["ok.wav,t,a,,", "ok.wav,t,a,,", "gone.wav,t,a,,"])
    with pytest.raises(ManifestError, match=r"m4.csv: row 3, column 'audio': .*gone.wav: unreadable path"):
        load_manifest_split(missing, None, None, RATE)
    empty = _csv(tmp_path / "m5.csv", ["ok.wav,,a,,"])
    with pytest.raises(ManifestError, match=r"m5.csv: row 1, column 'text' is empty"):
        load_manifest_split(empty, None, None, RATE)
    with pytest.raises(ManifestError, match="no 'split' column"):
        load_manifest_split(_csv(tmp_path / "m6.csv", ["ok.wav,t,a"], header="audio,text,label"), "train", None, RATE)


def test_a_json_number_is_one_speaker_however_it_is_written(tmp_path):
    # 1 and 1.0 are one JSON number (pandas writes an integer column that holds a NaN as 1.0): they
    # were two speakers, and a speaker split could put one person in train and test.
    lines = [{"audio": "a.wav", "text": "t", "label": "x", "speaker": speaker} for speaker in (1, 1.0, 2.0, 2)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert load_manifest_split(tmp_path / "m.jsonl", None, None, RATE, with_audio=False).speakers == [1, 1, 2, 2]


def test_a_column_named_twice_is_refused(tmp_path):
    # pandas read the first of two label columns (the second became label.1), JSON the last key.
    twice = _csv(tmp_path / "twice.csv", ["ok.wav,t,old,new,x"], header="audio,text,label,label,notes")
    with pytest.raises(ManifestError, match=r"twice.csv: column\(s\) 'label' appear more than once in its header"):
        load_manifest_split(twice, None, None, RATE)
    (tmp_path / "twice.jsonl").write_text('{"audio": "ok.wav", "text": "t", "label": "old", "label": "new"}\n')
    with pytest.raises(ManifestError, match=r"twice.jsonl: column\(s\) 'label' appear more than once in row 1"):
        load_manifest_split(tmp_path / "twice.jsonl", None, None, RATE)
    (tmp_path / "array.jsonl").write_text("[]\n")
    with pytest.raises(ManifestError, match=r"array.jsonl: row 1 is not a JSON object"):
        load_manifest_split(tmp_path / "array.jsonl", None, None, RATE)
    notes = _csv(tmp_path / "notes.csv", ["ok.wav,t,a,x,y"], header="audio,text,label,notes,notes")  # a column not read
    assert load_manifest_split(notes, None, None, RATE, with_audio=False).sentences == ["t"]


@pytest.mark.parametrize("name, codec, frame_sync", [("a.flac", "flac", b"\xff\xf8"), ("a.mp3", "libmp3lame", b"\xff\xfb")])
def test_a_file_cut_where_a_frame_starts_is_held_to_the_length_its_header_states(tmp_path, name, codec, frame_sync):
    write_media(tmp_path / name, _samples(1.0, 0, 44100), 44100, codec)
    whole = (tmp_path / name).read_bytes()
    cut = tmp_path / f"cut{name[1:]}"
    # Cut where a frame begins: what is left decodes cleanly, as a shorter clip without the check.
    cut.write_bytes(whole[: whole.index(frame_sync, len(whole) // 2)])
    truncated = r"cut\.\w+: truncated: its header promises 1\.0\d+ s, the file holds 0\.[4-9]\d+ s"
    for limit in (None, 60):  # as serve reads an upload: at most 60 s, and this one ends before
        with pytest.raises(MediaError, match=truncated):
            load_audio(cut, at_most=limit)
    assert len(load_audio(cut, at_most=0.25)[0]) == 44100 // 4  # the part asked for is there
    assert len(load_audio(tmp_path / name)[0]) == 44100  # the whole file keeps its promise


def test_a_limited_read_mixes_channels_down_as_it_decodes_and_bounds_the_rate(tmp_path):
    # What `serve` reads from an upload, whose size says little of what it decodes to.
    rate = 192000
    clip = _samples(5.0, 0, rate)
    write_media(tmp_path / "stereo.flac", clip, rate, "flac", channels=2)
    tracemalloc.start()
    samples, loaded_rate = load_audio(tmp_path / "stereo.flac", at_most=60)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert loaded_rate == rate and np.array_equal(samples, clip)
    # Mono chunks and their concatenation; both channels at once and their float64 mean took 8x.
    assert peak < 3 * clip.nbytes, f"peak {peak} bytes for {clip.nbytes} bytes of mono samples"
    for name, codec in (("fast.flac", "flac"), ("fast.wav", "pcm_s16le")):
        write_media(tmp_path / name, _samples(0.1, 0, 655350), 655350, codec)
        with pytest.raises(MediaError, match=rf"{name}: sample rate 655350 Hz is above the 384000 Hz a limited read"):
            load_audio(tmp_path / name, at_most=60)
        assert load_audio(tmp_path / name)[1] == 655350  # a manifest's file is read whatever its rate


def test_media_errors(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(MediaError, match="noise.mp4: not a readable media file"):
        load_audio(tmp_path / "noise.mp4")
    write_media(tmp_path / "silent.mp4", _samples(0.1, 0), RATE, "aac", video=True, audio=False)
    with pytest.raises(MediaError, match="silent.mp4: no audio track"):
        load_audio(tmp_path / "silent.mp4")
    write_media(tmp_path / "full.flac", _samples(1.0, 0), RATE, "flac")
    (tmp_path / "cut.flac").write_bytes((tmp_path / "full.flac").read_bytes()[:30000])
    with pytest.raises(MediaError, match="cut.flac: corrupt audio"):
        load_audio(tmp_path / "cut.flac")
    with pytest.raises(MediaError, match="end 0.1 s is not after its start 0.2 s"):
        load_audio(tmp_path / "full.flac", 0.2, 0.1)
