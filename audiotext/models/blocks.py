"""Transformer building blocks shared by every encoder.

Shape legend: B batch, N query steps, M key/value steps, D width, H heads.
Masks are boolean and True where a step is real (not padding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None, cross-attention otherwise."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        bias: torch.Tensor,  # (B, 1, N, M): attention_bias
        context: torch.Tensor | None = None,  # (B, M, D)
    ) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)  # (B, H, *, D/H)

        q, k, v = split_heads(self.to_q(x)), split_heads(self.to_k(context)), split_heads(self.to_v(context))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, N, D/H)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


def attention_bias(
    query_mask: torch.Tensor, key_mask: torch.Tensor, causal: bool, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B, 1, N, M) added to the attention scores: 0 where query i may attend to key j, -inf where
    key j is padding or (`causal`) later than `causal_mask` allows, from masks (B, N) and (B, M).

    Made once per stack of blocks: remade in every block, and turned from boolean into this form by
    scaled_dot_product_attention on every call, the masks took a tenth of a batched forward pass
    of the demo's `mult` on CPU."""
    n, m = query_mask.shape[1], key_mask.shape[1]
    allowed = key_mask[:, None, :].expand(-1, n, -1)  # (B, N, M)
    if causal:
        allowed = allowed & causal_mask(query_mask, key_mask, n, m, key_mask.device)
    # A query whose every key is masked would give NaN; let such rows see all keys: they are
    # padded queries whose output the caller discards (a real query always sees key 0).
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill_(~allowed, float("-inf"))[:, None]


def causal_mask(
    query_mask: torch.Tensor | None, key_mask: torch.Tensor | None, n: int, m: int, device: torch.device
) -> torch.Tensor:
    """(B, N, M), True where query i may see key j: j <= i + |M_b - N_b|, with N_b and M_b the real
    lengths of item b (padded lengths where a mask is None).

    MulT's "future" mask for a rectangular pair, taken per clip so that padding never moves it. For
    self-attention (M_b = N_b) it is the usual causal mask. A query of the shorter stream thus hears
    the longer one up to its own relative position and beyond, and the last real query hears all of
    it; the reference's `tril` let text query i hear only audio frames 0..i (the first 15 frames
    for a 15-token sentence).
    """
    n_real = query_mask.sum(-1) if query_mask is not None else torch.full((1,), n, device=device)  # (B,)
    m_real = key_mask.sum(-1) if key_mask is not None else torch.full((1,), m, device=device)  # (B,)
    reach = (m_real - n_real).abs()[:, None, None]  # (B, 1, 1)
    queries = torch.arange(n, device=device)[None, :, None]  # (1, N, 1)
    keys = torch.arange(m, device=device)[None, None, :]  # (1, 1, M)
    return keys <= queries + reach


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, relu_dropout: float):
        super().__init__(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(relu_dropout), nn.Linear(4 * dim, dim))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block; one LayerNorm serves query, key and value, as in the reference."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attn_dropout)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, relu_dropout)
        self.res_dropout = nn.Dropout(res_dropout)

    def forward(self, x, bias, context=None):
        normed_context = None if context is None else self.attn_norm(context)
        x = self.res_dropout(self.attn(self.attn_norm(x), bias, normed_context)) + x
        return self.res_dropout(self.ff(self.ff_norm(x))) + x


def sinusoidal_positions(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, N) mask → (B, N, D) sinusoidal embeddings of positions 1..n; padded steps get zeros."""
    positions = mask.long().cumsum(dim=1) * mask  # 0 marks padding
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=mask.device) / max(half - 1, 1))
    angles = positions[..., None].float() * freqs  # (B, N, D/2)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb * mask[..., None]


class TransformerEncoder(nn.Module):
    """A stack of blocks over `x`, attending to `context` when one is given (cross-modal stack).

    Inputs are scaled by sqrt(D) and given sinusoidal positions, then dropout, as in the reference.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
        embed_dropout: float,
        causal: bool,
    ):
        super().__init__()
        self.scale = math.sqrt(dim)
        self.causal = causal
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)
        )

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.embed_dropout(self.scale * x + sinusoidal_positions(mask, x.shape[-1]))

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        mask: torch.Tensor,  # (B, N)
        context: torch.Tensor | None = None,  # (B, M, D)
        context_mask: torch.Tensor | None = None,  # (B, M)
    ) -> torch.Tensor:
        x = self.embed(x, mask)
        if context is not None:
            context = self.embed(context, context_mask)
        bias = attention_bias(mask, mask if context is None else context_mask, self.causal, x.dtype)
        for block in self.blocks:
            x = block(x, bias, context)
        return x  # (B, N, D)
