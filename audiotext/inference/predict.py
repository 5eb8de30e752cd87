"""Prediction over batches: logits of a classifier over a whole loader, and of the fine-tuned text
classifier over sentences (each distinct sentence once)."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from audiotext.features.text import normalize_text, pad_token_ids
from audiotext.models.text_classifier import SequenceClassifier
from audiotext.runtime import gathered_in_order, processes


def forward(model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    """Logits (B, C) of a collated batch (see `audiotext.data.dataset.collate`); labels are not read."""
    inputs = {k: (None if v is None else v.to(device)) for k, v in batch.items() if k != "labels"}
    return model(**inputs)


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and labels (N,) over a whole loader, in order. Under torchrun each process
    predicts every W-th batch and all get the whole result."""
    model.eval()
    share = processes()
    mine = [(forward(model, batch, device).float().cpu(), batch["labels"])
            for batch in itertools.islice(loader, share.rank, None, share.world_size)]  # fmt: skip
    logits, labels = zip(*gathered_in_order(mine))
    return torch.cat(logits), torch.cat(labels)


@torch.inference_mode()
def predict_sentences(
    tokenizer: PreTrainedTokenizerBase,
    model: SequenceClassifier,
    sentences: Sequence[str],
    max_len: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Logits (N, C) for N sentences; each distinct normalised sentence runs through the model once."""
    texts = [normalize_text(s) for s in sentences]
    distinct = list(dict.fromkeys(texts))
    ids = tokenizer(distinct, truncation=True, max_length=max_len)["input_ids"]
    model.eval()
    logits = torch.empty(len(distinct), model.classifier.out_features)
    for start in range(0, len(distinct), batch_size):
        rows = list(range(start, min(start + batch_size, len(distinct))))
        batch = pad_token_ids(tokenizer, [ids[i] for i in rows])  # (B, L)
        logits[rows] = model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
    index = {t: i for i, t in enumerate(distinct)}
    return logits[[index[t] for t in texts]]


def probability_columns(probabilities: np.ndarray | torch.Tensor, labels: Sequence[str]) -> dict[str, list[float]]:
    """{"p_<label>": the probability of that class for each row} of (N, C) probabilities: the
    columns every predictions.csv carries."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return {f"p_{label}": probabilities[:, i].round(6).tolist() for i, label in enumerate(labels)}
