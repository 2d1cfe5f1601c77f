"""Zero-shot conversation summaries for the symbol-tuning `summary` target, from any CLARA LLM backend (cached).

The paper's summary target answers turn j with "You are asking about {summary}. So, the intent title is {r}", the
summary covering the conversation so far (queries 1..j), not the last query alone: a follow-up such as "still
nothing" is summarised with what it follows. Summaries are keyed by `conversation_key(queries 1..j)`."""
from __future__ import annotations

from collections.abc import Sequence

from tqdm import tqdm

from mtic.clara.llm import LLMBackend, LLMRequest

SUMMARY_SYSTEM = "You summarise customer-service requests in a few words."
SUMMARY_USER = ("Customer messages, oldest first:\n{messages}\nIn at most eight words, what is the customer asking about "
                "in the last message?")
SUMMARY_ANSWER_PREFIX = "The customer is asking about"
MAX_SUMMARY_WORDS = 12


def clean_summary(text: str | None, fallback: str) -> str:
    """First line of the answer, without a repeated prefix or final period, at most MAX_SUMMARY_WORDS words."""
    line = (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""
    if line.lower().startswith(SUMMARY_ANSWER_PREFIX.lower()):
        line = line[len(SUMMARY_ANSWER_PREFIX) :].strip()
    words = line.rstrip(".").split()[:MAX_SUMMARY_WORDS]
    return " ".join(words) if words else fallback


def conversation_key(queries: Sequence[str]) -> str:
    """The summaries' key of a conversation prefix (queries 1..j): the queries, one per line."""
    return "\n".join(queries)


def summarize_conversations(llm: LLMBackend, conversations: Sequence[Sequence[str]], batch_size: int = 16
                            ) -> dict[str, str]:
    """A short summary of every distinct conversation prefix (keyed by `conversation_key`); an empty or failed
    answer falls back to the prefix's last query."""
    unique = {conversation_key(c): list(c) for c in conversations if c}
    keys = sorted(unique)
    out: dict[str, str] = {}
    for start in tqdm(range(0, len(keys), batch_size), desc="conversation summaries", unit="batch"):
        chunk = keys[start : start + batch_size]
        requests = [LLMRequest(SUMMARY_SYSTEM, SUMMARY_USER.format(
            messages="\n".join(f"{n}. {q}" for n, q in enumerate(unique[key], start=1))), SUMMARY_ANSWER_PREFIX)
            for key in chunk]
        for key, response in zip(chunk, llm.complete(requests)):
            out[key] = clean_summary(response.text if response.ok else None, fallback=unique[key][-1])
    return out
