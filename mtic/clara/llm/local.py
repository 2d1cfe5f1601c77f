"""The `local` backend: a registry causal LM (smollm2-135m, gemma3-270m, a hub id or a path) on this machine.

`llm.decode: greedy` (mode generate) decodes greedily, `batch_size` left-padded prompts at a time.
`llm.decode: score` (mode score) ranks the closed
answer set of each request (the candidate intents' rendered answers) by length-normalised log-likelihood:
the prompts of a batch run as one left-padded forward pass, then all their candidates run as one packed pass
over that key/value cache (see `LocalLLM.score_prompts`).

Label compression's LLM proposer (`labels.compress_llm`, mtic/labels/chooser.py) is this backend with decode
greedy: one local-LLM wrapper for every use.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from mtic.clara.llm.base import GENERATE, GREEDY, MODES, SCORE, LLMRequest, LLMResponse, Stats
from mtic.hub.registry import load_causal_lm
from mtic.models.label_scoring import left_pad, score_prompts

log = logging.getLogger("mtic")
SCORE_DECIMALS = 5
SUM, MEAN = "sum", "mean"
LENGTH_NORMS = (SUM, MEAN)
AUTO, EOS, NEWLINE, NO_END = "auto", "eos", "newline", "none"
ANSWER_ENDS = (AUTO, EOS, NEWLINE, NO_END)


def resolve_answer_end(answer_end: str, chat_template: bool) -> str:
    """`auto` = eos with the chat template, newline without; other values as given."""
    return answer_end if answer_end != AUTO else (EOS if chat_template else NEWLINE)


def plain_prompt_text(request: LLMRequest) -> str:
    """The prompt without a chat template: system, a blank line, user, a newline, then the answer prefix."""
    return (f"{request.system}\n\n" if request.system else "") + f"{request.user}\n" + request.answer_prefix


def choice_texts(request: LLMRequest, answer_end: str) -> list[str]:
    """Every candidate answer as the text that continues the prompt in score mode (before tokenisation; with
    `answer_end` eos the end-of-sequence token follows it)."""
    space = "" if not request.answer_prefix or request.answer_prefix[-1].isspace() else " "
    tail = "\n" if answer_end == NEWLINE else ""
    return [space + choice + tail for choice in request.choices]


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
            raise ValueError(f"mode must be one of {MODES}, got {mode!r} (llm.decode: score | greedy)")
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
        self.answer_end = resolve_answer_end(answer_end, self.use_chat_template)
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
        return {"decode": GREEDY, "max_new_tokens": self.max_new_tokens}

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    # -- tokenisation --------------------------------------------------------------------------------
    def prompt_text(self, request: LLMRequest) -> str:
        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(request.messages(), tokenize=False, add_generation_prompt=True)
            return text + request.answer_prefix
        return plain_prompt_text(request)

    def prompt_ids(self, request: LLMRequest) -> list[int]:
        text = self.prompt_text(request)
        ids = self.tokenizer(text, add_special_tokens=not self.use_chat_template)["input_ids"]
        if len(ids) > self.max_prompt_tokens:
            self.stats.add("truncated_prompts")
            ids = ids[-self.max_prompt_tokens :]
        return ids

    def choice_ids(self, request: LLMRequest) -> list[list[int]]:
        """Token ids of every candidate answer as it would continue the prompt, with its end marker."""
        eos = self.tokenizer.eos_token_id
        out = []
        for text in choice_texts(request, self.answer_end):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
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

    @torch.no_grad()
    def _generate(self, prompts: Sequence[list[int]]) -> list[str]:
        ids, mask = left_pad(prompts, self.pad_id)
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
        """Mean (per-token) log-probability of each prompt's choices (see `label_scoring.score_prompts`)."""
        return score_prompts(self.model, prompts, choices, self.pad_id)
