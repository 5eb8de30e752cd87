"""From a run's configuration to batches: a split loaded from any source, its features (through the
feature cache), and the loaders that batch them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from audiotext.config import RunConfig
from audiotext.data.dataset import EncodedSplit, LengthBucketBatchSampler, collate, encode_split
from audiotext.data.manifest import load_any_split
from audiotext.data.transcripts import NOISY_VARIANTS, hangul_vocabulary, noisy_variants
from audiotext.errors import DataError
from audiotext.features.cache import FeatureCache
from audiotext.features.ngrams import NGRAMS_FILE, CharNgramEncoder
from audiotext.features.text import TextEncoder, normalize_text

NOISE_STREAM = 2  # appended to the run's seed to seed the transcript noise


def reads_ngrams(cfg: RunConfig) -> bool:
    """Whether the model reads character n-grams (the linear model always does) rather than encoder
    states or no text at all."""
    return cfg.model.modality == "linear" or (cfg.text.features == "ngrams" and cfg.model.modality != "audio")


def text_encoder_for(
    cfg: RunConfig, device: torch.device, run_dir: str | Path | None = None
) -> TextEncoder | CharNgramEncoder | None:
    """What a model of `cfg` reads text through: the frozen encoder, or the character n-grams
    fitted for its run (`run_dir`, see `fit_char_ngrams`); None for audio-only."""
    if cfg.model.modality == "audio":
        return None
    if reads_ngrams(cfg):
        if run_dir is None:
            raise ValueError("character n-grams are fitted by a model's training run: name the run")
        path = Path(run_dir) / NGRAMS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: no {NGRAMS_FILE}, the character n-grams its model was trained on")
        return CharNgramEncoder.load(path)
    return TextEncoder(cfg.text.encoder or None, max_len=cfg.text.max_len_for_text, device=device)


def fit_char_ngrams(cfg: RunConfig, run_dir: str | Path) -> None:
    """Fits the character n-grams of the training sentences and keeps them in `run_dir`."""
    train = load_any_split(cfg.data_path, "train", cfg.labels, cfg.audio.sample_rate, with_audio=False)
    sentences = [normalize_text(s, cfg.text.alphabet) for s in train.sentences]
    CharNgramEncoder.fit(sentences).save(Path(run_dir) / NGRAMS_FILE)


def load_encoded(
    cfg: RunConfig,
    split: str,
    text_encoder: TextEncoder | CharNgramEncoder | None,
    cache: FeatureCache | None = None,
    progress: bool = True,
    transcript_noise: float = 0.0,
) -> EncodedSplit:
    """Loads a split (see `load_any_split`) and its features, from `cache` where it has them.

    `transcript_noise`: this share of the clips (drawn with the run's seed) read one of their
    sentence's `noisy_variants` (recogniser-like errors) instead of it: for training only.
    """
    if not 0 <= transcript_noise <= 1:
        raise ValueError(f"transcript_noise must be a share in [0, 1], got {transcript_noise}")
    use_audio = cfg.model.modality != "text"
    loaded = load_any_split(cfg.data_path, split, cfg.labels, cfg.audio.sample_rate, with_audio=use_audio)
    if transcript_noise:
        rng = np.random.default_rng([cfg.train.seed, NOISE_STREAM])
        vocabulary = hangul_vocabulary(loaded.sentences)
        learnt = text_encoder.out_of_fold if isinstance(text_encoder, TextEncoder) else {}
        sentences, loaded.sentences = loaded.sentences, list(loaded.sentences)
        for i in np.flatnonzero(rng.random(len(sentences)) < transcript_noise):
            heard = noisy_variants(sentences[i], vocabulary)[rng.integers(NOISY_VARIANTS)]
            if normalize_text(sentences[i]) in learnt and normalize_text(heard) not in learnt:
                raise DataError(
                    f"{text_encoder.path} is cross-fitted but holds no out-of-fold states of the recogniser-like "
                    f"transcript {heard!r} of the training sentence {sentences[i]!r}: fine-tune it on this "
                    "training split again, or train with --transcript_noise 0"
                )
            loaded.sentences[i] = heard
    return encode_split(loaded, cfg.audio, text_encoder, use_audio=use_audio, cache=cache, progress=progress,
                        alphabet=cfg.text.alphabet)  # fmt: skip


def make_loader(
    data: EncodedSplit, batch_size: int, shuffle: bool, seed: int = 0, length_buckets: bool = False, num_workers: int = 0
) -> DataLoader:
    """Batches in order, shuffled, or shuffled in batches of similar length (see `LengthBucketBatchSampler`).
    The order is drawn in this process, so `num_workers` changes how fast batches come, not which."""
    generator = torch.Generator().manual_seed(seed)
    if shuffle and length_buckets:
        sampler = LengthBucketBatchSampler(data.lengths(), batch_size, generator)
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator,
                      num_workers=num_workers)  # fmt: skip


def batch_order(loader: DataLoader) -> torch.Generator | None:
    """The generator that orders a `make_loader` loader's batches: its state when an epoch begins
    is where the epoch can be replayed from."""
    return getattr(loader.batch_sampler, "generator", None) or getattr(loader.sampler, "generator", None)
