"""Optional token-level label attention: per-level label queries attend over the encoder's token states.

For level l with C_l classes, a learned query per class scores every (non-padding) token; the softmax-weighted
token states give one class-specific vector per class, scored by a per-class weight vector. The result is a
logit per class that the HTC adds to its local (and global) logits for that level.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class LabelAttention(nn.Module):
    """Per-level label-wise attention over token states (batch, tokens, hidden) -> per-level logits."""

    def __init__(self, hidden: int, num_classes: Sequence[int], dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_classes = list(num_classes)
        self.dim = dim
        self.key = nn.Linear(hidden, dim)
        self.value = nn.Linear(hidden, dim)
        self.queries = nn.ParameterList(nn.Parameter(torch.randn(c, dim) * dim**-0.5) for c in self.num_classes)
        self.scorers = nn.ParameterList(nn.Parameter(torch.randn(c, dim) * dim**-0.5) for c in self.num_classes)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(c)) for c in self.num_classes)
        self.dropout = nn.Dropout(dropout)

    def attention(self, tokens: torch.Tensor, mask: torch.Tensor, level: int) -> torch.Tensor:
        """Attention weights (batch, classes of `level`, tokens); padding gets weight 0."""
        keys = self.key(tokens)
        scores = torch.einsum("cd,btd->bct", self.queries[level], keys) / math.sqrt(self.dim)
        scores = scores.masked_fill(~mask.bool().unsqueeze(1), torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """[(batch, num_classes[l]) for every level] from token states and their attention mask."""
        values = self.dropout(self.value(tokens))
        out = []
        for level in range(len(self.num_classes)):
            context = torch.einsum("bct,btd->bcd", self.attention(tokens, mask, level), values)
            out.append((context * self.scorers[level]).sum(-1) + self.biases[level])
        return out
