"""Limits and switches of the HTTP service (a plain dataclass: the CLI reads its defaults without FastAPI)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSettings:
    """Bounded input: requests beyond a limit get a 4xx with a message naming it.

    `batching` gathers concurrent requests for up to `batch_wait_ms` or `batch_max_sessions` sessions into one
    model call (throughput under load at the price of up to `batch_wait_ms` of latency). Model calls take at most
    `infer_batch` sessions: that bounds activation memory (e5-small int8 at 128 tokens: ~35 MB at 8, ~75 at 16, ~150 at 32).

    Read timeouts (slow or stalled clients): a connection must deliver a complete request head within
    `header_timeout_s` (from connecting, or from the end of the previous response) and the whole body within
    `body_timeout_s` of the head, else it is answered 408 (if anything was received) and closed; an idle
    keep-alive connection is closed after `keep_alive_s`. `docs` serves /docs, /redoc and /openapi.json (off).
    """

    max_turns: int = 20
    max_chars: int = 1000
    max_batch: int = 64
    max_body_bytes: int = 1_000_000
    top_k: int = 5
    max_top_k: int = 20
    batching: bool = False
    batch_wait_ms: float = 5.0
    batch_max_sessions: int = 32
    infer_batch: int = 8
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    docs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_chars", "max_batch", "max_body_bytes", "top_k", "max_top_k",
                     "batch_max_sessions", "infer_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"service setting {name} must be >= 1, got {getattr(self, name)}")
        if self.top_k > self.max_top_k:
            raise ValueError(f"top_k ({self.top_k}) must not exceed max_top_k ({self.max_top_k})")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"service setting {name} must be > 0, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
