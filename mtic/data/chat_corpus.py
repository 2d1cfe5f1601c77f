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


def read_conversations(rows: Iterable[tuple[int, Mapping[str, Any]]], where: str | Path) -> list[Conversation]:
    """The conversations of (line or row number, record) pairs; the first bad one is a CorpusError at `where:number`,
    and so is a source without any."""
    out = []
    for number, row in rows:
        try:
            out.append(conversation_of(row))
        except ValueError as err:
            raise CorpusError(where, str(err), number) from None
    if not out:
        raise CorpusError(where, "holds no conversation")
    return out


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
        try:
            return read_conversations(_budget(iter_jsonl(path), self.max_conversations), path)
        except CorpusError:
            raise
        except BundleError as err:  # malformed JSON, bad UTF-8, over-long line: said as the corpus's error
            raise CorpusError(err.path, err.reason, err.line) from None

    def describe(self) -> dict[str, Any]:
        return {"source": "jsonl", "path": str(Path(self.path).expanduser())}


@dataclass(frozen=True)
class HubChatCorpus:
    """Conversations through `datasets.load_dataset` as `mtic data import --dataset` loads (a hub id, a builder with
    `data_files`, one local data file, a `save_to_disk` folder: mtic/dataset_factories/importer/hf.py), e.g.
    `corpus=hub corpus.name=<hub id> corpus.split=train`; never runs dataset code from the hub (no
    trust_remote_code). Network reads use the hub client's timeouts (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT).
    A bad row is a CorpusError at `<dataset or single data file>[<split>]:<row>`."""

    name: str
    split: str = "train"
    subset: str | None = None
    data_files: str | list[str] | None = None
    revision: str | None = None
    cache_dir: str | None = None
    max_conversations: int | None = None

    def conversations(self) -> list[Conversation]:
        from mtic.dataset_factories.importer.hf import load, row_source

        files = [self.data_files] if isinstance(self.data_files, str) else list(self.data_files or ())
        rows = load(self.name, self.split, self.subset, files, revision=self.revision, cache_dir=self.cache_dir)
        if self.max_conversations is not None:
            rows = rows.select(range(min(len(rows), self.max_conversations)))
        return read_conversations(enumerate(rows, start=1), row_source(self.name, self.split, files))

    def describe(self) -> dict[str, Any]:
        return {"source": "hub", "name": self.name, "split": self.split, "subset": self.subset,
                "data_files": self.data_files, "revision": self.revision}
