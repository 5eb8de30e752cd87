"""The demo corpus, built for real with espeak-ng: format, splits, transcripts, determinism, errors."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audiotext.config import REFERENCE_LABELS
from audiotext.data.synthesis import SAMPLE_RATE, build_demo_corpus, load_demo_scripts

SPLIT_FILES = ("train", "dev", "test", "test_stt", "dev_stt")


def read_splits(out_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_pickle(out_dir / f"{name}.pkl") for name in SPLIT_FILES}


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


@pytest.fixture(scope="module")
def script_corpus(demo_corpora) -> tuple[Path, dict[str, int]]:
    out = demo_corpora["script"]
    info = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    return out, {name: sum(per_emotion.values()) for name, per_emotion in info["counts"].items()}


@pytest.fixture(scope="module")
def clip_corpus(demo_corpora) -> Path:
    return demo_corpora["clip"]


def test_scripts_are_unique_short_and_numbered_as_the_reference():
    scripts = load_demo_scripts()
    assert scripts["script_id"].tolist() == list(range(1, 351))
    # The reference's script file: ids 1-50 행복, 51-100 놀람, 101-150 중립, ... 301-350 슬픔.
    blocks = scripts.groupby("emotion")["script_id"].agg(["min", "max", "count"])
    assert blocks.loc["행복"].tolist() == [1, 50, 50] and blocks.loc["중립"].tolist() == [101, 150, 50]
    assert blocks.loc["슬픔"].tolist() == [301, 350, 50] and set(blocks.index) == set(REFERENCE_LABELS)
    assert scripts["sentence"].is_unique
    syllables = scripts["sentence"].map(lambda s: len(re.findall("[가-힣]", s)))
    assert syllables.between(4, 20).all()


def test_columns_dtypes_and_audio_format(script_corpus):
    out, counts = script_corpus
    splits = read_splits(out)
    assert counts == {name: len(frame) for name, frame in splits.items()}
    assert sum(counts[name] for name in ("train", "dev", "test")) == 2 * len(load_demo_scripts())
    for frame in splits.values():
        assert list(frame.columns) == ["person_ix", "audio", "Sentence", "Emotion"]
        assert frame["person_ix"].dtype == np.int64 and set(frame["person_ix"]) <= {0, 1}
        assert set(frame["Emotion"]) <= set(REFERENCE_LABELS)
        assert all(isinstance(s, str) and s for s in frame["Sentence"])
        for audio in frame["audio"]:
            assert isinstance(audio, np.ndarray) and audio.dtype == np.int16 and audio.ndim == 1
            assert len(audio) > SAMPLE_RATE // 2


def test_clips_start_and_end_with_exact_silence_around_noisy_speech(script_corpus):
    out, _ = script_corpus
    min_run = int(0.05 * SAMPLE_RATE)
    for audio in pd.read_pickle(out / "dev.pkl")["audio"]:
        assert not audio[:min_run].any() and not audio[-min_run:].any()
        speech = audio[np.flatnonzero(audio)[0] : np.flatnonzero(audio)[-1] + 1]
        assert np.mean(speech == 0) < 0.05  # the noise fills the pauses inside the speech


def test_script_split_never_puts_a_test_sentence_in_train(script_corpus):
    out, _ = script_corpus
    splits = read_splits(out)
    train, dev, test = (set(splits[name]["Sentence"]) for name in ("train", "dev", "test"))
    assert not train & test and not train & dev and not dev & test
    for frame in splits.values():
        assert set(frame["Emotion"]) == set(REFERENCE_LABELS)


def test_both_partitions_hold_the_same_clips(demo_corpora):
    def clips(folder: Path) -> pd.DataFrame:
        frame = pd.concat([pd.read_pickle(folder / f"{name}.pkl") for name in ("train", "dev", "test")])
        return frame.sort_values(["person_ix", "Sentence"]).reset_index(drop=True)

    clip, script = clips(demo_corpora["clip"]), clips(demo_corpora["script"])
    assert len(clip) == 2 * len(load_demo_scripts())
    assert clip[["person_ix", "Sentence", "Emotion"]].equals(script[["person_ix", "Sentence", "Emotion"]])
    assert all(np.array_equal(a, b) for a, b in zip(clip["audio"], script["audio"]))


def test_clip_split_is_stratified_and_shares_sentences(clip_corpus):
    splits = read_splits(clip_corpus)
    for frame in splits.values():
        assert set(frame["Emotion"]) == set(REFERENCE_LABELS)
    per_emotion = splits["train"]["Emotion"].value_counts()
    assert per_emotion.min() == per_emotion.max()  # same share of every emotion
    assert len(splits["train"]) / sum(len(splits[name]) for name in ("train", "dev", "test")) == pytest.approx(0.8, abs=0.05)
    assert set(splits["train"]["Sentence"]) & set(splits["test"]["Sentence"])


@pytest.mark.parametrize("split", ["test", "dev"])
def test_stt_transcripts_are_aligned_and_mostly_slightly_wrong(script_corpus, split):
    out, _ = script_corpus
    test, stt = pd.read_pickle(out / f"{split}.pkl"), pd.read_pickle(out / f"{split}_stt.pkl")
    assert test["person_ix"].tolist() == stt["person_ix"].tolist()
    assert test["Emotion"].tolist() == stt["Emotion"].tolist()
    assert all(np.array_equal(a, b) for a, b in zip(test["audio"], stt["audio"]))

    pairs = list(zip(test["Sentence"], stt["Sentence"]))
    changed = np.mean([truth != heard for truth, heard in pairs])
    assert 0.5 <= changed < 1.0  # most, not all
    errors = [edit_distance(truth, heard) / len(truth) for truth, heard in pairs]
    assert max(errors) < 0.5  # a transcript stays recognisably the same sentence
    assert 0.03 <= np.mean(errors) <= 0.2


def test_corpus_json_describes_the_build(script_corpus):
    out, counts = script_corpus
    info = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    assert info["seed"] == 0 and info["split_by"] == "script"
    assert len(info["speakers"]) == 2 and info["n_scripts"] == len(load_demo_scripts())
    assert {name: sum(per_emotion.values()) for name, per_emotion in info["counts"].items()} == counts


def test_same_seed_gives_identical_files_whatever_the_workers_and_another_seed_differs(tmp_path):
    runs = {
        "one_worker": dict(seed=3, workers=1),
        "two_workers": dict(seed=3, workers=2),
        "other_seed": dict(seed=4, workers=2),
    }
    for name, kwargs in runs.items():
        build_demo_corpus(tmp_path / name, split_by="script", n_speakers=1, progress=False, **kwargs)
    for split in SPLIT_FILES:
        first, second = (tmp_path / run / f"{split}.pkl" for run in ("one_worker", "two_workers"))
        assert first.read_bytes() == second.read_bytes()
        pd.testing.assert_frame_equal(pd.read_pickle(first), pd.read_pickle(second))
    same, other = (pd.read_pickle(tmp_path / run / "train.pkl") for run in ("one_worker", "other_seed"))
    assert set(same["Sentence"]) != set(other["Sentence"])  # other scripts held out
    shared = sorted(set(same["Sentence"]) & set(other["Sentence"]))[0]
    same_clip, other_clip = (frame.loc[frame["Sentence"] == shared, "audio"].iloc[0] for frame in (same, other))
    assert not np.array_equal(same_clip, other_clip)


def test_bad_split_by_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="'clip', 'script'"):
        build_demo_corpus(tmp_path, split_by="speaker", progress=False)


def test_missing_espeak_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no espeak-ng on the path
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        build_demo_corpus(tmp_path / "out", n_speakers=1, progress=False)
