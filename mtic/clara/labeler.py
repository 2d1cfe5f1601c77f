"""Label sessions with an LLM: retrieve demos, render one prompt per demo ordering, read and vote the answers.

Every answer ends in one status: 'ok' (an intent), 'empty', 'garbage' (nothing parseable), 'unmatched' (text
that names no intent) or 'failed' (the backend gave up). None of them raises. A session is 'kept' when the
orderings agree under the rule; otherwise 'disagreement' (some answered) or 'no_answer' (none did).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mtic.clara.llm import LLMBackend, LLMResponse
from mtic.clara.prompts import OK as PARSED_OK
from mtic.clara.prompts import PromptTemplate, RenderedPrompt
from mtic.clara.retrieval import Retriever
from mtic.clara.self_consistency import UNANIMOUS, agree, order_names, orderings
from mtic.data.schema import Session
from mtic.labels.text import normalize_text

# answer statuses
ANSWER_OK, EMPTY, GARBAGE, UNMATCHED, FAILED = "ok", "empty", "garbage", "unmatched", "failed"
ANSWER_STATUSES = (ANSWER_OK, EMPTY, GARBAGE, UNMATCHED, FAILED)
# session statuses
KEPT, DISAGREEMENT, NO_ANSWER = "kept", "disagreement", "no_answer"
SESSION_STATUSES = (KEPT, DISAGREEMENT, NO_ANSWER)
SCORE_METHOD, SYMBOL_METHOD, EXACT_METHOD = "score", "symbol", "exact"
MAX_TEXT_CHARS = 200
_SYMBOL_TOKEN = re.compile(r"(?<![A-Za-z])[A-Z]{1,2}(?![A-Za-z])")
_WORD_AFTER = re.compile(r"\s+[a-z]")


class Match(Protocol):
    intent_id: str | None
    method: str


Matcher = Callable[[str], Match]
"""`match(text)` -> an object with `intent_id` (None = no intent) and `method`. An object with a `match`
method (mtic.labels' OutputMatcher) is accepted too."""


@dataclass(frozen=True)
class ExactMatch:
    intent_id: str | None
    method: str = EXACT_METHOD
    score: float = 1.0


class ExactLabelMatcher:
    """Case- and punctuation-insensitive exact match of an answer against every label (the fallback matcher)."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.by_text: dict[str, str] = {}
        for intent_id, label in labels.items():
            self.by_text.setdefault(normalize_text(label), intent_id)

    def match(self, text: str) -> ExactMatch:
        found = self.by_text.get(normalize_text(text))
        return ExactMatch(found, EXACT_METHOD if found else "none", 1.0 if found else 0.0)

    __call__ = match


@dataclass(frozen=True)
class Answer:
    """One ordering's answer: the intent (None unless status is 'ok'), how it was read, the raw text."""

    order: str
    status: str
    intent: str | None = None
    method: str | None = None
    text: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        row = {"order": self.order, "status": self.status, "intent": self.intent, "method": self.method,
               "text": None if self.text is None else self.text[:MAX_TEXT_CHARS]}
        if self.error:
            row["error"] = self.error
        return row


class SessionLabeler:
    """Demos (retriever) -> n prompts (template, one per ordering) -> LLM -> answers -> vote.

    `labels` gives the label text of every intent (the prompt shows them, free answers are matched against
    them); `matcher` maps a free answer to an intent (default: exact match).
    """

    def __init__(
        self,
        retriever: Retriever,
        template: PromptTemplate,
        labels: Mapping[str, str],
        llm: LLMBackend,
        matcher: Matcher | None = None,
        n_orders: int = 3,
        rule: str = UNANIMOUS,
        seed: int = 0,
    ) -> None:
        self.retriever, self.template, self.labels, self.llm = retriever, template, dict(labels), llm
        matcher = matcher or ExactLabelMatcher(self.labels)
        self.matcher: Matcher = matcher.match if hasattr(matcher, "match") else matcher  # type: ignore[union-attr]
        self.order_names = order_names(n_orders)
        self.n_orders, self.rule, self.seed = n_orders, rule, seed
        agree([], rule)  # validates the rule name early

    def settings(self) -> dict[str, Any]:
        """What determines the labels (part of the artifact key of a pseudo-label file)."""
        r = self.retriever
        return {"prompt": self.template.name, "llm": self.llm.identity, "llm_params": self.llm.params,
                "n_orders": self.n_orders, "rule": self.rule, "seed": self.seed,
                "retrieval": {"k": r.k, "max_demos": r.max_demos, "history_weight": r.history_weight,
                              "candidates": r.candidates is not None, "n_candidates": r.n_candidates,
                              "demos_per_candidate": r.demos_per_candidate}}

    def label(self, sessions: Sequence[Session]) -> list[dict[str, Any]]:
        """One record per session (same order): its queries, every ordering's answer, the vote."""
        if not sessions:
            return []
        demos = self.retriever.retrieve([s.queries for s in sessions])
        prompts: list[RenderedPrompt] = []
        for session, found in zip(sessions, demos):
            for ordered in orderings(found, self.n_orders, self.seed, session.id):
                prompts.append(self.template.render(ordered, session.queries, self.labels))
        responses = self.llm.complete([p.request for p in prompts])
        records, n = [], self.n_orders
        for s, session in enumerate(sessions):
            answers = [self.read(name, prompts[s * n + k], responses[s * n + k])
                       for k, name in enumerate(self.order_names)]
            records.append(self._record(session, answers))
        return records

    def read(self, order: str, prompt: RenderedPrompt, response: LLMResponse) -> Answer:
        """The intent named by one response (never raises)."""
        if not response.ok:
            return Answer(order, FAILED, error=response.error)
        if response.choice is not None and 0 <= response.choice < len(prompt.intents):
            return Answer(order, ANSWER_OK, prompt.intents[response.choice], SCORE_METHOD, response.text)
        parsed = self.template.parse(response.text)
        if parsed.status != PARSED_OK or parsed.value is None:
            return Answer(order, parsed.status, text=response.text)
        if self.template.symbolic:
            intent = _find_symbol(parsed.value, prompt.symbol_map)
            status = ANSWER_OK if intent else UNMATCHED
            return Answer(order, status, intent, SYMBOL_METHOD if intent else None, response.text)
        try:
            match = self.matcher(parsed.value)
        except Exception as err:  # noqa: BLE001 - a matcher problem on odd text is an unmatched answer
            return Answer(order, UNMATCHED, text=response.text, error=f"matcher: {type(err).__name__}")
        if match.intent_id is None or match.intent_id not in self.labels:
            return Answer(order, UNMATCHED, text=response.text)
        return Answer(order, ANSWER_OK, match.intent_id, match.method, response.text)

    def _record(self, session: Session, answers: list[Answer]) -> dict[str, Any]:
        vote = agree([a.intent for a in answers], self.rule)
        if vote.kept:
            status = KEPT
        else:
            status = DISAGREEMENT if any(a.intent for a in answers) else NO_ANSWER
        turns = [{"text": t.text, "intent": None} for t in session.turns]
        turns[-1]["intent"] = vote.answer
        return {"id": session.id, "turns": turns, "status": status, "intent": vote.answer, "votes": vote.votes,
                "base": answers[0].intent, "answers": [a.to_json() for a in answers]}


def _find_symbol(text: str, symbols: Mapping[str, str]) -> str | None:
    """The intent of the symbol an answer names: the whole answer, else the first standalone shown symbol
    (an English "I" or "A" followed by a lower-case word is a pronoun or an article, not a symbol)."""
    whole = text.strip().upper()
    if whole in symbols:
        return symbols[whole]
    for found in _SYMBOL_TOKEN.finditer(text):
        token = found.group(0)
        if token in ("I", "A") and _WORD_AFTER.match(text, found.end()):
            continue
        if token in symbols:
            return symbols[token]
    return None
