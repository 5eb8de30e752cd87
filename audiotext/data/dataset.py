"""Datasets over features computed once (and cached on disk), and the batching that pads them.

Shape legend: B batch, T audio frames, L text tokens, F MFCC coefficients, E text-encoder width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from audiotext.config import AudioConfig
from audiotext.data.corpus import CorpusError, Split
from audiotext.features.cache import FeatureCache, PackedSequences, audio_features, digest, text_states
from audiotext.features.text import ALPHABET_RULES, TextEncoder, normalize_text


@dataclass
class EncodedSplit(Dataset):
    """Per-clip MFCCs and per-sentence encoder states; either is None when the model ignores it."""

    labels: torch.Tensor  # (N,)
    audio: PackedSequences | None  # N × (T_i, F)
    text: PackedSequences | None  # S × (L_j, E), one per distinct sentence
    text_index: np.ndarray  # (N,) clip → its sentence in `text`

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        audio = None if self.audio is None else self.audio[i]
        text = None if self.text is None else self.text[self.text_index[i]]
        return audio, text, self.labels[i]

    def fingerprint(self, values: bool = True) -> str:
        """A digest of everything a model trains on here: labels, features, each clip's sentence.
        Without `values`, of all but the feature values (their lengths stay): what machines that
        compute features on other CPUs, whose sums differ in the last bit, share."""
        streams = [part for stream in (self.audio, self.text) if stream is not None
                   for part in (stream.offsets, stream.values)[: 2 if values else 1]]  # fmt: skip
        return digest("encoded split", self.labels.numpy(), self.text_index, *streams)

    def lengths(self) -> np.ndarray:
        """(N,) steps per clip: MFCC frames, or tokens when the model reads only text."""
        if self.audio is not None:
            return self.audio.lengths()
        return self.text.lengths()[self.text_index]


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of clips of similar length.

    A batch is padded to its longest clip, and every attention, feed-forward and dropout layer
    computes on the padding: random batches of 24 of the demo corpus are 44-45% padding, these 9-10%.
    Each epoch the clips are shuffled and cut into pools of `pool_batches` batches; a pool is sorted
    by length and cut into batches, and the batches of all pools are shuffled. Batches change every
    epoch, and sorting a pool of random clips rather than the whole corpus keeps batches from being
    the same few speaking rates each time (in the demo, emotions differ in rate).
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, generator: torch.Generator, pool_batches: int = 10):
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.pool_size = batch_size * pool_batches

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator)
        batches = []
        for pool in order.split(self.pool_size):
            by_length = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches += [batch.tolist() for batch in by_length.split(self.batch_size)]
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i]


def encode_split(
    split: Split,
    audio_cfg: AudioConfig,
    text_encoder: TextEncoder | None,
    use_audio: bool,
    cache: FeatureCache | None = None,
    progress: bool = True,
    alphabet: str = "any",
) -> EncodedSplit:
    """The split's features, from `cache` where it holds them (and stored there when not), or
    computed in memory when `cache` is None.

    Raises CorpusError naming the file and row of a clip without MFCCs (too short), or, when text
    is used, of a sentence that normalises to nothing: the cross-modal model would have no text
    step to attend to.
    """
    audio = None
    if use_audio:
        try:
            audio = audio_features(split.audio, audio_cfg, cache, progress, name=split.name, where=split.where)
        except CorpusError:
            raise  # a clip that would not decode already names its file and row
        except ValueError as err:
            raise CorpusError(str(err)) from None
    normalised = [normalize_text(s, alphabet) for s in split.sentences]
    if getattr(text_encoder, "out_of_fold", None):
        _require_out_of_fold_keys(split, normalised, text_encoder)
    distinct, text_index = np.unique(np.asarray(normalised, dtype=object), return_inverse=True)
    text = None
    if text_encoder is not None:
        if not distinct[0]:  # np.unique sorts: an empty sentence comes first
            i = normalised.index("")
            raise CorpusError(
                f"{split.where(i)}: the sentence {split.sentences[i]!r} normalises to nothing "
                f"(the text features keep {ALPHABET_RULES[alphabet]})"
            )
        text = text_states(list(distinct), text_encoder, cache, progress, name=split.name)
    return EncodedSplit(torch.as_tensor(split.labels), audio, text, text_index)


def _require_out_of_fold_keys(split: Split, normalised: list[str], encoder: TextEncoder) -> None:
    """A cross-fitted encoder's out-of-fold states are keyed by sentences as the 'any' alphabet of
    its day's `normalize_text` read them: a training sentence read otherwise (another alphabet, a
    later rule) would miss its state and be encoded by the final encoder, which learnt its label."""
    for i, sentence in enumerate(split.sentences):
        as_fine_tuned = normalize_text(sentence, rule=encoder.out_of_fold_normalisation)
        if normalised[i] not in encoder.out_of_fold and as_fine_tuned in encoder.out_of_fold:
            raise CorpusError(
                f"{split.where(i)}: the text encoder {encoder.path} holds the out-of-fold state of {as_fine_tuned!r}, as "
                f"its fine-tuning read this sentence, but here it reads {normalised[i]!r} (another --text_alphabet, or an "
                "earlier audiotext's normalisation), which it holds none of: its features would come from the encoder "
                "that learnt its label. Use --text_alphabet any with it, or fine-tune it again with this audiotext"
            )


def collate(items: Sequence[tuple]) -> dict[str, torch.Tensor]:
    """Pads a list of (audio, text, label) to the longest item; masks are True on real steps."""
    audio, text, labels = zip(*items)
    return {"labels": torch.stack(labels), **pad_streams(audio, text)}


def pad_streams(audio: Sequence[torch.Tensor | None], text: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """audio (B, T, F), text (B, L, E) and their masks (True on real steps), each padded to its
    longest item; a stream whose first item is None is None with its mask."""
    batch = {}
    for name, seqs in (("audio", audio), ("text", text)):
        if seqs[0] is None:
            batch[name] = batch[f"{name}_mask"] = None
            continue
        lengths = torch.tensor([len(s) for s in seqs])
        batch[name] = pad_sequence(list(seqs), batch_first=True)  # (B, T or L, F or E)
        batch[f"{name}_mask"] = torch.arange(batch[name].shape[1])[None, :] < lengths[:, None]
    return batch
