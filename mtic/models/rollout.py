"""Turn-by-turn decoding of chat sessions over one growing key/value cache.

Each session is rolled out as the symbol-tuned model is used in production: every user turn is answered (the
model's own answer for history turns with `history=rollout`, the gold label with `gold`, nothing with `none`),
and the final answer is the prediction. Only the tokens new at each turn run through the model
(`SessionCache`); the result equals re-encoding the whole transcript at every turn.

Two decoders read an answer off the cache:
- greedy: generate until end of sequence (the paper's decoding; the text is then matched to an intent);
- score: the exact argmax of the length-normalised log-likelihood over the closed label set. A label's
  first-token log-probability comes free with the turn's forward pass, and since later tokens only lower a
  label's summed log-probability, `logp(first) / len(label)` bounds its score from above. Labels are scored
  in bound order until no unscored bound beats the best exact score (branch and bound; exact, usually a handful
  of labels). With `all_labels` the final turn scores every label, giving a probability per intent.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mtic.inputs.chat import ChatEncoder
from mtic.models.kv_cache import select_rows
from mtic.models.label_scoring import score_tree
from mtic.models.rollout_constants import (  # noqa: F401  (the value lists live there, torch-free; the owner's names)
    DECODES,
    GOLD,
    GREEDY,
    HISTORIES,
    NO_HISTORY,
    ROLLOUT,
    SCORE,
)
from mtic.models.session_cache import SessionCache

Session = Sequence[tuple[str, "str | None"]]


@dataclass
class Answer:
    """A decoded answer: its text, and for score decoding the label index, its score and label probabilities."""

    text: str
    label: int | None = None
    score: float | None = None
    probs: dict[int, float] | None = None


@dataclass
class LabelScorer:
    """Exact argmax over a closed label set (token ids of each label's answer, end of sequence included)."""

    answers: Sequence[Sequence[int]]
    texts: Sequence[str]
    first_round: int = 3   # labels per row in the first round; each later round doubles it, up to max_round
    max_round: int = 64
    _first: torch.Tensor = field(init=False, repr=False)
    _lengths: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.answers or any(len(a) == 0 for a in self.answers):
            raise ValueError("every label needs at least one answer token")
        self._first = torch.tensor([a[0] for a in self.answers], dtype=torch.long)
        self._lengths = torch.tensor([len(a) for a in self.answers], dtype=torch.float)

    def __call__(self, cache: SessionCache, first_logp: torch.Tensor, all_labels: Sequence[bool]) -> list[Answer]:
        """Best label per cache row; rows with `all_labels[k]` score every label and report probabilities."""
        rows, n = first_logp.shape[0], len(self.answers)
        bound = first_logp[:, self._first.to(first_logp.device)].cpu() / self._lengths
        exact = torch.full((rows, n), float("-inf"))
        scored = torch.zeros((rows, n), dtype=torch.bool)
        single = self._lengths == 1
        exact[:, single], scored[:, single] = bound[:, single], True
        width = cache.width
        for round_ in range(n + 1):
            best = exact.max(-1).values
            picks = [self._pick(bound[k], scored[k], best[k], all_labels[k] and round_ == 0, round_) for k in range(rows)]
            if not any(picks):
                break
            live = [k for k, pick in enumerate(picks) if pick]
            choices = [[self.answers[j] for j in picks[k]] for k in live]
            if len(live) == rows:  # every row scores: append to the cache itself, then crop it back
                scores = score_tree(cache.model, cache.mask, first_logp, cache.cache, choices, cache.pad_id)
                cache.crop(width)
            else:  # later rounds usually leave a few rows: run only those, over a row subset of the cache
                index = torch.tensor(live, dtype=torch.long, device=cache.mask.device)
                scores = score_tree(cache.model, cache.mask[index], first_logp[index],
                                    select_rows(cache.cache, index), choices, cache.pad_id)
            for k, row_scores in zip(live, scores):
                exact[k, picks[k]] = row_scores.float().cpu()
                scored[k, picks[k]] = True
        return [self._answer(exact[k], all_labels[k]) for k in range(rows)]

    def _pick(self, bound: torch.Tensor, scored: torch.Tensor, best: torch.Tensor, every: bool, round_: int) -> list[int]:
        if every:
            return (~scored).nonzero().flatten().tolist()
        open_ = (~scored) & (bound > best)
        order = [j for j in bound.argsort(descending=True).tolist() if open_[j]]
        return order[: min(self.max_round, self.first_round * 2**round_)]

    def _answer(self, exact: torch.Tensor, with_probs: bool) -> Answer:
        best = int(exact.argmax())
        probs = None
        if with_probs:
            p = exact.softmax(-1)
            probs = {int(j): float(p[j]) for j in p.topk(min(5, len(p))).indices}
        return Answer(self.texts[best], label=best, score=float(exact[best]), probs=probs)


@dataclass
class GreedyDecoder:
    """Greedy generation from the cache until end of sequence or `max_new_tokens`."""

    tokenizer: Any
    eos_id: int
    max_new_tokens: int

    def __call__(self, cache: SessionCache, first_logp: torch.Tensor, all_labels: Sequence[bool]) -> list[Answer]:
        width = cache.width
        generated = [[int(t)] for t in first_logp.argmax(-1)]
        for _ in range(self.max_new_tokens - 1):
            live = [g[-1] != self.eos_id for g in generated]
            if not any(live):
                break
            logp = cache.step([g[-1] if alive else None for g, alive in zip(generated, live)])
            for g, alive, token in zip(generated, live, logp.argmax(-1).tolist()):
                if alive:
                    g.append(int(token))
        cache.crop(width)
        cut = [g[:-1] if g[-1] == self.eos_id else g for g in generated]
        return [Answer(t.strip()) for t in self.tokenizer.batch_decode(cut, skip_special_tokens=True)]


Decoder = Callable[[SessionCache, torch.Tensor, Sequence[bool]], list[Answer]]


@dataclass
class SessionRollout:
    """Answers the turns of a batch of sessions; returns each session's final answer.

    `history=rollout` answers every turn with the model's own answer, over one cache that only grows by the new
    tokens of each turn; `gold` / `none` know every history answer up front, so each session runs once.
    """

    model: Any
    encoder: ChatEncoder
    decoder: Decoder
    pad_id: int
    history: str = ROLLOUT
    gold_answer: Callable[[str], str] | None = None
    all_labels: bool = False

    def __call__(self, sessions: Sequence[Session]) -> list[Answer]:
        if not sessions or any(len(s) == 0 for s in sessions):
            raise ValueError("every session needs at least one turn")
        cache = SessionCache(self.model, self.pad_id, len(sessions))
        if self.history != ROLLOUT:
            prompts = [self.encoder.prompt_ids([q for q, _ in s], [self._history_answer(g) for _, g in s[:-1]])
                       for s in sessions]
            return self.decoder(cache, cache.feed(prompts), [self.all_labels] * len(sessions))
        rows = list(range(len(sessions)))  # cache row r holds session rows[r]
        answers: list[list[str | None]] = [[] for _ in sessions]
        pending = [self.encoder.start_ids() + self.encoder.turn_ids(s[0][0], first=True, asked=True) for s in sessions]
        final: list[Answer | None] = [None] * len(sessions)
        step = 0
        while rows:
            first_logp = self._feed(cache, rows, pending, sessions, answers)
            last = [step == len(sessions[s]) - 1 for s in rows]
            going = []
            for r, (s, answer) in enumerate(zip(rows, self.decoder(cache, first_logp, [self.all_labels and x for x in last]))):
                if last[r]:
                    final[s] = answer
                    continue
                answers[s].append(answer.text)
                query = sessions[s][step + 1][0]
                pending[s] = self.encoder.answer_ids(answer.text) + self.encoder.turn_ids(query, first=False, asked=True)
                going.append(r)
            if len(going) < len(rows):
                rows = [rows[r] for r in going]
                if rows:
                    cache.keep(going)
            step += 1
        return [a for a in final if a is not None]

    def _history_answer(self, gold: str | None) -> str | None:
        if self.history == GOLD and gold is not None and self.gold_answer is not None:
            return self.gold_answer(gold)
        return None

    def _feed(self, cache: SessionCache, rows: list[int], pending: list[list[int]], sessions: Sequence[Session],
              answers: list[list[str | None]]) -> torch.Tensor:
        """Feed every row's pending tokens; a transcript past max_length is re-encoded, truncated as in training
        (and every row is re-encoded without padding when padding would push a row past a sliding window)."""
        limit = self.encoder.max_length
        chunks = [pending[s] for s in rows]
        # padding slots count in a sliding window's reach: past it, re-encode the rows without padding
        window = getattr(getattr(self.model, "config", None), "sliding_window", None) or float("inf")
        too_long = any(int(cache.lengths[r]) + len(c) > limit for r, c in enumerate(chunks))
        if too_long or cache.width + max(len(c) for c in chunks) > window:
            cache.reset(len(rows))
            chunks = [self.encoder.prompt_ids([q for q, _ in sessions[s][: len(answers[s]) + 1]], answers[s])
                      for s in rows]
        return cache.feed(chunks)
