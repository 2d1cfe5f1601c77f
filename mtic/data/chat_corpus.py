"""General chat corpora for `pipeline=pretrain` (the paper pre-trains on ShareGPT, merges, then symbol-tunes).

A corpus is a list of conversations, read from a JSONL file (`JsonlChatCorpus`) or from anything
`datasets.load_dataset` reads (`HubChatCorpus`: a hub name, or a builder such as `json` with `data_files`). Each
line (row) is one object holding one conversation in either of two layouts (other keys are ignored):

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}, ...]}
    {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}, ...]}     (ShareGPT)

Roles: `user` / `human`, `assistant` / `gpt`, and `system` as the first message only (it replaces the chat
format's system prompt for that conversation). After it, messages alternate user, assistant, user, ... starting
with the user; texts are non-empty strings; at least one assistant message. A trailing user message has no reply
to learn from and is left out.

Guarantee: every conversation returned follows these rules; the first line (row) that does not is a `CorpusError`
naming `<file>:<line>` (`<dataset>[<split>]:<row>`) and what is wrong, before any model loads. Nothing is dropped
silently.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mtic.data.bundle import iter_jsonl
from mtic.data.errors import BundleError, CorpusError

USER, ASSISTANT, SYSTEM = "user", "assistant", "system"
ROLE_NAMES = {"user": USER, "human": USER, "assistant": ASSISTANT, "gpt": ASSISTANT, "system": SYSTEM}
"""Accepted role names (OpenAI-style `role` and ShareGPT's `from`) and the role each stands for."""
LAYOUTS = (("messages", "role", "content"), ("conversations", "from", "value"))
"""(list key, role key, text key) of the two accepted layouts."""


@dataclass(frozen=True)
class Conversation:
    """One chat: (user message, assistant reply) pairs in order, and the system prompt it brings (None: the chat
    format's own)."""

    turns: tuple[tuple[str, str], ...]
    system: str | None = None


class ChatCorpus(Protocol):
    """What `pipeline=pretrain` reads a general chat corpus through (`corpus=jsonl | hub`)."""

    def conversations(self) -> list[Conversation]: ...

    def describe(self) -> dict[str, Any]: ...


def _messages(row: Mapping[str, Any]) -> tuple[list[Any], str, str]:
    for key, role_key, text_key in LAYOUTS:
        if row.get(key) is not None:  # a datasets row holds both columns, the absent one as None
            if not isinstance(row[key], list):
                raise ValueError(f"'{key}' must be a list of messages, got {type(row[key]).__name__}")
            return row[key], role_key, text_key
    raise ValueError("no 'messages' (role/content) or 'conversations' (from/value) list")


def _message(message: Any, role_key: str, text_key: str, k: int) -> tuple[str, str]:
    if not isinstance(message, Mapping):  # a bad record is a ValueError here, said with its line by the reader
        raise ValueError(f"message {k} must be an object, got {type(message).__name__}")  # noqa: TRY004
    role, text = message.get(role_key), message.get(text_key)
    if role not in ROLE_NAMES:
        raise ValueError(f"message {k}: '{role_key}' is {role!r}; allowed: {', '.join(ROLE_NAMES)}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"message {k}: '{text_key}' must be a non-empty string, got {text!r:.40}")
    return ROLE_NAMES[role], text


def conversation_of(row: Mapping[str, Any]) -> Conversation:
    """The conversation of one record; ValueError (without a location) when it breaks the rules above."""
    messages, role_key, text_key = _messages(row)
    parsed = [_message(m, role_key, text_key, k) for k, m in enumerate(messages, start=1)]
    system = parsed.pop(0)[1] if parsed and parsed[0][0] == SYSTEM else None
    for k, (role, _) in enumerate(parsed):
        expected = USER if k % 2 == 0 else ASSISTANT
        if role != expected:
            position = k + 1 + (system is not None)
            raise ValueError(f"message {position} is a {role} message where a {expected} message belongs (after an "
                             "optional first system message, user and assistant alternate, starting with the user)")
    texts = [text for _, text in parsed]
    turns = tuple(zip(texts[0::2], texts[1::2]))  # a trailing user message without a reply is left out
    if not turns:
        raise ValueError("no assistant message: nothing to learn from")
    return Conversation(turns, system)


def _budget(rows: Iterable[tuple[int, Any]], limit: int | None) -> Iterator[tuple[int, Any]]:
    for count, item in enumerate(rows):
        if limit is not None and count >= limit:
            return
        yield item


@dataclass(frozen=True)
class JsonlChatCorpus:
    """A JSONL file of conversations (`corpus=jsonl corpus.path=<file>`); `max_conversations` reads the first N."""

    path: str
    max_conversations: int | None = None

    def conversations(self) -> list[Conversation]:
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise CorpusError(path, "chat corpus file not found (corpus.path)")
        out = []
        try:
            for line, row in _budget(iter_jsonl(path), self.max_conversations):
                try:
                    out.append(conversation_of(row))
                except ValueError as err:
                    raise CorpusError(path, str(err), line) from None
        except CorpusError:
            raise
        except BundleError as err:  # malformed JSON, bad UTF-8, over-long line: said as the corpus's error
            raise CorpusError(err.path, err.reason, err.line) from None
        if not out:
            raise CorpusError(path, "holds no conversation")
        return out

    def describe(self) -> dict[str, Any]:
        return {"source": "jsonl", "path": str(Path(self.path).expanduser())}


@dataclass(frozen=True)
class HubChatCorpus:
    """Conversations through `datasets.load_dataset(name, subset, split=..., data_files=..., revision=...)`
    (`corpus=hub corpus.name=<hub id or builder> corpus.split=train`); never runs dataset code from the hub (no
    trust_remote_code). Network reads use the hub client's timeouts (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT)."""

    name: str
    split: str = "train"
    subset: str | None = None
    data_files: str | list[str] | None = None
    revision: str | None = None
    cache_dir: str | None = None
    max_conversations: int | None = None

    @property
    def where(self) -> str:
        return f"{self.name}[{self.split}]"

    def conversations(self) -> list[Conversation]:
        from datasets import load_dataset
        from datasets.exceptions import DatasetsError

        try:
            rows = load_dataset(self.name, self.subset, split=self.split, data_files=self.data_files,
                                revision=self.revision, cache_dir=self.cache_dir)
        except (OSError, ValueError, DatasetsError) as err:  # not found, no network, bad split, unreadable files
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise CorpusError(self.where, f"datasets.load_dataset cannot load it ({first[:240]})") from None
        if self.max_conversations is not None:
            rows = rows.select(range(min(len(rows), self.max_conversations)))
        out = []
        for row_number, row in enumerate(rows, start=1):
            try:
                out.append(conversation_of(row))
            except ValueError as err:
                raise CorpusError(self.where, str(err), row_number) from None
        if not out:
            raise CorpusError(self.where, "holds no conversation")
        return out

    def describe(self) -> dict[str, Any]:
        return {"source": "hub", "name": self.name, "split": self.split, "subset": self.subset,
                "data_files": self.data_files, "revision": self.revision}
