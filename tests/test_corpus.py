"""Loading the reference pickles: both column spellings, and errors that name file, row and problem."""

import numpy as np
import pandas as pd
import pytest

from audiotext.config import REFERENCE_LABELS
from audiotext.data.corpus import CorpusError, load_split
from audiotext.data.manifest import load_any_split


@pytest.fixture
def frame(demo_corpus) -> pd.DataFrame:
    return pd.read_pickle(demo_corpus / "dev.pkl").head(5).reset_index(drop=True)


def write(frame: pd.DataFrame, tmp_path, name="split.pkl"):
    path = tmp_path / name
    frame.to_pickle(path)
    return path


def test_reference_and_revised_column_spellings_load_the_same(frame, tmp_path):
    reference = load_split(write(frame, tmp_path, "a.pkl"), REFERENCE_LABELS)
    revised = frame.rename(columns={"person_ix": "person_idx", "Sentence": "sentence", "Emotion": "emotion"})
    other = load_split(write(revised, tmp_path, "b.pkl"), REFERENCE_LABELS)
    assert reference.sentences == other.sentences == list(frame["Sentence"])
    assert reference.labels.tolist() == other.labels.tolist() == [REFERENCE_LABELS.index(e) for e in frame["Emotion"]]
    assert all(np.array_equal(a, b) for a, b in zip(reference.audio, other.audio))


def test_configurable_label_order(frame, tmp_path):
    reversed_labels = list(reversed(REFERENCE_LABELS))
    split = load_split(write(frame, tmp_path), reversed_labels)
    assert [reversed_labels[i] for i in split.labels] == list(frame["Emotion"])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.drop(columns=["Sentence"]), r"missing column 'sentence'"),
        (lambda f: f.assign(Emotion=["기쁨"] + list(f["Emotion"][1:])), r"row 0: column 'emotion' has unknown label '기쁨'"),
        (lambda f: f.assign(Sentence=list(f["Sentence"][:2]) + ["  "] + list(f["Sentence"][3:])), r"row 2: column 'sentence' is empty"),
        (lambda f: f.assign(audio=list(f["audio"][:1]) + [np.array([], dtype=np.int16)] + list(f["audio"][2:])), r"row 1: column 'audio' is empty"),
        (lambda f: f.assign(audio=list(f["audio"][:3]) + [np.array(["a", "b"])] + list(f["audio"][4:])), r"row 3: column 'audio' is not numeric"),
    ],
    ids=["missing-column", "unknown-label", "empty-sentence", "empty-audio", "non-numeric-audio"],
)
def test_bad_rows_name_file_row_and_problem(frame, tmp_path, damage, message):
    path = write(damage(frame.copy()), tmp_path)
    with pytest.raises(CorpusError, match=message) as err:
        load_split(path, REFERENCE_LABELS)
    assert str(path) in str(err.value)


def test_not_a_dataframe_and_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="no such split file"):
        load_split(tmp_path / "absent.pkl", REFERENCE_LABELS)
    with pytest.raises(CorpusError, match=r"^\S*/mytest.pkl: no such split file"):  # named as given, not mytest.pkl.pkl
        load_any_split(tmp_path, str(tmp_path / "mytest.pkl"), REFERENCE_LABELS, 16000)
    bad = tmp_path / "list.pkl"
    pd.to_pickle([1, 2, 3], bad)
    with pytest.raises(CorpusError, match="expected a pandas DataFrame"):
        load_split(bad, REFERENCE_LABELS)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(CorpusError, match="not a readable pandas pickle"):
        load_split(garbage, REFERENCE_LABELS)


def test_clip_shorter_than_one_window_names_file_and_row(frame, tmp_path):
    from audiotext.config import AudioConfig
    from audiotext.data.dataset import encode_split

    short = frame.assign(audio=list(frame["audio"][:4]) + [np.array([0, 120, -80, 0] * 20, dtype=np.int16)])
    path = write(short, tmp_path)
    split = load_split(path, REFERENCE_LABELS)
    with pytest.raises(CorpusError, match=r"row 4: clip has \d+ samples") as err:
        encode_split(split, AudioConfig(), text_encoder=None, use_audio=True, progress=False)
    assert str(path) in str(err.value)


def test_a_sentence_that_normalises_to_nothing_is_refused_for_text_models_with_file_and_row(frame, tmp_path):
    from audiotext.config import AudioConfig
    from audiotext.data.dataset import encode_split
    from audiotext.features.text import TextEncoder

    emoji = frame.assign(Sentence=list(frame["Sentence"][:3]) + ["🙂 ~~ 😢"] + list(frame["Sentence"][4:]))
    path = write(emoji, tmp_path)
    split = load_split(path, REFERENCE_LABELS)
    with pytest.raises(CorpusError, match=r"row 3: the sentence '🙂 ~~ 😢' normalises to nothing") as err:
        encode_split(split, AudioConfig(), TextEncoder(None), use_audio=False, progress=False)
    assert str(path) in str(err.value)
    # An audio-only model never reads the sentence, so the split is fine for it.
    assert len(encode_split(split, AudioConfig(), None, use_audio=True, progress=False)) == len(frame)
