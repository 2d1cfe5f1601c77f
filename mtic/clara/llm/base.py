"""What every LLM backend takes and returns: requests, responses, the backend protocol, shared counters."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

# response statuses
OK = "ok"
FAILED = "failed"
# backend modes (internal: part of the answer-cache identity, so they keep their names)
GENERATE, SCORE = "generate", "score"
MODES = (GENERATE, SCORE)
# how an answer is read (`llm.decode`, the same words as symbol tuning's `model.decode`) -> the backend mode
GREEDY = "greedy"
DECODES = (SCORE, GREEDY)
MODE_OF_DECODE = {SCORE: SCORE, GREEDY: GENERATE}


@dataclass(frozen=True)
class LLMRequest:
    """One prompt: a system and a user message, the text the answer starts with, and the closed answer set.

    `choices` are the candidate answers (rendered labels / symbols / JSON) that score mode ranks; generation
    ignores them.
    """

    system: str
    user: str
    answer_prefix: str = ""
    choices: tuple[str, ...] = ()

    def messages(self) -> list[dict[str, str]]:
        """Chat messages (system first when there is one)."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        return out + [{"role": "user", "content": self.user}]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LLMResponse:
    """A backend's answer. `status` is 'ok' or 'failed' (after retries); `choice` indexes `request.choices`
    in score mode, with the length-normalised log-likelihood of every choice in `scores`."""

    text: str | None
    status: str = OK
    choice: int | None = None
    scores: tuple[float, ...] | None = None
    error: str | None = None
    attempts: int = 1
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "choice": self.choice, "scores": None if self.scores is None else list(self.scores)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> LLMResponse:
        scores = row.get("scores")
        return cls(text=row.get("text"), choice=row.get("choice"), scores=None if scores is None else tuple(scores),
                   cached=True)


@runtime_checkable
class LLMBackend(Protocol):
    """`complete` answers every request (same order), never raising for one bad request: a request that could
    not be answered comes back with status 'failed'. `identity` and `params` key the answer cache."""

    mode: str

    @property
    def identity(self) -> dict[str, Any]: ...

    @property
    def params(self) -> dict[str, Any]: ...

    def complete(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]: ...


class Stats:
    """Thread-safe event counters (requests, attempts, retries by reason, failures, cache hits ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))
