"""The `openai` backend: any OpenAI-compatible chat-completions server (vLLM, TGI, Ollama, LMDeploy, OpenAI).

The real `openai` client does the HTTP; its own retries are switched off (`max_retries=0`) because this
backend retries more cases: timeouts, connection errors, 408/409/429 and 5xx answers, and bodies that are not
a chat completion ("garbage"). Waits grow exponentially with jitter (`backoff_base_s * 2**attempt`, capped at
`backoff_max_s`, then a uniformly random share of it between half and all), a server's Retry-After is honoured
up to the cap. A request still unanswered after `max_retries` retries comes back with status 'failed' and is
counted; other 4xx answers fail at once. Up to `max_concurrency` requests are in flight (a thread pool).
The API key is read from the environment variable named by `api_key_env`; it is never logged or stored.

`llm.decode: score` (mode score) chooses among each request's closed answer set (the candidate intents' rendered
answers) on the server: the set goes with the request as vLLM's guided choice, `extra_body` `structured_outputs:
{choice: [...]}` (vLLM >= 0.10.2, `choice_param: structured_outputs`) or `guided_choice: [...]` (vLLM < 0.12,
`choice_param: guided_choice`), so the server decodes greedily within the set and the answer names its index. An
answer outside the set (a server that ignores the field, or `max_tokens` shorter than a label) is 'failed' with
error `not_in_choices`, counted, warned about once, and never cached. Unlike the local backend's score mode, which
ranks every whole answer by likelihood, guided choice commits token by token (greedy within the set).
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mtic.clara.llm.base import FAILED, GENERATE, MODES, OK, SCORE, LLMRequest, LLMResponse, Stats
from mtic.eval.results import redact_logs, redact_text

log = logging.getLogger("mtic")
RETRY_STATUSES = (408, 409, 429)
NO_KEY = "EMPTY"  # what local servers without authentication accept
STRUCTURED_OUTPUTS, GUIDED_CHOICE = "structured_outputs", "guided_choice"
CHOICE_PARAMS = (STRUCTURED_OUTPUTS, GUIDED_CHOICE)
NOT_IN_CHOICES = "not_in_choices"


def guided_choice(choices: Sequence[str], param: str) -> dict[str, Any]:
    """The request fields that restrict a vLLM server's answer to `choices` (`param`: the vLLM version's form)."""
    if param == STRUCTURED_OUTPUTS:
        return {STRUCTURED_OUTPUTS: {"choice": list(choices)}}
    if param == GUIDED_CHOICE:
        return {GUIDED_CHOICE: list(choices)}
    raise ValueError(f"llm.choice_param must be one of {CHOICE_PARAMS}, got {param!r}")


def choice_index(text: str, choices: Sequence[str]) -> int | None:
    """The index of the answer in the closed set (exactly, else ignoring surrounding white space), None if absent."""
    if text in choices:
        return choices.index(text)
    stripped = [c.strip() for c in choices]
    return stripped.index(text.strip()) if text.strip() in stripped else None


def public_url(url: str | None) -> str | None:
    """`url` without any user:password part and with secret query parameters masked (safe to log, hash and
    write)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return redact_text(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))


class GarbageResponse(Exception):
    """The server answered 2xx with something that is not a chat completion."""


def _content(response: Any) -> str:
    """The text of the first choice; anything else is a GarbageResponse."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise GarbageResponse("no choices in the response")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise GarbageResponse(f"message content of type {type(content).__name__}")
    return content or ""


class OpenAILLM:
    """Chat completions against `base_url` with `model` (see the module docstring for the retry policy and the
    closed-set answers of mode score)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 32,
        seed: int | None = None,
        extra_body: dict[str, Any] | None = None,
        mode: str = GENERATE,
        choice_param: str = STRUCTURED_OUTPUTS,
    ) -> None:
        from openai import OpenAI, Timeout

        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r} (llm.decode: score | greedy)")
        guided_choice((), choice_param)  # validates the name early
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key:
            log.warning("environment variable %s is not set: sending no API key (fine for local servers)", api_key_env)
        self.model, self.base_url = model, base_url
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed
        self.extra_body = dict(extra_body or {})
        self.mode, self.choice_param = mode, choice_param
        self._warned_off_set = False
        timeout = Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self.client = OpenAI(api_key=key or NO_KEY, base_url=base_url, timeout=timeout, max_retries=0)
        redact_logs("httpx", "httpcore", "openai", "mtic")  # httpx logs every request's full URL (user:key@ too)
        self.stats = Stats()
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "openai", "base_url": public_url(self.base_url), "model": self.model}

    @property
    def params(self) -> dict[str, Any]:
        params = {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed,
                  "extra_body": self.extra_body}
        return {**params, "decode": SCORE} if self.mode == SCORE else params  # generate keys as before score existed

    def complete(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """Answers in request order; at most `max_concurrency` requests in flight."""
        if not requests:
            return []
        workers = min(self.max_concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mtic-llm") as pool:
            return list(pool.map(self._answer, requests))

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt + 1`."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0**attempt)
        with self._rng_lock:
            wait = ceiling * (0.5 + 0.5 * self._rng.random())
        if retry_after is not None and 0 < retry_after:
            wait = max(wait, min(retry_after, self.backoff_max_s))
        return wait

    def _call(self, request: LLMRequest) -> str:
        messages = request.messages()
        if request.answer_prefix:  # chat APIs cannot start the answer: the prefix ends the user message instead
            messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']}\n{request.answer_prefix}"}
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            kwargs["seed"] = self.seed
        extra_body = {**self.extra_body, **(guided_choice(request.choices, self.choice_param)
                                             if self.mode == SCORE else {})}
        if extra_body:
            kwargs["extra_body"] = extra_body
        return _content(self.client.chat.completions.create(**kwargs))

    def _read(self, request: LLMRequest, text: str, attempts: int) -> LLMResponse:
        """The response of an answer: in score mode the index of the chosen answer (outside the set: failed)."""
        if self.mode != SCORE:
            return LLMResponse(text, OK, attempts=attempts)
        choice = choice_index(text, request.choices)
        if choice is not None:
            return LLMResponse(request.choices[choice], OK, choice=choice, attempts=attempts)
        self.stats.add(f"error_{NOT_IN_CHOICES}")
        self.stats.add(FAILED)
        if not self._warned_off_set:
            self._warned_off_set = True
            log.warning("the server answered outside the closed answer set (llm.decode=score): does it honour "
                        "'%s' (vLLM; older servers: llm.choice_param=%s), and does llm.max_tokens=%d cover the "
                        "longest label?", self.choice_param,
                        GUIDED_CHOICE if self.choice_param == STRUCTURED_OUTPUTS else STRUCTURED_OUTPUTS,
                        self.max_tokens)
        return LLMResponse(None, FAILED, error=NOT_IN_CHOICES, attempts=attempts)

    def _answer(self, request: LLMRequest) -> LLMResponse:
        self.stats.add("requests")
        if self.mode == SCORE and not request.choices:
            return LLMResponse(None, error="no choices to score")  # as the local backend's score mode
        reason = "unknown"
        for attempt in range(self.max_retries + 1):
            self.stats.add("attempts")
            try:
                return self._read(request, self._call(request), attempt + 1)
            except Exception as err:  # noqa: BLE001 - classified below; a bad request must never crash a run
                reason, retry, retry_after = _classify(err)
            self.stats.add(f"error_{reason}")
            if not retry:
                break
            if attempt < self.max_retries:
                self.stats.add("retries")
                time.sleep(self.backoff(attempt, retry_after))
        self.stats.add(FAILED)
        log.debug("request failed after %d attempt(s): %s", attempt + 1, redact_text(str(reason)))
        return LLMResponse(None, FAILED, error=reason, attempts=attempt + 1)


def _classify(err: Exception) -> tuple[str, bool, float | None]:
    """(reason, retryable, Retry-After seconds) for an exception of one attempt."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        return "timeout", True, None
    if isinstance(err, openai.APIConnectionError):
        return "connection", True, None
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        retry = status in RETRY_STATUSES or status >= 500
        return f"http_{status}", retry, _retry_after(err)
    if isinstance(err, (GarbageResponse, openai.APIResponseValidationError, ValueError, TypeError, AttributeError)):
        return "garbage", True, None  # a body that is not JSON or not a chat completion
    if isinstance(err, openai.OpenAIError):
        return type(err).__name__, False, None
    return type(err).__name__, True, None


def _retry_after(err: Any) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
