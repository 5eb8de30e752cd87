"""Offline transcription with the real Vosk Korean model on real (espeak-ng) clips."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiotext.cli import main
from audiotext.config import REFERENCE_LABELS
from audiotext.data.asr import NOTHING_HEARD, TranscriptionUnavailable, VoskTranscriber, character_error_rate
from audiotext.data.corpus import load_split, write_reference_pickle
from audiotext.errors import DataError
from audiotext.inference.export import export_model
from audiotext.inference.recognizer import EmotionRecognizer

HANGUL = ("\uac00", "\ud7a3")


@pytest.fixture(scope="module")
def three_clips(demo_corpus, tmp_path_factory):
    """The first three test clips of the demo corpus as a split pickle of their own."""
    test = pd.read_pickle(demo_corpus / "test.pkl").iloc[:3]
    path = tmp_path_factory.mktemp("asr") / "few.pkl"
    write_reference_pickle(path, test["person_ix"], list(test["audio"]), list(test["Sentence"]), list(test["Emotion"]))
    return path


def test_character_error_rate_counts_edits_over_reference_characters():
    assert character_error_rate(["안녕 하세요."], ["안녕하세요"]) == 0  # spaces and punctuation are not heard
    assert character_error_rate(["가나다라"], ["가나마라"]) == pytest.approx(1 / 4)
    assert character_error_rate(["가나다라", "마바"], ["가나", "마바사"]) == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="2 references but 1"):
        character_error_rate(["a", "b"], ["a"])


def test_vosk_hears_korean_in_demo_clips(three_clips):
    split = load_split(three_clips, REFERENCE_LABELS)
    transcriber = VoskTranscriber()
    heard = [transcriber.transcribe(clip, 48000) for clip in split.audio]
    assert all(any(HANGUL[0] <= ch <= HANGUL[1] for ch in text) for text in heard), heard
    # Floats and 32-bit PCM are heard as the same clip (not wrapped to silence). Vosk does not always
    # hear the same samples alike (a word of this clip changes from one call to the next): no equality.
    for same_clip in (split.audio[0] / 32768.0, split.audio[0].astype(np.int32) * 65536):
        again = transcriber.transcribe(same_clip, 48000)
        assert character_error_rate([heard[0]], [again]) < 0.6, (heard[0], again)  # silence: 1
    with pytest.raises(DataError, match="int64 samples must use int64's range"):
        transcriber.transcribe(np.asarray(split.audio[0].tolist()), 48000)


def test_transcribe_command_writes_a_test_stt_split(three_clips, tmp_path, capsys):
    out = tmp_path / "few_stt.pkl"
    main(["transcribe", "--data", str(three_clips.parent), "--split", "few", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert "3 clips, character error rate" in printed
    original, transcribed = load_split(three_clips, REFERENCE_LABELS), load_split(out, REFERENCE_LABELS)
    assert list(transcribed.labels) == list(original.labels) and transcribed.speakers == original.speakers
    assert all(a.tolist() == b.tolist() for a, b in zip(transcribed.audio, original.audio))
    assert transcribed.sentences != original.sentences and all(transcribed.sentences)
    placeholders = transcribed.sentences.count(NOTHING_HEARD)
    assert f"nothing heard in {placeholders}" in printed


class RememberingVosk(VoskTranscriber):
    """Vosk that answers a clip it has heard before as it did then: Kaldi's decoder does not always
    give the same words for the same samples twice (2 of the demo's first 3 clips over 6 calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: dict[bytes, str] = {}

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        key = np.asarray(samples).tobytes() + str(sample_rate).encode()
        if key not in self.heard:
            self.heard[key] = super().transcribe(samples, sample_rate)
        return self.heard[key]


def test_a_text_model_without_a_transcript_transcribes(trained_runs, three_clips, tmp_path):
    recognizer = EmotionRecognizer.from_pretrained(export_model(trained_runs["linear"], tmp_path / "m"), device="cpu",
                                                   transcriber=RememberingVosk())  # fmt: skip
    clip = load_split(three_clips, REFERENCE_LABELS).audio[0]
    heard = recognizer.transcribe(clip, sampling_rate=48000)
    scores = recognizer.predict(clip, sampling_rate=48000)
    assert scores == recognizer.predict(clip, text=heard, sampling_rate=48000)


def test_a_blank_text_is_no_transcript_and_the_one_heard_is_printed(trained_runs, three_clips, tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    sf.write(clip, load_split(three_clips, REFERENCE_LABELS).audio[0], 48000, subtype="PCM_16")
    recognizer = EmotionRecognizer.from_pretrained(trained_runs["linear"], device="cpu")
    main(["predict", str(trained_runs["linear"]), "--audio", str(clip), "--text", "  ", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert any(HANGUL[0] <= ch <= HANGUL[1] for ch in printed["text"])
    assert printed["scores"] == recognizer.predict(str(clip), text=printed["text"])


def test_transcribe_writes_beside_a_manifest_and_checks_out_first(demo_corpus, tmp_path, monkeypatch, cli_error):
    test = pd.read_pickle(demo_corpus / "test.pkl").iloc[:2]
    for i, audio in enumerate(test["audio"]):
        sf.write(tmp_path / f"clip{i}.wav", audio, 48000, subtype="PCM_16")
    manifest = tmp_path / "clips.csv"
    pd.DataFrame({"audio": ["clip0.wav", "clip1.wav"], "text": list(test["Sentence"]), "label": list(test["Emotion"]),
                  "split": "test"}).to_csv(manifest, index=False)  # fmt: skip
    labels = ",".join(REFERENCE_LABELS)
    main(["transcribe", "--data", str(manifest), "--labels", labels, "--quiet"])
    assert len(load_split(tmp_path / "test_stt.pkl", REFERENCE_LABELS)) == 2
    monkeypatch.setitem(sys.modules, "vosk", None)  # transcribing would fail: --out is checked before
    # The corpus's own test_stt.pkl (or an earlier transcription) is replaced only when named.
    code, printed = cli_error("transcribe", "--data", manifest, "--labels", labels)
    assert code == 2 and printed == (f"error: {tmp_path / 'test_stt.pkl'} exists (the corpus's own test_stt.pkl, or an "
                                     f"earlier transcription): give --out {tmp_path / 'test_stt.pkl'} to replace it, "
                                     "or --out NEW.pkl\n")  # fmt: skip
    code, printed = cli_error("transcribe", "--data", manifest, "--labels", labels, "--out", manifest / "x.pkl")
    assert code == 2 and printed == f"error: --out {manifest / 'x.pkl'}: {manifest} is a file, not a folder\n"
    # The true test transcripts were replaced by the recogniser's without a word.
    (tmp_path / "test.pkl").write_bytes(b"the corpus's own split")
    for out in (tmp_path / "test.pkl", manifest):
        code, printed = cli_error("transcribe", "--data", manifest, "--labels", labels, "--out", out)
        assert code == 2 and printed.startswith(f"error: --out {out} is a file of the corpus {manifest}")
    assert (tmp_path / "test.pkl").read_bytes() == b"the corpus's own split"
    (tmp_path / "asr.pkl").write_bytes(b"an earlier transcription")  # one's own output may be written again
    code, printed = cli_error("transcribe", "--data", manifest, "--labels", labels, "--out", tmp_path / "asr.pkl")
    assert code == 1 and printed.startswith("error: offline transcription needs the asr extra")
    code, printed = cli_error("transcribe", "--data", manifest, "--sample_rate", "1")  # an OverflowError in soxr
    assert code == 2 and printed == "error: --sample_rate 1: a rate of stored clips is 1000 to 384000 Hz\n"


def test_without_the_extra_the_error_says_how_to_install_it(monkeypatch, trained_runs, three_clips, tmp_path, cli_error):
    monkeypatch.setitem(sys.modules, "vosk", None)  # as if vosk were not installed
    with pytest.raises(TranscriptionUnavailable, match=r"pip install 'audiotext\[asr\]'"):
        VoskTranscriber()
    code, printed = cli_error("transcribe", "--data", three_clips.parent, "--split", "few", "--out", tmp_path / "x.pkl")
    assert code == 1 and printed.startswith("error: offline transcription needs the asr extra")
    assert not (tmp_path / "x.pkl").exists()
    clip = load_split(three_clips, REFERENCE_LABELS).audio[0]
    sf.write(tmp_path / "clip.wav", clip, 48000, subtype="PCM_16")
    code, printed = cli_error("predict", trained_runs["linear"], "--audio", tmp_path / "clip.wav")
    assert code == 1 and printed.startswith("error: offline transcription needs the asr extra")
    main(["predict", str(trained_runs["audio"]), "--audio", str(tmp_path / "clip.wav")])  # reads no text: no recogniser


def test_prepare_writes_the_transcribed_split(demo_corpus, tmp_path):
    frame = pd.read_pickle(demo_corpus / "test.pkl").iloc[:20]
    rows = []
    for i, clip in enumerate(frame.itertuples()):
        sf.write(tmp_path / f"clip{i}.wav", clip.audio, 48000, subtype="PCM_16")
        rows.append({"audio": f"clip{i}.wav", "text": clip.Sentence, "label": clip.Emotion})
    pd.DataFrame(rows).to_csv(tmp_path / "clips.csv", index=False)
    prepared = tmp_path / "prepared"
    main(["prepare", "manifest", "--manifest", str(tmp_path / "clips.csv"), "--out", str(prepared),
          "--ratios", "0.8", "0.1", "0.1", "--min_label_clips", "1", "--transcribe", "test", "--quiet"])  # fmt: skip
    labels = pd.read_json(prepared / "labels.json")[0].tolist()
    test, transcribed = load_split(prepared / "test.pkl", labels), load_split(prepared / "test_stt.pkl", labels)
    assert len(transcribed) == len(test) > 0 and list(transcribed.labels) == list(test.labels)
    assert transcribed.sentences != test.sentences
