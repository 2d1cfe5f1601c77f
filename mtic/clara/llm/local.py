"""The `local` backend: a registry causal LM (smollm2-135m, gemma3-270m, a hub id or a path) on this machine.

`mode: generate` decodes greedily, `batch_size` left-padded prompts at a time. `mode: score` ranks the closed
answer set of each request (the candidate intents' rendered answers) by length-normalised log-likelihood:
the prompts of a batch run as one left-padded forward pass, then all their candidates run as one packed pass
over that key/value cache (see `LocalLLM.score_prompts`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from mtic.clara.llm.base import MODES, SCORE, LLMRequest, LLMResponse, Stats
from mtic.models.backbones import load_causal_lm
from mtic.models.kv_cache import cache_of, with_cache
from mtic.models.label_scoring import score_continuations

log = logging.getLogger("mtic")
SCORE_DECIMALS = 5
SUM, MEAN = "sum", "mean"
LENGTH_NORMS = (SUM, MEAN)
AUTO, EOS, NEWLINE, NO_END = "auto", "eos", "newline", "none"
ANSWER_ENDS = (AUTO, EOS, NEWLINE, NO_END)


class LocalLLM:
    """A causal LM answering prompts in batches (see the module docstring).

    `chat_template`: wrap the messages in the tokenizer's chat template when it has one (instruct models);
    otherwise the prompt is `system`, a blank line, `user`, a newline. `answer_prefix` always follows.
    `answer_end`: what ends every candidate, so that a label that is a prefix of another is not favoured:
    `eos`, `newline` (what follows an answer in the demos of a plain prompt) or `none`; `auto` = eos with the
    chat template, newline without. `length_norm`: rank candidates by the total log-probability of the answer
    (`sum`: with the end marker, the probability of exactly that answer) or by its per-token mean (`mean`).
    Prompts longer than `max_prompt_tokens` keep their last tokens (counted as truncated).
    """

    def __init__(
        self,
        model: str = "smollm2-135m",
        mode: str = SCORE,
        batch_size: int = 8,
        max_new_tokens: int = 16,
        chat_template: bool = False,
        dtype: str = "float32",
        cache_dir: str | None = None,
        max_prompt_tokens: int = 2048,
        answer_end: str = AUTO,
        length_norm: str = SUM,
        num_threads: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"llm.mode must be one of {MODES}, got {mode!r}")
        if answer_end not in ANSWER_ENDS:
            raise ValueError(f"llm.answer_end must be one of {ANSWER_ENDS}, got {answer_end!r}")
        if length_norm not in LENGTH_NORMS:
            raise ValueError(f"llm.length_norm must be one of {LENGTH_NORMS}, got {length_norm!r}")
        if batch_size < 1:
            raise ValueError("llm.batch_size must be at least 1")
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.name, self.mode, self.batch_size = model, mode, batch_size
        self.max_new_tokens, self.max_prompt_tokens = max_new_tokens, max_prompt_tokens
        self.length_norm = length_norm
        self.dtype = dtype
        self.model, self.tokenizer = load_causal_lm(model, cache_dir=cache_dir, dtype=dtype)
        self.use_chat_template = bool(chat_template and getattr(self.tokenizer, "chat_template", None))
        self.answer_end = answer_end if answer_end != AUTO else (EOS if self.use_chat_template else NEWLINE)
        self.stats = Stats()

    # -- cache identity ------------------------------------------------------------------------------
    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "local", "model": self.name, "mode": self.mode, "dtype": self.dtype,
                "chat_template": self.use_chat_template, "max_prompt_tokens": self.max_prompt_tokens}

    @property
    def params(self) -> dict[str, Any]:
        if self.mode == SCORE:
            return {"decode": SCORE, "answer_end": self.answer_end, "length_norm": self.length_norm}
        return {"decode": "greedy", "max_new_tokens": self.max_new_tokens}

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    # -- tokenisation --------------------------------------------------------------------------------
    def prompt_text(self, request: LLMRequest) -> str:
        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(request.messages(), tokenize=False, add_generation_prompt=True)
        else:
            text = (f"{request.system}\n\n" if request.system else "") + f"{request.user}\n"
        return text + request.answer_prefix

    def prompt_ids(self, request: LLMRequest) -> list[int]:
        text = self.prompt_text(request)
        ids = self.tokenizer(text, add_special_tokens=not self.use_chat_template)["input_ids"]
        if len(ids) > self.max_prompt_tokens:
            self.stats.add("truncated_prompts")
            ids = ids[-self.max_prompt_tokens :]
        return ids

    def choice_ids(self, request: LLMRequest) -> list[list[int]]:
        """Token ids of every candidate answer as it would continue the prompt, with its end marker."""
        space = "" if not request.answer_prefix or request.answer_prefix[-1].isspace() else " "
        tail = "\n" if self.answer_end == NEWLINE else ""
        eos = self.tokenizer.eos_token_id
        out = []
        for choice in request.choices:
            ids = self.tokenizer(space + choice + tail, add_special_tokens=False)["input_ids"]
            if self.answer_end == EOS and eos is not None:
                ids = ids + [eos]
            out.append(ids or [self.pad_id])
        return out

    # -- answering -----------------------------------------------------------------------------------
    def complete(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """Answers in request order; prompts are batched by similar length (less padding)."""
        self.stats.add("requests", len(requests))
        ids = [self.prompt_ids(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda k: len(ids[k]))
        out: list[LLMResponse | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            self.stats.add("batches")
            if self.mode == SCORE:
                answers = self._score([requests[k] for k in chunk], [ids[k] for k in chunk])
            else:
                answers = [LLMResponse(text) for text in self._generate([ids[k] for k in chunk])]
            for k, answer in zip(chunk, answers):
                out[k] = answer
        return out  # type: ignore[return-value]

    def _left_pad(self, prompts: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, p in enumerate(prompts):
            ids[k, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[k, width - len(p) :] = 1
        return ids, mask

    @torch.no_grad()
    def _generate(self, prompts: Sequence[list[int]]) -> list[str]:
        ids, mask = self._left_pad(prompts)
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                  do_sample=False, pad_token_id=self.pad_id, eos_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)

    def _response(self, scores: torch.Tensor, request: LLMRequest) -> LLMResponse:
        values = tuple(round(float(s), SCORE_DECIMALS) for s in scores)
        best = max(range(len(values)), key=lambda k: (values[k], -k))
        return LLMResponse(text=request.choices[best], choice=best, scores=values)

    @torch.no_grad()
    def _score(self, requests: Sequence[LLMRequest], prompts: Sequence[list[int]]) -> list[LLMResponse]:
        out: list[LLMResponse | None] = [None] * len(requests)
        live = [k for k, r in enumerate(requests) if r.choices]
        for k in set(range(len(requests))) - set(live):
            out[k] = LLMResponse(None, error="no choices to score")
        if live:
            choices = [self.choice_ids(requests[k]) for k in live]
            scores = self.score_prompts([prompts[k] for k in live], choices)
            for k, values, conts in zip(live, scores, choices):
                if self.length_norm == SUM:
                    values = values * torch.tensor([len(c) for c in conts], dtype=values.dtype)
                out[k] = self._response(values, requests[k])
        return out  # type: ignore[return-value]

    def score_prompts(self, prompts: Sequence[list[int]], choices: Sequence[list[list[int]]]) -> list[torch.Tensor]:
        """Mean (per-token) log-probability of each prompt's choices.

        One left-padded forward pass runs all prompts (logits only at the last position). Then all candidates
        of all prompts run in ONE more pass over that key/value cache: each prompt's candidates are packed into
        one row, a 4-D mask lets every candidate token see its prompt and the earlier tokens of its own
        candidate only (a token tree), so the cache is never copied. Models with sliding-window layers fall back
        to `score_continuations` per prompt.
        """
        ids, mask = self._left_pad(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        first = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        first_logp = first.logits[:, -1].float().log_softmax(-1)
        cache = cache_of(first)
        if any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", [])):
            return [score_continuations(self.model, p, c, self.pad_id) for p, c in zip(prompts, choices)]
        return self._score_tree(ids, mask, first_logp, cache, choices)

    def _score_tree(self, ids: torch.Tensor, mask: torch.Tensor, first_logp: torch.Tensor, cache: Any,
                    choices: Sequence[list[list[int]]]) -> list[torch.Tensor]:
        batch, width = ids.shape
        # every candidate but its last token is fed; token j of candidate c predicts token j + 1
        spans = [[(sum(len(c) - 1 for c in conts[:j]), len(conts[j]) - 1) for j in range(len(conts))]
                 for conts in choices]
        length = max(1, max(sum(n for _, n in sp) for sp in spans))
        tokens = torch.full((batch, length), self.pad_id, dtype=torch.long)
        pos = torch.zeros((batch, length), dtype=torch.long)
        allowed = torch.zeros((batch, length, width + length), dtype=torch.bool)
        allowed[:, :, :width] = mask[:, None, :].bool()
        allowed[:, torch.arange(length), width + torch.arange(length)] = True  # every row sees itself (padding too)
        for b, (conts, sp) in enumerate(zip(choices, spans)):
            start_pos = int(mask[b].sum())
            for cont, (offset, n) in zip(conts, sp):
                if n == 0:
                    continue
                tokens[b, offset : offset + n] = torch.tensor(cont[:-1], dtype=torch.long)
                pos[b, offset : offset + n] = start_pos + torch.arange(n)
                block = torch.tril(torch.ones(n, n, dtype=torch.bool))
                allowed[b, offset : offset + n, width + offset : width + offset + n] = block
        dtype = next(self.model.parameters()).dtype
        bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        logits = self.model(input_ids=tokens, attention_mask=bias, position_ids=pos, use_cache=True,
                            **with_cache(self.model, cache)).logits
        logp = logits.float().log_softmax(-1)
        results = []
        for b, (conts, sp) in enumerate(zip(choices, spans)):
            values = []
            for cont, (offset, n) in zip(conts, sp):
                total = first_logp[b, cont[0]]
                if n:
                    targets = torch.tensor(cont[1:], dtype=torch.long)
                    total = total + logp[b, offset : offset + n].gather(-1, targets[:, None]).sum()
                values.append(total / len(cont))
            results.append(torch.stack(values))
        return results
