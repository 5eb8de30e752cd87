"""The on-disk feature cache: equal to features computed in memory, reused when nothing changed,
rebuilt when anything it depends on changed, never half-written, and its command; the packed
sequences it stores, and the statistics training takes from them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from audiotext.cli import main
from audiotext.config import REFERENCE_LABELS, AudioConfig, ModelConfig, RunConfig, TrainConfig
from audiotext.data.corpus import load_split
from audiotext.data.dataset import encode_split
from audiotext.errors import DataError
from audiotext.features.cache import FeatureCache, PackedSequences, as_stored, audio_features, default_cache_dir, digest, text_states
from audiotext.features.text import TextEncoder
from audiotext.training.loop import train

AUDIO = AudioConfig(resample_rate=8000)


@pytest.fixture(scope="module")
def dev(demo_corpus):
    return load_split(demo_corpus / "dev.pkl", REFERENCE_LABELS)


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(None, max_len=32)


def entries(cache: FeatureCache, kind: str) -> list[str]:
    return [e.key for e in cache.entries() if e.kind == kind]


def test_cached_features_equal_those_computed_in_memory(dev, encoder, tmp_path):
    cache = FeatureCache(tmp_path, progress=False)
    cached = encode_split(dev, AUDIO, encoder, use_audio=True, cache=cache, progress=False)
    fresh = encode_split(dev, AUDIO, encoder, use_audio=True, cache=None, progress=False)
    assert isinstance(cached.audio.values, np.memmap) and cached.audio.values.dtype == np.float16
    # In memory they are float16 too: an uncached run trains on the very values a cached one does.
    assert fresh.audio.values.dtype == fresh.text.values.dtype == np.float16
    assert np.array_equal(cached.audio.values, fresh.audio.values) and np.array_equal(cached.text.values, fresh.text.values)
    assert cached.fingerprint() == fresh.fingerprint()  # so a run resumes with the cache turned on or off
    for i in range(len(fresh)):
        (a, t, y), (a0, t0, y0) = cached[i], fresh[i]
        assert a.dtype == t.dtype == torch.float32 and torch.equal(a, a0) and torch.equal(t, t0) and y == y0


def test_an_unchanged_rerun_and_test_stt_after_test_reuse_the_entries(demo_corpus, encoder, tmp_path, capsys):
    cache = FeatureCache(tmp_path, progress=True)
    test = load_split(demo_corpus / "test.pkl", REFERENCE_LABELS)
    first = encode_split(test, AUDIO, encoder, use_audio=True, cache=cache, progress=False)
    encoded_before = encoder.n_encoded
    assert "computed" in capsys.readouterr().out
    again = encode_split(test, AUDIO, encoder, use_audio=True, cache=cache, progress=False)
    assert encoder.n_encoded == encoded_before, "the encoder ran although the cache held the states"
    assert "reused from the cache" in capsys.readouterr().out
    assert np.array_equal(first.audio.values, again.audio.values)

    stt = load_split(demo_corpus / "test_stt.pkl", REFERENCE_LABELS)  # the same clips, other transcripts
    encode_split(stt, AUDIO, encoder, use_audio=True, cache=cache, progress=False)
    assert len(entries(cache, "audio")) == 1, "test_stt's audio is test's: one MFCC entry"
    assert len(entries(cache, "text")) == 2


@pytest.mark.parametrize(
    "change",
    [
        dict(resample_rate=16000),
        dict(n_mfcc=20),
        dict(n_fft_size=512),
        dict(max_len_for_audio=100),
        dict(sample_rate=44100),
    ],
    ids=lambda change: next(iter(change)),
)
def test_changing_an_audio_setting_builds_a_new_entry(dev, tmp_path, change):
    cache = FeatureCache(tmp_path, progress=False)
    clips = dev.audio[:6]
    audio_features(clips, AUDIO, cache, progress=False)
    audio_features(clips, dataclasses.replace(AUDIO, **change), cache, progress=False)
    assert len(entries(cache, "audio")) == 2


def test_changing_one_sample_of_one_clip_builds_a_new_entry(dev, tmp_path):
    cache = FeatureCache(tmp_path, progress=False)
    clips = [clip.copy() for clip in dev.audio[:6]]
    audio_features(clips, AUDIO, cache, progress=False)
    clips[3][len(clips[3]) // 2] += 1
    audio_features(clips, AUDIO, cache, progress=False)
    assert len(entries(cache, "audio")) == 2


def test_changing_the_encoder_or_its_maximum_length_builds_a_new_entry(encoder, tmp_path):
    cache = FeatureCache(tmp_path, progress=False)
    sentences = ["너무 무서워", "정말 화가 나!"]
    text_states(sentences, encoder, cache, progress=False)
    text_states(sentences, TextEncoder(None, max_len=5), cache, progress=False)
    # The same weights in another folder are the same encoder; one changed byte is another.
    copy = tmp_path / "encoder"
    copy.mkdir()
    for file in encoder.path.iterdir():
        if file.is_file():
            (copy / file.name).write_bytes(file.read_bytes())
    text_states(sentences, TextEncoder(copy, max_len=32), cache, progress=False)
    assert len(entries(cache, "text")) == 2
    config = copy / "config.json"
    config.write_text(config.read_text(encoding="utf-8").replace("}", ', "note": 1}', 1), encoding="utf-8")
    text_states(sentences, TextEncoder(copy, max_len=32), cache, progress=False)
    assert len(entries(cache, "text")) == 3


def test_a_build_that_fails_halfway_leaves_no_entry(dev, tmp_path):
    cache = FeatureCache(tmp_path, progress=False)

    def broken():
        yield np.zeros((5, 40), np.float32)
        raise ValueError("row 1: clip has 3 samples")

    with pytest.raises(ValueError, match="row 1"):
        cache.packed("audio", "k" * 32, 2, broken, facts={}, what="test")
    assert cache.entries() == [] and list((tmp_path / "audio").iterdir()) == []


def test_a_build_that_yields_fewer_sequences_than_promised_leaves_no_entry(tmp_path):
    cache = FeatureCache(tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="expected 3 sequences, got 2"):
        cache.packed("audio", "k" * 32, 3, lambda: [np.zeros((5, 4), np.float32)] * 2, facts={}, what="test")
    assert cache.entries() == []


def test_a_damaged_entry_is_named_and_can_be_cleared(tmp_path):
    cache = FeatureCache(tmp_path, progress=False)
    cache.packed("audio", "k" * 32, 2, lambda: [np.ones((5, 4)), np.ones((3, 4))], facts={}, what="test")
    entry = tmp_path / "audio" / ("k" * 32)
    values = (entry / "values.bin").read_bytes()
    (entry / "values.bin").write_bytes(values[:10])  # "mmap length is greater than file size", naming nothing
    with pytest.raises(DataError, match=f"feature cache entry {entry} is damaged .*audiotext features clear"):
        FeatureCache.load(entry)
    (entry / "offsets.npy").write_bytes(b"")  # an EOFError
    with pytest.raises(DataError, match=f"feature cache entry {entry} is damaged"):
        FeatureCache.load(entry)
    (entry / "entry.json").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=f"feature cache entry {entry} is damaged"):
        cache.entries()
    assert cache.clear() == 1 and not entry.exists()
    # Without its entry.json it was computed again, then its rename failed: "[Errno 39] Directory not empty".
    cache.packed("audio", "k" * 32, 2, lambda: [np.ones((5, 4)), np.ones((3, 4))], facts={}, what="test")
    (entry / "entry.json").unlink()
    computed = []
    with pytest.raises(DataError, match=f"feature cache entry {entry} is damaged \\(no entry.json\\)"):
        cache.packed("audio", "k" * 32, 2, lambda: computed.append(1) or [], facts={}, what="test")
    assert not computed and cache.clear() == 0 and not entry.exists()  # cleared with what a build left


def test_an_entry_records_what_it_holds(tmp_path):
    before = time.time()
    FeatureCache(tmp_path, progress=False).packed("audio", "k" * 32, 2, lambda: [np.ones((5, 4)), np.ones((3, 4))],
                                                  facts={"what": "MFCC"}, what="test")  # fmt: skip
    facts = json.loads((tmp_path / "audio" / ("k" * 32) / "entry.json").read_text(encoding="utf-8"))
    assert {k: facts[k] for k in ("what", "kind", "n", "steps", "width", "dtype")} == {
        "what": "MFCC", "kind": "audio", "n": 2, "steps": 8, "width": 4, "dtype": "float16"}
    assert before <= facts["created"] <= time.time()


def test_an_entry_of_empty_sequences_loads_though_there_is_nothing_to_map(tmp_path):
    packed = FeatureCache(tmp_path, progress=False).packed("text", "k" * 32, 2, lambda: [np.zeros((0, 4))] * 2,
                                                           facts={}, what="test")  # fmt: skip
    assert len(packed) == 2 and packed.lengths().tolist() == [0, 0] and packed.width == 4
    assert packed.values.dtype == np.float16 and packed[1].shape == (0, 4)


def test_a_key_does_not_depend_on_the_order_of_a_dicts_entries():
    assert digest({"n_mfcc": 40, "rate": 8000}, [1, 2]) == digest({"rate": 8000, "n_mfcc": 40}, [1, 2])
    assert digest({"n_mfcc": 40}) != digest({"n_mfcc": 39})
    assert digest("ab", "c") != digest("a", "bc")  # parts are kept apart


def test_a_build_killed_halfway_leaves_nothing_that_passes_for_an_entry(tmp_path):
    """SIGKILL while the entry is being written; the next build starts afresh and completes."""
    halfway = tmp_path / "halfway"
    script = textwrap.dedent(
        f"""
        import pathlib, time, numpy as np
        from audiotext.features.cache import FeatureCache
        def slow():
            for i in range(4):
                yield np.full((10, 3), i, np.float32)
            pathlib.Path({str(halfway)!r}).touch()
            time.sleep(120)
            yield np.zeros((10, 3), np.float32)
        FeatureCache({str(tmp_path)!r}, progress=False).packed("audio", "killed", 5, slow, facts={{}}, what="x")
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not halfway.exists():
        assert time.monotonic() < deadline and process.poll() is None, "the build never got going"
        time.sleep(0.05)
    assert list(tmp_path.glob("audio/.*/values.bin")), "the build writes into a temporary folder"
    process.kill()
    process.wait()
    cache = FeatureCache(tmp_path, progress=False)
    assert cache.entries() == [], "a killed build must not pass for an entry"
    rebuilt = cache.packed("audio", "killed", 2, lambda: [np.ones((4, 3)), np.ones((2, 3))], facts={}, what="x")
    assert rebuilt.lengths().tolist() == [4, 2] and len(cache.entries()) == 1


def test_a_cold_and_a_warm_run_train_to_the_same_figures(demo_corpus, tmp_path):
    cfg = RunConfig(
        name="audio", data_path=str(demo_corpus), audio=AUDIO,
        model=ModelConfig(modality="audio", layers=1, attn_dropout=0.0), train=TrainConfig(num_epochs=1, seed=3),
    )  # fmt: skip
    cache = FeatureCache(tmp_path / "cache", progress=False)
    cold = train(cfg, tmp_path / "cold", cache=cache, progress=False)
    built = sorted(e.key for e in cache.entries())
    warm = train(cfg, tmp_path / "warm", cache=cache, progress=False)
    assert sorted(e.key for e in cache.entries()) == built  # nothing new was built
    assert (cold["dev_loss"], cold["dev_macro_f1"]) == (warm["dev_loss"], warm["dev_macro_f1"])


def test_features_command_builds_lists_and_clears(demo_corpus, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    main(["features", "build", "--data_path", str(demo_corpus), "--do_audio", "--resample_rate", "8000",
          "--split", "dev", "test", "test_stt", "--feature_cache", cache, "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert "dev: 70 clips" in out and "test_stt: 70 clips" in out
    main(["features", "info", "--feature_cache", cache])
    info = capsys.readouterr().out
    assert "2 entries" in info and info.count("\n  audio ") == 2  # test_stt reused test's MFCCs
    main(["features", "clear", "--feature_cache", cache])
    assert "removed 2 entries" in capsys.readouterr().out
    assert FeatureCache(cache).entries() == []


def test_a_manifest_is_keyed_by_its_files_and_decoded_only_to_build(dev, tmp_path):
    import soundfile as sf

    from audiotext.data.manifest import load_manifest_split

    rows = ["audio,text,label"]
    for i, clip in enumerate(dev.audio[:4]):
        sf.write(tmp_path / f"{i}.flac", clip, 48000, subtype="PCM_16")
        rows.append(f"{i}.flac,{dev.sentences[i]},{REFERENCE_LABELS[dev.labels[i]]}")
    manifest = tmp_path / "clips.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cache = FeatureCache(tmp_path / "cache", progress=False)

    def features():
        split = load_manifest_split(manifest, None, REFERENCE_LABELS, 48000)
        return encode_split(split, AUDIO, None, use_audio=True, cache=cache, progress=False).audio

    first = features()
    assert np.array_equal(features().values, first.values) and len(entries(cache, "audio")) == 1
    changed = dev.audio[2].copy()
    changed[len(changed) // 2] += 1
    sf.write(tmp_path / "2.flac", changed, 48000, subtype="PCM_16")
    features()
    assert len(entries(cache, "audio")) == 2, "a file whose samples changed must not reuse the old entry"


class ClipsThatSayWhatTheyAreMadeOf(Sequence):
    """Clips with `identity(i)`, as a manifest's files have it, counting how often they are decoded."""

    def __init__(self, clips: list[np.ndarray]) -> None:
        self.clips, self.decoded = clips, 0

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> np.ndarray:
        clip = self.clips[i]  # IndexError past the end, which ends an iteration: not a decode
        self.decoded += 1
        return clip

    def identity(self, i: int) -> bytes:
        return hashlib.sha256(self.clips[i].tobytes()).digest()


def test_clips_that_say_what_they_are_made_of_are_decoded_only_to_build_their_entry(tmp_path):
    rng = np.random.default_rng(0)
    clips = ClipsThatSayWhatTheyAreMadeOf([(rng.normal(size=9600) * 3000).astype(np.int16) for _ in range(3)])
    cache = FeatureCache(tmp_path, progress=False)
    first = audio_features(clips, AUDIO, cache)
    assert clips.decoded == 3
    again = audio_features(clips, AUDIO, cache)
    assert clips.decoded == 3 and np.array_equal(again.values, first.values) and len(entries(cache, "audio")) == 1


def test_packed_sequences_keep_each_sequence_and_give_the_mean_and_std_of_every_step():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (5, 1, 0, 9)]
    packed = PackedSequences.from_arrays(arrays)
    assert len(packed) == 4 and packed.lengths().tolist() == [5, 1, 0, 9] and packed.width == 4
    assert packed.values.dtype == np.float16  # as a cache entry stores them
    for i, array in enumerate(arrays):
        assert torch.equal(packed[i], torch.from_numpy(as_stored(array)))
    steps = np.concatenate(arrays).astype(np.float16).astype(np.float64)
    for chunk in (1 << 18, 4):  # all at once, and in chunks that cut through sequences
        mean, std = packed.mean_std(chunk=chunk)
        np.testing.assert_allclose(mean, steps.mean(0), rtol=1e-12)
        np.testing.assert_allclose(std, steps.std(0, ddof=1), rtol=1e-9)
    mean, std = PackedSequences.from_arrays([[[1.0], [3.0]]]).mean_std()
    assert mean.tolist() == [2.0] and std.tolist() == [pytest.approx(2.0**0.5)]  # unbiased: n - 1 = 1
    mean, std = PackedSequences.from_arrays([[[5.0, 1.0]], [[5.0, 2.0]], [[5.0, 3.0]]]).mean_std()
    assert std.tolist() == [0.0, 1.0]  # a constant column has no spread, whatever rounding says
    empty = PackedSequences.from_arrays([])
    assert len(empty) == 0 and empty.values.shape == (0, 0) and empty.values.dtype == np.float16
    for offsets in ([0, 2], [1, 3], [0, 2, 1, 3]):  # short of the end, past the start, going back
        with pytest.raises(ValueError, match="offsets do not cut 3 steps"):
            PackedSequences(np.zeros((3, 2)), np.array(offsets))


class _WritesAMarker:
    """Unpickling it would create `path`: the proof that a file was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_entry_is_mapped_read_only_and_its_offsets_are_never_unpickled(tmp_path):
    cache = FeatureCache(tmp_path / "cache", progress=False)
    arrays = [np.full((n, 3), float(n), np.float32) for n in (2, 4)]
    packed = cache.packed("audio", "k", 2, lambda: iter(arrays), facts={}, what="test")
    assert not packed.values.flags.writeable  # a training run cannot change the cache through it
    entry = tmp_path / "cache" / "audio" / "k"
    assert json.loads((entry / "entry.json").read_text())["key"] == "k"
    marker = tmp_path / "unpickled"
    np.save(entry / "offsets.npy", np.array([_WritesAMarker(str(marker))], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        FeatureCache.load(entry)
    assert not marker.exists()


def test_the_cache_lives_where_the_environment_says_else_in_the_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTEXT_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere" and FeatureCache().root == tmp_path / "elsewhere"
    assert FeatureCache(tmp_path / "given").root == tmp_path / "given"
    monkeypatch.setenv("AUDIOTEXT_CACHE", "")  # set but empty counts as not set
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "audiotext" / "features"
    monkeypatch.delenv("AUDIOTEXT_CACHE")
    assert default_cache_dir() == tmp_path / ".cache" / "audiotext" / "features"
