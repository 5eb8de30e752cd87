"""One dataclass per concern, as the user sets it. A run directory stores them all in config.json
(with the widths derived from them and the data, see `audiotext.models.classifiers.Dims`), so a
model can be rebuilt from its run directory alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Class index 0..6 of the reference system: fear, surprise, anger, sadness, neutral, happiness, disgust.
REFERENCE_LABELS: tuple[str, ...] = ("공포", "놀람", "분노", "슬픔", "중립", "행복", "혐오")


@dataclass
class AudioConfig:
    sample_rate: int = 48000  # rate of the stored clips
    resample_rate: int = 16000  # rate the MFCCs are computed at
    n_fft_size: int = 400  # window and FFT size; hop is n_fft_size // 2
    n_mfcc: int = 40
    n_mels: int = 128
    max_len_for_audio: int = 400  # frames kept per clip
    features: str = "mfcc"  # "mfcc", or "mfcc+prosody": F0, voicing, energy and their deltas beside them


@dataclass
class TextConfig:
    encoder: str = ""  # local Hugging Face directory; "" means the packaged MiniLM
    max_len_for_text: int = 64  # tokens, [CLS] and [SEP] included
    hidden_size: int | None = None  # expected encoder width (--hidden_size_for_bert): checked, never overwritten
    features: str = "encoder"  # "encoder" (its token states) or "ngrams" (character n-gram TF-IDF, one vector)


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
    transcript_noise: float = 0.0  # share of training transcripts replaced by recogniser-like errors


@dataclass(frozen=True)
class ServiceLimits:
    """What `audiotext serve` accepts in one upload."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_upload_bytes <= 0 or self.max_seconds <= 0:
            raise ValueError(f"upload limits must be positive, got {self.max_upload_bytes} bytes and {self.max_seconds} s")


@dataclass
class RunConfig:
    name: str = "mult"
    data_path: str = "data"
    labels: list[str] = field(default_factory=lambda: list(REFERENCE_LABELS))
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        sections = {"audio": AudioConfig, "text": TextConfig, "model": ModelConfig, "train": TrainConfig}
        kwargs = {k: v for k, v in d.items() if k not in sections}
        kwargs.update({k: sections[k](**d[k]) for k in sections if k in d})
        return cls(**kwargs)
