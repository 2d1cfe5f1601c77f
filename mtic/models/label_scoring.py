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


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of the prompts left-padded to one width."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for k, p in enumerate(prompts):
        ids[k, width - len(p) :] = torch.tensor(list(p), dtype=torch.long, device=device)
        mask[k, width - len(p) :] = 1
    return ids, mask


@torch.no_grad()
def score_prompts(model: Any, prompts: Sequence[Sequence[int]], choices: Sequence[Sequence[Sequence[int]]],
                  pad_id: int) -> list[torch.Tensor]:
    """Mean (per-token) log-probability of each prompt's choices, for a batch of prompts.

    One left-padded forward pass runs all prompts (logits only at the last position). Then all candidates of
    all prompts run in ONE more pass over that key/value cache: each prompt's candidates are packed into one
    row, a 4-D mask lets every candidate token see its prompt and the earlier tokens of its own candidate only
    (a token tree), so the cache is never copied. Models with sliding-window layers (Gemma 3) fall back to
    `score_continuations` per prompt.
    """
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    first = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    first_logp = first.logits[:, -1].float().log_softmax(-1)
    cache = cache_of(first)
    if any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", [])):
        return [score_continuations(model, p, c, pad_id) for p, c in zip(prompts, choices)]
    return score_tree(model, mask, first_logp, cache, choices, pad_id)


def score_tree(model: Any, mask: torch.Tensor, first_logp: torch.Tensor, cache: Any,
               choices: Sequence[Sequence[Sequence[int]]], pad_id: int) -> list[torch.Tensor]:
    """Mean log-probability of each row's candidates after the prompt already in `cache`.

    `mask` (batch, width) marks the cache's real slots (padding may sit anywhere), `first_logp` the
    distribution of the first candidate token. All candidates of a row run packed in one pass (a token tree):
    every fed token sees the prompt and the earlier tokens of its own candidate only. The pass appends to
    `cache`, so a caller that keeps the cache crops it back afterwards. A row with no candidates gets an empty
    tensor. Index tensors are built once for the whole batch (no per-candidate tensor ops).
    """
    batch, width = mask.shape
    device = mask.device
    # every candidate but its last token is fed; fed token j of candidate c predicts token j + 1
    fed_row, fed_col, fed_tok, fed_pos, fed_seg, fed_target, fed_cand = [], [], [], [], [], [], []
    first_row, first_tok, cand_len = [], [], []
    prompt_len = mask.sum(-1).tolist()
    length = 1
    for b, conts in enumerate(choices):
        col = 0
        for cont in conts:
            cand = len(cand_len)
            first_row.append(b)
            first_tok.append(cont[0])
            cand_len.append(len(cont))
            for j in range(len(cont) - 1):
                fed_row.append(b)
                fed_col.append(col + j)
                fed_tok.append(cont[j])
                fed_pos.append(prompt_len[b] + j)
                fed_seg.append(cand)
                fed_target.append(cont[j + 1])
                fed_cand.append(cand)
            col += len(cont) - 1
        length = max(length, col)

    def as_long(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    rows, cols = as_long(fed_row), as_long(fed_col)
    tokens = torch.full((batch, length), pad_id, dtype=torch.long, device=device)
    pos = torch.zeros((batch, length), dtype=torch.long, device=device)
    segment = torch.full((batch, length), -1, dtype=torch.long, device=device)  # candidate of each fed slot
    tokens[rows, cols], pos[rows, cols], segment[rows, cols] = as_long(fed_tok), as_long(fed_pos), as_long(fed_seg)
    steps = torch.arange(length, device=device)
    causal = steps[None, :, None] >= steps[None, None, :]
    same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)
    tree = (same & causal) | torch.eye(length, dtype=torch.bool, device=device)  # padding sees itself
    allowed = torch.cat([mask[:, None, :].bool().expand(batch, length, width), tree], dim=-1)
    dtype = next(model.parameters()).dtype
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    logits = model(input_ids=tokens, attention_mask=bias, position_ids=pos, use_cache=True,
                   **with_cache(model, cache)).logits
    totals = first_logp[as_long(first_row), as_long(first_tok)].float()
    if fed_row:
        picked = logits[rows, cols].float()  # only the fed slots: no log-softmax over padding
        token_logp = picked.gather(-1, as_long(fed_target)[:, None]).squeeze(-1) - picked.logsumexp(-1)
        totals = totals.index_add(0, as_long(fed_cand), token_logp)
    means = totals / torch.tensor(cand_len, dtype=torch.float, device=device) if cand_len else totals
    counts = [len(conts) for conts in choices]
    return list(torch.split(means, counts)) if cand_len else [torch.empty(0, device=device) for _ in choices]
