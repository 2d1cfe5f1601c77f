"""A disk cache of LLM answers (SQLite, WAL): a re-run with the same prompts costs nothing.

The key is a SHA-256 of (backend identity, decoding parameters, request); only successful answers are stored,
so failed requests are tried again next time. Each batch of answers is written in one transaction, which
SQLite makes atomic and durable: a process killed at any point leaves either all of a batch or none of it.
Several processes (a multirun) can share one file.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mtic.clara.llm.base import LLMBackend, LLMRequest, LLMResponse, Stats

CACHE_FILE = "llm_answers.sqlite"
SCHEMA = "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
BUSY_TIMEOUT_S = 120.0


def cache_key(identity: dict[str, Any], params: dict[str, Any], request: LLMRequest) -> str:
    """Stable hash of everything that determines an answer."""
    payload = {"identity": identity, "params": params, "request": request.to_json()}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """Key -> JSON answer, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        return found

    def put_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        rows = [(k, json.dumps(v, ensure_ascii=False, sort_keys=True), time.time()) for k, v in items]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO answers (key, value, created) VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedLLM:
    """A backend behind the answer cache: only cache misses reach it; its successful answers are stored."""

    def __init__(self, backend: LLMBackend, cache: AnswerCache) -> None:
        self.backend = backend
        self.cache = cache
        self.mode = backend.mode
        self.stats: Stats = getattr(backend, "stats", None) or Stats()

    @property
    def identity(self) -> dict[str, Any]:
        return self.backend.identity

    @property
    def params(self) -> dict[str, Any]:
        return self.backend.params

    def complete(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        keys = [cache_key(self.identity, self.params, r) for r in requests]
        stored = self.cache.get_many(list(dict.fromkeys(keys)))
        out: list[LLMResponse | None] = [LLMResponse.from_json(stored[k]) if k in stored else None for k in keys]
        self.stats.add("cache_hits", sum(r is not None for r in out))
        todo: dict[str, list[int]] = {}
        for k, (key, response) in enumerate(zip(keys, out)):
            if response is None:
                todo.setdefault(key, []).append(k)
        if todo:
            self.stats.add("cache_misses", len(todo))
            firsts = [rows[0] for rows in todo.values()]
            answers = self.backend.complete([requests[k] for k in firsts])
            self.cache.put_many((keys[k], a.to_json()) for k, a in zip(firsts, answers) if a.ok)
            for rows, answer in zip(todo.values(), answers):
                for k in rows:
                    out[k] = answer
        return out  # type: ignore[return-value]
