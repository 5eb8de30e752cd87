"""One dataclass per concern, as the user sets it. A run directory stores them all in config.json
(with the widths derived from them and the data, see `audiotext.models.classifiers.Dims`), so a
model can be rebuilt from its run directory alone."""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from audiotext.errors import SettingError

# Class index 0..6 of the reference system: fear, surprise, anger, sadness, neutral, happiness, disgust.
REFERENCE_LABELS: tuple[str, ...] = ("공포", "놀람", "분노", "슬픔", "중립", "행복", "혐오")

AUDIO_FEATURES = ("mfcc", "mfcc+prosody")
TEXT_FEATURES = ("encoder", "ngrams")
TEXT_ALPHABETS = ("any", "korean")  # see audiotext.features.text.normalize_text
# "cross" is MulT; early, late, tfn and lmf fuse the two pooled streams without cross-attention;
# linear is the logistic regression on MFCC statistics and character n-grams.
MODALITIES = ("audio", "text", "cross", "early", "late", "tfn", "lmf", "linear")
FUSING = ("cross", "early", "late", "tfn", "lmf")  # the models that pool and fuse both streams
MERGES = ("average", "last", "stats")
SELECT_BY = ("loss", "macro_f1")


def modality_of(model: str) -> str:
    """The modality (ModelConfig.modality) of a model named on the command line: `mult` is "cross"."""
    return "cross" if model == "mult" else model


def _require(ok: bool, setting: str, value: Any, rule: str) -> None:
    if not ok:
        raise SettingError(f"{setting} = {value!r}: {rule}")


def _require_choice(setting: str, value: Any, choices: tuple) -> None:
    _require(value in choices, setting, value, f"must be one of {', '.join(map(str, choices))}")


def _require_share(setting: str, value: float, below_one: bool = True) -> None:
    _require(0 <= value < 1 if below_one else 0 <= value <= 1, setting, value,
             f"must be a share in [0, 1{')' if below_one else ']'}")  # fmt: skip


def plain_name(name: str, setting: str = "name") -> str:
    """`name` when it is one folder name: a run name must not lead out of the runs folder."""
    _require(bool(name) and PurePath(name).name == name and name not in (".", "..") and "\\" not in name,
             setting, name, "must be a plain folder name (no '/', '\\' or '..')")  # fmt: skip
    return name


# Speech needs a band of a few kHz: a clip said to be at a lower rate is one given in kHz (16 for
# 16000) or a misread header, which resampling would turn into a long hum and a confident answer.
LOWEST_CLIP_RATE = 1000
# A clip of one window gives 3 frames (centred, hop n_fft // 2), and the fusing models' kernel-3
# projection reads 3: fewer kept frames crashed training.
FEWEST_FRAMES = 3


@dataclass
class AudioConfig:
    sample_rate: int = 48000  # rate of the stored clips
    resample_rate: int = 16000  # rate the MFCCs are computed at
    n_fft_size: int = 400  # window and FFT size; hop is n_fft_size // 2
    n_mfcc: int = 40
    n_mels: int = 128
    max_len_for_audio: int = 400  # frames kept per clip
    features: str = "mfcc"  # "mfcc", or "mfcc+prosody": F0, voicing, energy and their deltas beside them

    def __post_init__(self) -> None:
        for setting in ("sample_rate", "resample_rate"):
            _require(getattr(self, setting) >= LOWEST_CLIP_RATE, setting, getattr(self, setting),
                     f"must be at least {LOWEST_CLIP_RATE} Hz (a rate given in kHz?)")  # fmt: skip
        _require(self.n_mels >= 1, "n_mels", self.n_mels, "must be at least 1")
        _require(self.max_len_for_audio >= FEWEST_FRAMES, "max_len_for_audio", self.max_len_for_audio,
                 f"must be at least {FEWEST_FRAMES} frames (one window's)")  # fmt: skip
        _require(self.n_fft_size >= 2, "n_fft_size", self.n_fft_size, "must be at least 2 (the hop is half of it)")
        _require(1 <= self.n_mfcc <= self.n_mels, "n_mfcc", self.n_mfcc, f"must be in 1..n_mels ({self.n_mels})")
        _require_choice("audio_features", self.features, AUDIO_FEATURES)


@dataclass
class TextConfig:
    encoder: str = ""  # local Hugging Face directory; "" means the packaged MiniLM
    max_len_for_text: int = 64  # tokens, [CLS] and [SEP] included
    hidden_size: int | None = None  # expected encoder width (--hidden_size_for_bert): checked, never overwritten
    features: str = "encoder"  # "encoder" (its token states) or "ngrams" (character n-gram TF-IDF, one vector)
    alphabet: str = "any"  # letters and digits of any script, or "korean": the reference's alphabet only

    def __post_init__(self) -> None:
        _require(self.max_len_for_text >= 3, "max_len_for_text", self.max_len_for_text,
                 "must leave room for [CLS], [SEP] and one token (at least 3)")  # fmt: skip
        _require(self.hidden_size is None or self.hidden_size >= 1, "hidden_size_for_bert", self.hidden_size, "must be at least 1")
        _require_choice("text_features", self.features, TEXT_FEATURES)
        _require_choice("text_alphabet", self.alphabet, TEXT_ALPHABETS)


@dataclass
class ModelConfig:
    modality: str = "cross"  # "audio", "text" or "cross"
    d_model: int = 30
    layers: int = 5
    num_heads: int = 5
    attn_dropout: float = 0.1
    attn_dropout_a: float = 0.0
    attn_dropout_v: float = 0.0  # kept for flag compatibility: this project has no visual stream
    relu_dropout: float = 0.1
    embed_dropout: float = 0.25
    res_dropout: float = 0.1
    out_dropout: float = 0.0
    attn_mask: bool = True  # causal mask on every attention, as the reference
    merge_how: str = "average"  # "average" (masked mean), "last" (last real step) or "stats" (mean and std)
    modality_dropout: float = 0.0  # share of training clips that lose their audio or their text (fusing models)
    wide: bool = False  # add a logistic regression on utterance statistics to a fusing model (wide and deep)
    utterance_stats: bool = False  # a fusing model's head also reads its audio input's mean and std over frames

    def __post_init__(self) -> None:
        _require_choice("model", self.modality, MODALITIES)
        _require_choice("merge_how", self.merge_how, MERGES)
        for setting in ("d_model", "layers", "num_heads"):
            _require(getattr(self, setting) >= 1, setting, getattr(self, setting), "must be at least 1")
        _require(self.modality != "cross" or self.d_model % self.num_heads == 0, "d_model", self.d_model,
                 f"must be divisible by num_heads ({self.num_heads}) for the cross-modal model")  # fmt: skip
        for setting in ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "embed_dropout",
                        "res_dropout", "out_dropout", "modality_dropout"):  # fmt: skip
            _require_share(setting, getattr(self, setting))
        for setting, value in (("modality_dropout", self.modality_dropout), ("wide", self.wide),
                               ("utterance_stats", self.utterance_stats)):
            _require(not value or self.modality in FUSING, setting, value,
                     f"applies to the models that fuse two streams (early, late, tfn, lmf, mult), not to {self.modality!r}")


@dataclass
class TrainConfig:
    batch_size: int = 24
    batch_chunk: int = 1
    clip: float = 0.8
    lr: float = 1e-3
    optim: str = "Adam"
    num_epochs: int = 40
    when: int = 20
    warmup_percent: float = 0.1
    logging_steps: int = 30
    seed: int = 1111
    no_cuda: bool = False
    length_buckets: bool = True  # batch clips of similar length: less padding to compute on
    select_by: str = "loss"  # the dev metric that picks the best epoch: "loss" or "macro_f1"
    early_stop: int = 0  # epochs without a better dev metric before training stops; 0: all epochs
    class_weights: bool = False  # weight the loss by inverse class frequency in train
    ema: float = 0.0  # decay per step of a moving average of the weights: what dev evaluates and the run keeps; 0: off
    transcript_noise: float = 0.0  # share of training transcripts replaced by recogniser-like errors
    checkpoint_steps: int = 0  # steps between resumable checkpoints within an epoch; 0: after each epoch only
    amp: bool = False  # mixed precision on a CUDA GPU (bf16 where it has it, else fp16)
    num_workers: int = 0  # DataLoader worker processes batching the training clips; 0: in the training process

    def __post_init__(self) -> None:
        for setting in ("batch_size", "batch_chunk", "num_epochs", "logging_steps"):
            _require(getattr(self, setting) >= 1, setting, getattr(self, setting), "must be at least 1")
        for setting in ("when", "early_stop", "checkpoint_steps", "num_workers"):
            _require(getattr(self, setting) >= 0, setting, getattr(self, setting), "must be 0 or more")
        _require(_positive_finite(self.lr), "lr", self.lr, "must be positive and finite")
        _require(self.clip >= 0, "clip", self.clip, "must be 0 (off) or positive")
        _require(0 <= self.seed < 2**32, "seed", self.seed, "must be in 0..2**32-1 (what NumPy seeds with)")
        _require_share("warmup_percent", self.warmup_percent, below_one=False)
        _require_share("transcript_noise", self.transcript_noise, below_one=False)
        _require_share("ema", self.ema, below_one=True)
        _require_choice("select_by", self.select_by, SELECT_BY)


@dataclass(frozen=True)
class ServiceLimits:
    """What `audiotext serve` accepts in one upload."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        # NaN passes any `<= 0` test, and an infinite length makes every upload's check fail.
        _require(_positive_finite(self.max_upload_bytes), "max_upload_bytes", self.max_upload_bytes, "must be positive and finite")
        _require(_positive_finite(self.max_seconds), "max_seconds", self.max_seconds, "must be positive and finite")

    @classmethod
    def from_mib(cls, max_upload_mb: float, max_seconds: float) -> "ServiceLimits":
        """The limits as `serve` takes them, the upload in MiB."""
        _require(_positive_finite(max_upload_mb) and round(max_upload_mb * 2**20) > 0, "max_upload_mb", max_upload_mb,
                 "must be finite and at least one byte")  # fmt: skip
        return cls(round(max_upload_mb * 2**20), max_seconds)


def _positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass
class RunConfig:
    name: str = "mult"
    data_path: str = "data"
    labels: list[str] = field(default_factory=lambda: list(REFERENCE_LABELS))
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        plain_name(self.name)
        self.labels = checked_labels(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        sections = {"audio": AudioConfig, "text": TextConfig, "model": ModelConfig, "train": TrainConfig}
        kwargs = {k: v for k, v in d.items() if k not in sections}
        kwargs.update({k: sections[k](**d[k]) for k in sections if k in d})
        return cls(**kwargs)


def checked_labels(labels: list[str] | tuple[str, ...], setting: str = "labels") -> list[str]:
    """The labels in Unicode NFC (a decomposed Hangul label is the same class as a composed one),
    at least two, none empty or repeated: a repeated label would be a class no clip can reach."""
    labels = [unicodedata.normalize("NFC", str(label)).strip() for label in labels]
    _require(len(labels) >= 2, setting, labels, "at least two classes are needed")
    _require(all(labels), setting, labels, "a label is empty")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    _require(not repeated, setting, labels, f"{', '.join(repeated)} is listed twice")
    return labels


# The flags a kind of model may never read (see unread_flags), with where RunConfig keeps them.
_AUDIO_FLAGS = {"audio_features": ("audio", "features"), **{flag: ("audio", flag) for flag in (
    "sample_rate", "resample_rate", "n_fft_size", "n_mfcc", "max_len_for_audio")}}  # fmt: skip
_ENCODER_FLAGS = {"bert_model_path": ("text", "encoder"), "max_len_for_text": ("text", "max_len_for_text"),
                  "hidden_size_for_bert": ("text", "hidden_size")}  # fmt: skip
_TEXT_FLAGS = {**_ENCODER_FLAGS, "text_features": ("text", "features"), "text_alphabet": ("text", "alphabet"),
               "transcript_noise": ("train", "transcript_noise")}  # fmt: skip
_LAYER_FLAGS = {"no_attn_mask": ("model", "attn_mask"), **{flag: ("model", flag) for flag in (
    "d_model", "layers", "num_heads", "attn_dropout", "relu_dropout", "embed_dropout", "res_dropout", "merge_how")}}  # fmt: skip
_FLAG_PLACES = {**_AUDIO_FLAGS, **_TEXT_FLAGS, **_LAYER_FLAGS, "attn_dropout_a": ("model", "attn_dropout_a")}


def unread_flags(cfg: RunConfig) -> list[str]:
    """`--flag=value: why` for each flag set away from its default that `cfg`'s model never reads
    (see audiotext.models.classifiers and audiotext.data.loading): it would change config.json and
    nothing else, a result the user did not ask for."""
    modality = cfg.model.modality
    name = "mult" if modality == "cross" else modality
    unread: dict[str, str] = {}
    if modality != "cross":
        unread["attn_dropout_a"] = "only mult has audio-to-text attention"
    if modality == "audio":
        unread |= dict.fromkeys(_TEXT_FLAGS, "the audio model reads no text")
        unread["d_model"] = "the audio model is as wide as its audio features (--n_mfcc, --audio_features)"
    elif modality == "linear" or cfg.text.features == "ngrams":
        unread |= dict.fromkeys(_ENCODER_FLAGS, f"the {name} model reads character n-grams, not a text encoder")
    if modality == "linear":
        unread["text_features"] = "the linear model always reads character n-grams"
    if modality in ("text", "linear"):
        unread |= dict.fromkeys(_LAYER_FLAGS, f"the {name} model has no Transformer layers")
    if modality == "text":
        unread |= dict.fromkeys(_AUDIO_FLAGS, "the text model reads no audio")
    default, refused = RunConfig(), []
    for flag, why in unread.items():
        section, setting = _FLAG_PLACES[flag]
        now = getattr(getattr(cfg, section), setting)
        if now != getattr(getattr(default, section), setting):
            refused.append(f"--{flag}{'' if isinstance(now, bool) else f'={now}'}: {why}")
    return refused
