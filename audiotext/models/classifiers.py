"""Audio-only, text-only and cross-modal emotion classifiers, all feeding one classification head.

Shape legend: B batch, T audio frames, L text tokens, F MFCC coefficients, E text-encoder width,
D model width, C classes. Masks are boolean, True on real (unpadded) steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from audiotext.config import ModelConfig, RunConfig
from audiotext.features.audio import audio_width
from audiotext.models.blocks import TransformerEncoder

@dataclass(frozen=True)
class Dims:
    """The widths a model is built with, derived from its run's configuration and data, never set
    by hand: `Dims.of` is the one place they are computed."""

    audio: int  # F: values per audio frame (MFCCs, and prosody when asked for)
    text: int  # E: the text encoder's width (0 for audio-only models)
    classes: int  # C
    text_vector: bool = False  # the text is one vector per sentence (character n-grams), not token states

    @classmethod
    def of(cls, cfg: RunConfig, text_width: int | None) -> "Dims":
        """`text_width`: the encoder's hidden size, None when the model reads no text."""
        vector = text_width is not None and (cfg.model.modality == "linear" or cfg.text.features == "ngrams")
        return cls(audio=audio_width(cfg.audio), text=text_width or 0, classes=len(cfg.labels), text_vector=vector)


def merged_width(dim: int, how: str) -> int:
    """The width `merge_over_time` gives steps of width `dim`."""
    return 2 * dim if how == "stats" else dim


def merge_over_time(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, N, D) → (B, D): masked mean ("average") or the last real step ("last"); "stats" gives
    (B, 2D), the mean and the standard deviation over the real steps (statistics pooling: the
    utterance statistics a linear model on MFCCs lives on)."""
    if how in ("average", "stats"):
        weights = mask.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
        count = weights.sum(dim=1).clamp(min=1.0)
        mean = (x * weights).sum(dim=1) / count
        if how == "average":
            return mean
        variance = ((x - mean[:, None]) ** 2 * weights).sum(dim=1) / count
        return torch.cat([mean, (variance + 1e-6).sqrt()], dim=-1)
    last = mask.long().sum(dim=1).clamp(min=1) - 1
    return x[torch.arange(x.shape[0], device=x.device), last]


class ClassificationHead(nn.Module):
    """Residual two-layer projection, then the class logits."""

    def __init__(self, dim: int, n_classes: int, out_dropout: float):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(out_dropout), nn.Linear(dim, dim))
        self.out = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) → (B, C)
        return self.out(self.proj(x) + x)


class Standardize(nn.Module):
    """Per-coefficient standardisation with statistics of the training set.

    Raw MFCCs span hundreds of dB-units in c0 and a few in the high coefficients; the reference fed
    them unscaled, which left its audio model at chance. The statistics are buffers, so they travel
    with the weights.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set(self, mean, std) -> None:  # (F,) each, over every frame of the training clips
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).clamp(min=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _encoder(cfg: ModelConfig, dim: int, attn_dropout: float) -> TransformerEncoder:
    return TransformerEncoder(
        dim,
        cfg.num_heads,
        cfg.layers,
        attn_dropout=attn_dropout,
        relu_dropout=cfg.relu_dropout,
        res_dropout=cfg.res_dropout,
        embed_dropout=cfg.embed_dropout,
        causal=cfg.attn_mask,
    )


class AudioClassifier(nn.Module):
    """Self-attention over the audio frames at width F (no projection), as the reference; when the
    heads do not divide F (MFCCs with prosody: 46), a linear projection to the next multiple first."""

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__()
        self.merge_how = cfg.merge_how
        self.audio_norm = Standardize(dims.audio)
        width = -(-dims.audio // cfg.num_heads) * cfg.num_heads
        self.proj = nn.Identity() if width == dims.audio else nn.Linear(dims.audio, width, bias=False)
        self.encoder = _encoder(cfg, width, cfg.attn_dropout)
        self.head = ClassificationHead(merged_width(width, cfg.merge_how), dims.classes, cfg.out_dropout)

    def forward(self, audio, audio_mask, text=None, text_mask=None):
        x = self.encoder(self.proj(self.audio_norm(audio)), audio_mask)  # (B, T, F or the next multiple of heads)
        return self.head(merge_over_time(x, audio_mask, self.merge_how))


class TextClassifier(nn.Module):
    """Frozen-encoder baseline: mean of the encoder's last layer, then a linear layer."""

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__()
        self.dropout = nn.Dropout(cfg.out_dropout)
        self.out = nn.Linear(dims.text, dims.classes)

    def forward(self, audio, audio_mask, text, text_mask):
        return self.out(self.dropout(merge_over_time(text, text_mask, "average")))


class WidePath(nn.Module):
    """A logistic regression on the mean and the standard deviation of the standardised audio frames
    over the real frames (2F) and the mean of the text steps (E; the character n-gram vector itself
    when the text is one: `audiotext.features.ngrams`). Alone it is the `linear` baseline; beside a
    deep model (`--wide`) its logits are added to the deep model's, as in wide-and-deep learning
    (Cheng et al., 2016), so the deep part only has to learn what the utterance statistics miss."""

    def __init__(self, dims: Dims, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(merged_width(dims.audio, "stats") + dims.text, dims.classes)

    def forward(self, normalised_audio, audio_mask, text, text_mask):
        statistics = merge_over_time(normalised_audio, audio_mask, "stats")  # (B, 2F)
        sentence = merge_over_time(text, text_mask, "average")  # (B, E)
        return self.out(self.dropout(torch.cat([statistics, sentence], dim=-1)))  # (B, C)


class LinearClassifier(nn.Module):
    """The cheap baseline every deep model must beat: `WidePath` alone."""

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__()
        self.audio_norm = Standardize(dims.audio)
        self.wide = WidePath(dims, cfg.out_dropout)

    def forward(self, audio, audio_mask, text, text_mask):
        return self.wide(self.audio_norm(audio), audio_mask, text, text_mask)


class PooledStreams(nn.Module):
    """Audio and text each to one vector, (B, audio_width) and (B, text_width), with or without MulT's
    cross-modal attention; each is D wide, or 2D with statistics pooling, and the audio 2F more with
    `utterance_stats`: the mean and standard deviation of its standardised input frames, what the
    linear model lives on, handed to the head beside what attention made of them.

    Both streams are projected to D by a kernel-3 convolution without padding, which shortens each
    sequence by 2; the masks are shortened to match so padding never leaks into real steps (a text of
    one n-gram vector is projected alone, kernel 1). With `cross`, audio attends to text and text
    attends to audio; then each stream attends to itself and is merged over time.

    Modality dropout: in training, a share of the clips lose one stream (audio or text, even odds)
    before any attention (its utterance statistics too), so the head learns to decide from either
    alone and not lean on one.
    """

    kernel = 3

    def __init__(self, cfg: ModelConfig, dims: Dims, cross: bool):
        super().__init__()
        d = cfg.d_model
        self.merge_how = cfg.merge_how
        self.modality_dropout = cfg.modality_dropout
        self.audio_norm = Standardize(dims.audio)
        self.text_dropout = nn.Dropout(cfg.embed_dropout)
        self.text_kernel = 1 if dims.text_vector else self.kernel
        self.audio_proj = nn.Conv1d(dims.audio, d, self.kernel, bias=False)
        self.text_proj = nn.Conv1d(dims.text, d, self.text_kernel, bias=False)
        self.cross = cross
        if cross:
            self.audio_with_text = _encoder(cfg, d, cfg.attn_dropout_a)
            self.text_with_audio = _encoder(cfg, d, cfg.attn_dropout)
        self.audio_self = _encoder(cfg, d, cfg.attn_dropout)
        self.text_self = _encoder(cfg, d, cfg.attn_dropout)
        self.utterance_stats = cfg.utterance_stats
        self.text_width = merged_width(d, cfg.merge_how)
        self.audio_width = self.text_width + (merged_width(dims.audio, "stats") if cfg.utterance_stats else 0)

    @staticmethod
    def _project(conv: nn.Conv1d, x: torch.Tensor, mask: torch.Tensor):
        # Output step t sees input steps t..t+k-1, so it is real exactly when step t+k-1 is.
        return conv(x.transpose(1, 2)).transpose(1, 2), mask[:, conv.kernel_size[0] - 1 :]

    def _kept_modalities(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 1) each, True where a clip keeps its audio, its text: a share loses one of them."""
        dropped = torch.rand(batch, device=device) < self.modality_dropout  # (B,)
        audio_side = torch.rand(batch, device=device) < 0.5
        return ~(dropped & audio_side)[:, None, None], ~(dropped & ~audio_side)[:, None, None]

    def forward(self, audio, audio_mask, text, text_mask) -> tuple[torch.Tensor, torch.Tensor]:
        # An exported graph cannot branch on values; its caller (the recognizer) checks the texts.
        if not torch.compiler.is_exporting() and not text_mask[:, self.text_kernel - 1 :].any(dim=1).all():
            # A stream without a real step would attend to padding; loading refuses such sentences.
            raise ValueError(f"every text needs at least {self.text_kernel} tokens ([CLS] and [SEP] included)")
        normalised = self.audio_norm(audio)  # (B, T, F)
        a, a_mask = self._project(self.audio_proj, normalised, audio_mask)  # (B, T-2, D)
        t, t_mask = self._project(self.text_proj, self.text_dropout(text), text_mask)  # (B, L-2 or 1, D)
        if self.training and self.modality_dropout > 0:
            keep_audio, keep_text = self._kept_modalities(a.shape[0], a.device)
            a, t, normalised = a * keep_audio, t * keep_text, normalised * keep_audio
        if self.cross:
            a, t = (
                self.audio_with_text(a, a_mask, context=t, context_mask=t_mask),
                self.text_with_audio(t, t_mask, context=a, context_mask=a_mask),
            )
        a_out = merge_over_time(self.audio_self(a, a_mask), a_mask, self.merge_how)  # (B, D or 2D)
        if self.utterance_stats:
            a_out = torch.cat([a_out, merge_over_time(normalised, audio_mask, "stats")], dim=-1)  # (B, audio_width)
        t_out = merge_over_time(self.text_self(t, t_mask), t_mask, self.merge_how)  # (B, text_width)
        return a_out, t_out


class OnStreams(nn.Module):
    """A classifier over `PooledStreams`; training sets the MFCC statistics of `audio_norm`.
    With `wide`, a `WidePath`'s logits are added to the classifier's own (`fuse`)."""

    streams: PooledStreams

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__()
        self.streams = PooledStreams(cfg, dims, cross=getattr(self, "cross", False))
        self.wide = WidePath(dims, cfg.out_dropout) if cfg.wide else None

    @property
    def audio_norm(self) -> Standardize:
        return self.streams.audio_norm

    def forward(self, audio, audio_mask, text, text_mask):
        logits = self.fuse(*self.streams(audio, audio_mask, text, text_mask))  # (B, C)
        if self.wide is not None:
            logits = logits + self.wide(self.audio_norm(audio), audio_mask, text, text_mask)
        return logits

    def fuse(self, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of the pooled audio and text streams (B, audio_width), (B, text_width)."""
        raise NotImplementedError


class CrossModalClassifier(OnStreams):
    """MulT: audio attends to text and text attends to audio, each then attends to itself; the two
    pooled streams, concatenated (2D), feed the head (Tsai et al., 2019)."""

    cross = True

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__(cfg, dims)
        self.head = ClassificationHead(self.streams.audio_width + self.streams.text_width, dims.classes, cfg.out_dropout)

    def fuse(self, a, t):
        return self.head(torch.cat([a, t], dim=-1))


class EarlyFusionClassifier(CrossModalClassifier):
    """Each stream attends only to itself; the pooled audio and text, concatenated, feed the head."""

    cross = False


class LateFusionClassifier(OnStreams):
    """A head per modality; the logits are a learned convex mix of their log-probabilities."""

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__(cfg, dims)
        self.audio_head = ClassificationHead(self.streams.audio_width, dims.classes, cfg.out_dropout)
        self.text_head = ClassificationHead(self.streams.text_width, dims.classes, cfg.out_dropout)
        self.mix = nn.Parameter(torch.zeros(2))  # softmax: equal weights to start

    def fuse(self, a, t):
        weights = self.mix.softmax(-1)
        return weights[0] * self.audio_head(a).log_softmax(-1) + weights[1] * self.text_head(t).log_softmax(-1)


def _with_one(x: torch.Tensor) -> torch.Tensor:  # (B, D) → (B, D+1)
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=-1)


class TensorFusionClassifier(OnStreams):
    """The outer product [a; 1] ⊗ [t; 1], flattened ((A+1)(T+1) for streams A and T wide, unimodal
    and bimodal terms alike), feeds the head (Zadeh et al., 2017)."""

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__(cfg, dims)
        widths = self.streams.audio_width + 1, self.streams.text_width + 1
        self.head = ClassificationHead(widths[0] * widths[1], dims.classes, cfg.out_dropout)

    def fuse(self, a, t):
        fused = _with_one(a)[:, :, None] * _with_one(t)[:, None, :]  # (B, A+1, T+1)
        return self.head(fused.flatten(1))


class LowRankFusionClassifier(OnStreams):
    """The tensor fusion's weights in `rank` modality-specific factors: sum over i of
    ([a; 1] W_a,i) * ([t; 1] W_t,i), never forming the outer product (Liu et al., 2018)."""

    rank = 4

    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__(cfg, dims)
        d = cfg.d_model
        self.audio_factors = self._factors(self.streams.audio_width + 1, d)
        self.text_factors = self._factors(self.streams.text_width + 1, d)
        self.head = ClassificationHead(d, dims.classes, cfg.out_dropout)

    def _factors(self, width: int, d: int) -> nn.Parameter:  # (rank, width, D)
        return nn.Parameter(torch.randn(self.rank, width, d) / width**0.5)

    def fuse(self, a, t):
        a_factors = torch.einsum("bi,rid->rbd", _with_one(a), self.audio_factors)  # (rank, B, D)
        t_factors = torch.einsum("bi,rid->rbd", _with_one(t), self.text_factors)
        return self.head((a_factors * t_factors).sum(0))  # (B, D) → (B, C)


def build_model(cfg: ModelConfig, dims: Dims) -> nn.Module:
    """The model `cfg` (valid by construction, see `ModelConfig`) names, at the widths of `dims`."""
    classes = {
        "audio": AudioClassifier,
        "text": TextClassifier,
        "cross": CrossModalClassifier,
        "early": EarlyFusionClassifier,
        "late": LateFusionClassifier,
        "tfn": TensorFusionClassifier,
        "lmf": LowRankFusionClassifier,
        "linear": LinearClassifier,
    }
    return classes[cfg.modality](cfg, dims)
