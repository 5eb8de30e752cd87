"""`EmotionRecognizer`: a trained model asked about new recordings, from Python.

    recognizer = EmotionRecognizer.from_pretrained("models/mult")   # a model folder or a run folder
    recognizer.predict("clip.wav", text="정말 고마워요")
    # [{"label": "행복", "score": 0.91}, {"label": "중립", "score": 0.04}, ...]   best first

The output has the shape of Hugging Face's audio-classification pipeline; a list of clips gives a
list of such lists, computed in batches. A clip is a file path (anything PyAV decodes), an array
of samples with `sampling_rate` (any rate; mono, or channels that are mixed down), or the
pipeline's {"raw": array, "sampling_rate": rate}. A model that reads text and is given none
transcribes the clip offline (`audiotext.data.asr`, the `asr` extra).

Features are computed exactly as for training and testing (`features.audio.clip_features`, rounded
as the feature cache stores them), so a test clip gets the probabilities `audiotext test` wrote for it.
"""

from __future__ import annotations

import io
import itertools
import math
import numbers
import os
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np
import pandas as pd
import torch

from audiotext.config import RunConfig
from audiotext.data.asr import Transcriber, default_transcriber
from audiotext.data.dataset import pad_streams
from audiotext.data.loading import text_encoder_for
from audiotext.data.media import load_audio
from audiotext.errors import DataError, SettingError
from audiotext.features.audio import check_samples, float_samples
from audiotext.features.cache import as_stored
from audiotext.features.text import ALPHABET_RULES, normalize_text
from audiotext.features.workers import FeatureWorkers, Reader
from audiotext.inference.export import export_model, is_model_folder, verify_model_folder
from audiotext.inference.onnx_graph import ONNX_FILE, OnnxClassifier
from audiotext.inference.predict import forward
from audiotext.models.checkpoint import load_run
from audiotext.runtime import select_device

AudioInput = Union[str, os.PathLike, np.ndarray, torch.Tensor, dict]
BACKENDS = ("torch", "onnx")
# Batches decoded and handed to the feature workers ahead of the forward pass: enough for the
# workers never to wait on it, few enough that a long manifest costs a few batches of memory.
LOOKAHEAD_BATCHES = 2


class EmotionRecognizer:
    def __init__(self, cfg: RunConfig, model: torch.nn.Module, source: Path, device: torch.device,
                 transcriber: Transcriber | None = None, backend: str = "torch", feature_workers: int = 0) -> None:  # fmt: skip
        if backend not in BACKENDS:
            raise SettingError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "onnx" and not is_model_folder(source):
            # Only a model folder's files are checked against their digests: a model.onnx put in a
            # run folder by hand (another model's) answered for this run's weights.
            raise DataError(f"{source}: the ONNX backend runs the graph of a model folder, not a run folder: "
                            f"write one with audiotext export {source} --out DIR --onnx")  # fmt: skip
        self.cfg, self.model, self.source, self.device = cfg, model.eval(), source, device
        self.text_encoder = text_encoder_for(cfg, device, source)
        self.onnx = OnnxClassifier(source / ONNX_FILE, cfg, self.text_encoder) if backend == "onnx" else None
        self._transcriber = transcriber
        self._features = FeatureWorkers(cfg.audio, feature_workers)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        transcriber: Transcriber | None = None,
        backend: str = "torch",
        feature_workers: int = 0,
    ) -> "EmotionRecognizer":
        """From a model folder (`audiotext export`, `save_pretrained`; every file is checked against
        the digests it was exported with) or straight from a run folder. Config, weights, labels
        and feature settings must agree, else `CheckpointError` names what differs.

        `backend="onnx"` runs the model folder's ONNX graph (`export --onnx`) on onnxruntime.
        `feature_workers` > 0 decodes the clips of a batch and computes their audio features in
        that many processes while the previous batch's forward pass runs: worth it for many clips
        (`close`, or leaving a `with` block, stops them)."""
        path = Path(path)
        if is_model_folder(path):
            verify_model_folder(path)
        device = select_device() if device is None else torch.device(device)
        cfg, model = load_run(path, device)
        return cls(cfg, model, path, device, transcriber, backend, feature_workers)

    def close(self) -> None:
        """Stops the feature workers, if any."""
        self._features.close()

    def __enter__(self) -> "EmotionRecognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Writes this model's folder (see `audiotext.inference.export`)."""
        return export_model(self.source, out_dir)

    @property
    def labels(self) -> list[str]:
        return list(self.cfg.labels)

    @property
    def reads_audio(self) -> bool:
        return self.cfg.model.modality != "text"

    @property
    def reads_text(self) -> bool:
        return self.cfg.model.modality != "audio"

    @property
    def transcriber(self) -> Transcriber:
        if self._transcriber is None:  # Vosk's model loads only when a clip needs it
            self._transcriber = default_transcriber()
        return self._transcriber

    def needs_transcript(self, text: str | None) -> bool:
        """Whether a clip given `text` is to be transcribed: the model reads text, and `text` is
        missing or blank."""
        return self.reads_text and (text is None or not text.strip())

    def transcribe(self, audio: AudioInput, sampling_rate: int | None = None, name: str = "clip") -> str:
        """What the offline recogniser hears in the clip; DataError naming the clip when that is no
        word the text features keep."""
        heard = self.transcriber.transcribe(*read_clip(audio, sampling_rate, name))
        if not normalize_text(heard, self.cfg.text.alphabet):
            raise DataError(f"{name}: the recogniser heard no words; give the transcript")
        return heard

    def predict(
        self,
        audio: AudioInput | Sequence[AudioInput],
        text: str | Sequence[str | None] | None = None,
        sampling_rate: int | None = None,
        top_k: int | None = None,
        batch_size: int = 32,
    ) -> list[dict] | list[list[dict]]:
        """[{"label", "score"}] of every class (or the `top_k` best), best first; a list of such
        lists for a list of clips (and of transcripts, None where the clip is to be transcribed)."""
        check_top_k(top_k)  # before the clips are read and predicted, not after
        single = not is_many_clips(audio)
        clips = [audio] if single else audio
        texts = [text] if single else text
        ranked = [self.ranked(p, top_k) for p in self.predict_proba(clips, texts, sampling_rate, batch_size)]
        return ranked[0] if single else ranked

    def ranked(self, probabilities: np.ndarray, top_k: int | None = None) -> list[dict]:
        check_top_k(top_k)
        order = np.argsort(-probabilities, kind="stable")[:top_k]
        return [{"label": self.cfg.labels[i], "score": float(probabilities[i])} for i in order]

    def predict_proba(
        self,
        clips: Sequence[AudioInput],
        texts: Sequence[str | None] | None = None,
        sampling_rate: int | None = None,
        batch_size: int = 32,
        names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """(N, C) class probabilities of N clips, in the order of `labels`, computed (and files
        decoded) one batch at a time. `names` (a file and row each, say) are what error messages
        call the clips; by default their path or position."""
        clips = list(clips)
        if isinstance(texts, str):
            raise DataError(f"{len(clips)} clips but one transcript: give a list of transcripts (None where a "
                            "clip is to be transcribed), or no text to transcribe them all")  # fmt: skip
        texts = [None] * len(clips) if texts is None else list(texts)
        if names is None:
            names = [str(c) if isinstance(c, (str, os.PathLike)) else f"clip {i}" for i, c in enumerate(clips)]
        for given, what in ((texts, "transcripts"), (names, "names")):
            if len(given) != len(clips):  # zip would drop the clips past the shorter list
                raise DataError(f"{len(clips)} clips but {len(given)} {what}")
        batches = list(self.iter_proba(zip(clips, texts, names), sampling_rate, batch_size))
        return np.concatenate(batches) if batches else np.zeros((0, len(self.labels)), np.float32)

    def iter_proba(
        self,
        clips: Iterable[tuple[Any, str | None, str]],
        sampling_rate: int | None = None,
        batch_size: int = 32,
        read: Reader | None = None,
    ) -> Iterator[np.ndarray]:
        """(B, C) probabilities batch after batch of (clip, transcript or None, name) triples, each
        clip read when its batch is, by `read` (`read_clip` unless given). With feature workers the
        clips are read and their features computed there, the next batches' while this one runs
        through the model; a long iterable costs a few batches of memory either way."""
        check_batch_size(batch_size)
        clips, pending, read = iter(clips), deque(), read or read_clip
        lookahead = LOOKAHEAD_BATCHES if self._features.workers else 0
        with self._features.sharing_cores():
            for batch in iter(lambda: list(itertools.islice(clips, batch_size)), []):
                pending.append(self._prepare(batch, sampling_rate, read))
                if len(pending) > lookahead:
                    yield self._batch_proba(*pending.popleft())
            while pending:
                yield self._batch_proba(*pending.popleft())

    def _prepare(self, batch: list[tuple], sampling_rate: int | None, read: Reader) -> tuple:
        """Starts a batch's audio features and reads (or transcribes) its sentences. A clip is read
        here only when its samples are wanted here: to transcribe it, or for a model without audio,
        to check it."""
        jobs, sentences = [], []
        for clip, text, name in batch:
            text = given_transcript(text, name)
            job = (clip, sampling_rate, name, read)
            transcribed = self.needs_transcript(text)
            if transcribed or not self.reads_audio:
                samples, rate = read(clip, sampling_rate, name)
                job = ({"raw": samples, "sampling_rate": rate}, None, name, read_clip)
                if transcribed:
                    text = self.transcribe(samples, rate, name)
            jobs.append(job)
            if self.reads_text:
                sentences.append(self._sentence(text, name))
        features = self._features.submit(jobs) if self.reads_audio else None
        return len(batch), features, sentences if self.reads_text else None

    @torch.inference_mode()
    def _batch_proba(self, size: int, features, sentences: list[str] | None) -> np.ndarray:
        # Rounded as training and `audiotext test` stored them (`as_stored`): the same values, the same probabilities.
        audio = [None] * size if features is None else [torch.from_numpy(as_stored(f)) for f in features()]
        if self.onnx is not None:
            return self.onnx.probabilities(audio, sentences)
        text = [None] * size
        if sentences is not None:
            text = [torch.from_numpy(as_stored(states)) for states in self.text_encoder.encode(sentences, progress=False)]
        logits = forward(self.model, pad_streams(audio, text), self.device)  # (B, C)
        return logits.float().softmax(-1).cpu().numpy()

    def _sentence(self, text: str, name: str) -> str:
        alphabet = self.cfg.text.alphabet
        sentence = normalize_text(text, alphabet)
        if not sentence:
            raise DataError(f"{name}: the transcript {text!r} normalises to nothing "
                            f"(the text features keep {ALPHABET_RULES[alphabet]})")  # fmt: skip
        return sentence


def is_many_clips(audio: Any) -> bool:
    """Whether `predict` was given several clips: a list, tuple or generator, or an array or pandas
    Series of objects or strings (arrays, paths); an array of numbers is one clip's samples."""
    if isinstance(audio, (list, tuple)) or (isinstance(audio, Iterator) and not isinstance(audio, io.IOBase)):
        return True  # an open file iterates over lines of its bytes: one clip, which `read_clip` refuses
    if not hasattr(audio, "dtype") or isinstance(audio, torch.Tensor):
        return False
    # A 0-d array holds one clip; np.array(paths) holds strings, not objects.
    array = np.asarray(audio)
    return array.ndim > 0 and array.dtype.kind in "OU"


def check_batch_size(batch_size: int, setting: str = "batch_size") -> None:
    """Refuses a batch size below 1 (named as `setting`): 0 would predict no clip, without a word."""
    check_whole_number(batch_size, setting)
    if batch_size < 1:
        raise SettingError(f"{setting} must be at least 1, got {batch_size}")


def check_top_k(top_k: int | None) -> None:
    """Refuses a `top_k` that is no whole number of at least 1 (None: every class)."""
    if top_k is not None:
        check_whole_number(top_k, "top_k")
        if top_k < 1:  # [:0] would give no class, [:-1] all but the last
            raise SettingError(f"top_k must be at least 1 (or None for every class), got {top_k}")


def check_whole_number(value: Any, setting: str) -> None:
    """Refuses a count that is no integer (2.5, None, True): a slice or islice raised its own
    TypeError or ValueError, and True counted as 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingError(f"{setting} must be a whole number, got {value!r}")


def given_transcript(text: Any, name: str) -> str | None:
    """A clip's transcript as given: a string, or None (pandas' NaN or NA of an empty cell too) for
    one to transcribe; anything else is refused naming the clip (its `.strip()` raised an AttributeError)."""
    if isinstance(text, str):
        return text
    # pandas marks an empty cell NaN, or NA in a column of its string dtype (`dtype="string"`).
    if text is None or (pd.api.types.is_scalar(text) and pd.isna(text)):
        return None
    raise DataError(f"{name}: a transcript is a string (or None to transcribe the clip), got {type(text).__name__} {text!r}")


def read_clip(audio: AudioInput, sampling_rate: int | None = None, where: str = "clip") -> tuple[np.ndarray, int]:
    """(mono samples, rate) of a file path, an array with its rate, or {"raw"/"array", "sampling_rate"}.

    Integer samples are kept (scaled by their dtype's range when features are computed; int32 or
    int64 ones that fit in int16 are refused); float samples must lie in [-1, 1].
    A 2-D array is (samples, channels) or (channels, samples): the shorter side is taken for the
    channels and mixed down.
    """
    if isinstance(audio, (str, os.PathLike)):
        if sampling_rate is not None:
            raise DataError(f"{audio}: a file's rate is read from the file; give sampling_rate only with samples")
        return load_audio(audio)
    if isinstance(audio, io.IOBase):  # its lines were taken for clips ("1111 clips but one transcript")
        raise DataError(f"{where}: an open file is no clip: give its path, or its samples with their sampling_rate")
    if isinstance(audio, dict):
        # {"path": ..., "sampling_rate": ...} without samples read as the shape () of None before.
        if sampling_rate is not None or "sampling_rate" not in audio or not audio.keys() & {"raw", "array"}:
            raise DataError(f"{where}: a dict clip gives its own 'sampling_rate' (and 'raw' or 'array')")
        sampling_rate, audio = audio["sampling_rate"], audio.get("raw", audio.get("array"))
    if isinstance(audio, torch.Tensor):
        # NumPy has no bfloat16: such samples come over as float32, every value exact.
        audio = (audio.float() if audio.dtype == torch.bfloat16 else audio).detach().cpu().numpy()
    samples = np.asarray(audio)
    try:
        rate = float(sampling_rate)
    except (TypeError, ValueError):  # None, or no number at all
        rate = math.nan
    if not (math.isfinite(rate) and rate >= 1):
        raise DataError(f"{where}: an array of samples needs its sampling_rate (a positive number of Hz), "
                        f"got {sampling_rate!r}")  # fmt: skip
    if samples.ndim not in (1, 2) or samples.size == 0:
        raise DataError(f"{where}: expected samples of shape (N,) or (N, channels), got {np.shape(audio)}")
    try:
        if samples.ndim == 2:  # channels are mixed as floats: their mean is no integer
            samples = float_samples(samples).mean(axis=int(np.argmin(samples.shape)), dtype=np.float64).astype(np.float32)
        else:
            check_samples(samples)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    return samples, int(rate)
