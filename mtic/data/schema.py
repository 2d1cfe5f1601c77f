"""Plain records of the data bundle: intents, turns, sessions, single-turn queries, bundle metadata."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

SESSION_SPLITS: tuple[str, ...] = ("train", "unlabeled", "valid", "test")
SINGLE_TURN_SPLITS: tuple[str, ...] = ("train", "valid")


def normalise_text(text: str) -> str:
    """The form in which two texts count as the same text for leakage: Unicode NFKC, case-folded, runs of
    whitespace collapsed to one space, stripped ("Still  nothing " == "still nothing"); punctuation is kept."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class Intent:
    """One intent of the knowledge base.

    `title` is the verbose local-language title (the paper's r), `path` the English category path with the
    leaf class last, `title_en` an English title for cross-lingual labels, `label` a curated compressed label in
    the title's language, `label_en` a curated English one (cross-lingual compressed labels).
    """

    id: str
    title: str
    path: tuple[str, ...]
    title_en: str | None = None
    label: str | None = None
    label_en: str | None = None

    def to_json(self) -> dict:
        row: dict = {"id": self.id, "title": self.title, "path": list(self.path)}
        if self.title_en is not None:
            row["title_en"] = self.title_en
        if self.label is not None:
            row["label"] = self.label
        if self.label_en is not None:
            row["label_en"] = self.label_en
        return row


@dataclass(frozen=True)
class Turn:
    """One user query of a session; `intent` is None when unlabelled."""

    text: str
    intent: str | None = None

    def to_json(self) -> dict:
        return {"text": self.text, "intent": self.intent}


@dataclass(frozen=True)
class Session:
    """A chat session: the target is the intent of the LAST turn."""

    id: str
    turns: tuple[Turn, ...]

    @property
    def last(self) -> Turn:
        return self.turns[-1]

    @property
    def target(self) -> str | None:
        """Intent id of the last query (None when unlabelled)."""
        return self.turns[-1].intent

    @property
    def queries(self) -> list[str]:
        return [t.text for t in self.turns]

    def prefix(self, n_turns: int) -> Session:
        """The session cut after its first `n_turns` turns (keeps the id with a `#n` suffix)."""
        return Session(id=f"{self.id}#{n_turns}", turns=self.turns[:n_turns])

    def unlabeled(self) -> Session:
        """The same session with every label removed."""
        return Session(id=self.id, turns=tuple(Turn(t.text) for t in self.turns))

    def to_json(self) -> dict:
        return {"id": self.id, "turns": [t.to_json() for t in self.turns]}


@dataclass(frozen=True)
class SingleTurnQuery:
    """A labelled single-turn query."""

    text: str
    intent: str
    split: str = "train"

    def to_json(self) -> dict:
        return {"text": self.text, "intent": self.intent, "split": self.split}

    def as_session(self, session_id: str) -> Session:
        return Session(id=session_id, turns=(Turn(self.text, self.intent),))


@dataclass(frozen=True)
class BundleMeta:
    """Contents of `bundle.yaml`."""

    name: str
    market: str
    languages: tuple[str, ...]
    source: str = "user"
    license: str = "unknown"
    description: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        row = {
            "name": self.name,
            "market": self.market,
            "languages": list(self.languages),
            "source": self.source,
            "license": self.license,
            "description": self.description,
        }
        row.update(self.extra)
        return row
