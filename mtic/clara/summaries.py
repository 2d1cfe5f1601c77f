"""Zero-shot query summaries for the symbol-tuning `summary` target, from any CLARA LLM backend (cached)."""
from __future__ import annotations

from collections.abc import Sequence

from tqdm import tqdm

from mtic.clara.llm import LLMBackend, LLMRequest

SUMMARY_SYSTEM = "You summarise customer-service requests in a few words."
SUMMARY_USER = "Customer message: {query}\nIn at most eight words, what is the customer asking about?"
SUMMARY_ANSWER_PREFIX = "The customer is asking about"
MAX_SUMMARY_WORDS = 12


def clean_summary(text: str | None, fallback: str) -> str:
    """First line of the answer, without a repeated prefix or final period, at most MAX_SUMMARY_WORDS words."""
    line = (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""
    if line.lower().startswith(SUMMARY_ANSWER_PREFIX.lower()):
        line = line[len(SUMMARY_ANSWER_PREFIX) :].strip()
    words = line.rstrip(".").split()[:MAX_SUMMARY_WORDS]
    return " ".join(words) if words else fallback


def summarize_queries(llm: LLMBackend, queries: Sequence[str], batch_size: int = 16) -> dict[str, str]:
    """A short summary of every distinct query; an empty or failed answer falls back to the query itself."""
    unique = sorted(set(queries))
    out: dict[str, str] = {}
    for start in tqdm(range(0, len(unique), batch_size), desc="query summaries", unit="batch"):
        chunk = unique[start : start + batch_size]
        requests = [LLMRequest(SUMMARY_SYSTEM, SUMMARY_USER.format(query=q), SUMMARY_ANSWER_PREFIX) for q in chunk]
        for query, response in zip(chunk, llm.complete(requests)):
            out[query] = clean_summary(response.text if response.ok else None, fallback=query)
    return out
