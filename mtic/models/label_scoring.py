"""Exact decoding over a closed label set: rank every label by its length-normalised log-likelihood."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtic.models.kv_cache import cache_of, with_cache


@torch.no_grad()
def score_continuations(
    model: Any, prompt: Sequence[int], continuations: Sequence[Sequence[int]], pad_token_id: int
) -> torch.Tensor:
    """Mean log-probability of each continuation after `prompt`.

    The prompt runs once; its key/value cache is shared by all continuations, which run as one right-padded
    batch. Returns a tensor of shape (len(continuations),).
    """
    device = next(model.parameters()).device
    prompt_ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    first = model(input_ids=prompt_ids, use_cache=True)
    next_logp = first.logits[0, -1].float().log_softmax(-1)
    cache = cache_of(first)
    n = len(continuations)
    lengths = torch.tensor([len(c) for c in continuations], device=device)
    width = int(lengths.max())
    ids = torch.full((n, width), pad_token_id, dtype=torch.long, device=device)
    for k, cont in enumerate(continuations):
        ids[k, : len(cont)] = torch.tensor(list(cont), dtype=torch.long, device=device)
    scores = next_logp[ids[:, 0]]
    if width > 1:
        cache.batch_repeat_interleave(n)
        valid = torch.arange(width, device=device)[None, :] < lengths[:, None]
        mask = torch.cat([torch.ones(n, len(prompt), dtype=torch.long, device=device), valid.long()], dim=1)
        out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=False, **with_cache(model, cache))
        logp = out.logits.float().log_softmax(-1)
        picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1) * valid[:, 1:]
        scores = scores + picked.sum(1)
    return scores / lengths.float()


def label_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """A probability per label from length-normalised scores (softmax)."""
    return scores.softmax(-1)
