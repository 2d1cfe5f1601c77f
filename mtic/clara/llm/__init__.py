"""LLM backends for CLARA (`llm` config group): `local` (a registry causal LM) and `openai` (any
OpenAI-compatible server), each optionally behind the disk answer cache. `build_llm(**cfg.llm)` makes one.
`decode` (score | greedy) is how answers are read; the backends call it `mode` (score | generate), which is part
of the answer-cache key, so the same settings hit the same cached answers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mtic.clara.llm.base import (
    DECODES,
    FAILED,
    GENERATE,
    GREEDY,
    MODE_OF_DECODE,
    MODES,
    OK,
    SCORE,
    LLMBackend,
    LLMRequest,
    LLMResponse,
    Stats,
)
from mtic.clara.llm.cache import CACHE_FILE, AnswerCache, CachedLLM, cache_key

BACKENDS = ("local", "openai")
CACHE_SUBDIR = "llm"

__all__ = [
    "BACKENDS", "DECODES", "FAILED", "GENERATE", "GREEDY", "MODES", "OK", "SCORE", "AnswerCache", "CachedLLM", "LLMBackend",
    "LLMRequest", "LLMResponse", "Stats", "backend_mode", "build_llm", "cache_key",
]


def backend_mode(decode: str) -> str:
    """The backend mode of an `llm.decode` value (score -> score, greedy -> generate)."""
    if decode not in MODE_OF_DECODE:
        raise ValueError(f"llm.decode must be one of {DECODES}, got {decode!r}")
    return MODE_OF_DECODE[decode]


def build_llm(backend: str, decode: str | None = None, cache: bool = True, cache_file: str | None = None,
              cache_dir: str | None = None, **options: Any) -> LLMBackend:
    """A backend from the `llm` config: `backend` = local | openai, `decode` = score | greedy (default: the
    backend's own, score for local, greedy for openai), the rest are that backend's options.

    With `cache`, answers go to `cache_file` (default `<mtic cache>/llm/llm_answers.sqlite`); the local backend
    loads its model from the registry under `cache_dir`.
    """
    options = {k: v for k, v in options.items() if not str(k).startswith("_")}
    if "mode" in options:
        raise ValueError(f"llm.mode was renamed: use llm.decode ({' | '.join(DECODES)})")
    if decode is not None:
        options["mode"] = backend_mode(decode)
    if backend == "local":
        from mtic.clara.llm.local import LocalLLM

        llm: LLMBackend = LocalLLM(cache_dir=cache_dir, **options)
    elif backend == "openai":
        from mtic.clara.llm.openai_backend import OpenAILLM

        llm = OpenAILLM(**options)
    else:
        raise ValueError(f"llm.backend must be one of {BACKENDS}, got {backend!r}")
    if not cache:
        return llm
    from mtic.hub.registry import cache_root

    path = Path(cache_file).expanduser() if cache_file else cache_root(cache_dir) / CACHE_SUBDIR / CACHE_FILE
    return CachedLLM(llm, AnswerCache(path))
