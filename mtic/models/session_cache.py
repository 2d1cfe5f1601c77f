"""A key/value cache over a batch of chat sessions that grows turn by turn.

Rolling a session out turn by turn (the model's own answer to every history turn) re-reads the whole
transcript at each turn when every turn gets a fresh prompt: O(turns^2) prompt tokens. `SessionCache` keeps one
cache row per session and feeds only the new tokens of each turn. Rows may hold padding in the middle (every
feed left-pads its chunk): the 2-D attention mask masks those slots out and positions are passed explicitly,
so a row's keys and positions are exactly those of its unpadded transcript.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from mtic.models.kv_cache import with_cache
from mtic.models.label_scoring import left_pad


class SessionCache:
    """One cache row per session: `feed` appends a chunk of tokens to each row, `crop` / `keep` shrink it."""

    def __init__(self, model: Any, pad_id: int, rows: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.reset(rows)

    def reset(self, rows: int) -> None:
        """Empty the cache (a plain full-attention cache: no sliding-window layers that cannot be cropped)."""
        self.cache = DynamicCache()
        self.mask = torch.zeros((rows, 0), dtype=torch.long, device=self.device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=self.device)

    @property
    def width(self) -> int:
        """Slots per row (real tokens and padding)."""
        return self.mask.shape[1]

    def feed(self, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append chunk k to row k; returns the next-token log-probabilities after each row's last token.

        A row with an empty chunk gets padding only; its returned distribution is meaningless.
        """
        if not any(chunks):
            raise ValueError("nothing to feed: every chunk is empty")
        ids, chunk_mask = left_pad(chunks, self.pad_id, self.device)
        positions = self.lengths[:, None] + (chunk_mask.cumsum(-1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, chunk_mask], dim=1)
        out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **with_cache(self.model, self.cache))
        self.lengths = self.lengths + chunk_mask.sum(-1)
        return out.logits[:, -1].float().log_softmax(-1)

    def step(self, tokens: Sequence[int | None]) -> torch.Tensor:
        """Append one token to each row (None: padding); next-token log-probabilities after it."""
        return self.feed([[] if t is None else [t] for t in tokens])

    def crop(self, width: int) -> None:
        """Drop every slot past `width` (tokens fed to look ahead, e.g. a generated or scored answer)."""
        extra = self.cache.get_seq_length() - width  # the cache may hold slots the mask never saw (score_tree)
        if extra > 0:  # a negative argument removes that many slots in every transformers 4.4x-5.x release
            self.cache.crop(-extra)
        self.mask = self.mask[:, :width]
        self.lengths = self.mask.sum(-1)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order (sessions that are finished leave the batch)."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        if self.width:
            self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.lengths = self.lengths[index]
