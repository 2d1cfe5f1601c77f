"""Views turn a session into model input: a chat transcript for the LM, one text for an encoder."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mtic.data.schema import Session

Selector = Callable[[Sequence[str], str], int | None]


@dataclass(frozen=True)
class ViewExample:
    """Model input made from one session (or one prefix of it).

    `turns` holds (query, intent id or None) for the chat view; `text` is the encoder input; `target` is the
    intent id of the last query (None when unlabelled).
    """

    session_id: str
    target: str | None
    text: str = ""
    turns: tuple[tuple[str, str | None], ...] = ()


class View(Protocol):
    """Turns a session into one example (a training session expands to its `labelled_prefixes` first)."""

    def __call__(self, session: Session) -> ViewExample: ...


def labelled_prefixes(session: Session) -> list[Session]:
    """Every prefix of `session` that ends on a labelled turn (training on all turns of a session)."""
    return [session.prefix(n) for n in range(1, len(session.turns) + 1) if session.turns[n - 1].intent is not None]


@dataclass(frozen=True)
class ChatView:
    """All turns with their labels, for the LM's vicuna-style transcript.

    `history_labels`: 'gold' keeps the labels of earlier turns, 'none' removes them (the LM then sees only the
    queries, or rolls out its own predictions at inference).
    """

    history_labels: str = "gold"
    max_turns: int | None = None

    def __post_init__(self) -> None:
        if self.history_labels not in ("gold", "none"):
            raise ValueError(f"history_labels must be 'gold' or 'none', got {self.history_labels!r}")

    def __call__(self, session: Session) -> ViewExample:
        turns = session.turns[-self.max_turns :] if self.max_turns else session.turns
        pairs = []
        for k, turn in enumerate(turns):
            last = k == len(turns) - 1
            pairs.append((turn.text, turn.intent if last or self.history_labels == "gold" else None))
        return ViewExample(session_id=session.id, target=session.target, turns=tuple(pairs), text=turns[-1].text)


@dataclass(frozen=True)
class LastQueryView:
    """The single-turn baseline: only the last query."""

    def __call__(self, session: Session) -> ViewExample:
        return ViewExample(session_id=session.id, target=session.target, text=session.last.text)


@dataclass(frozen=True)
class NaiveConcatView:
    """All queries joined oldest first; the encoder truncates from the left so the last query survives."""

    separator: str = " | "

    def __call__(self, session: Session) -> ViewExample:
        return ViewExample(session_id=session.id, target=session.target, text=self.separator.join(session.queries))


@dataclass(frozen=True)
class LastKView:
    """The last `k` queries joined oldest first (k=2: "last two", the previous query and the last one).

    Sessions shorter than `k` give all their queries; k=1 is the last-query view.
    """

    k: int = 2
    separator: str = " | "

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"LastKView: k must be a positive integer, got {self.k!r}")

    def __call__(self, session: Session) -> ViewExample:
        return ViewExample(session_id=session.id, target=session.target,
                           text=self.separator.join(session.queries[-self.k :]))


@dataclass(frozen=True)
class SelectedConcatView:
    """One history query picked by `selector(history, last)` joined with the last query.

    The selector returns the index of the chosen history query or None for "no useful context".
    """

    selector: Selector | None = None
    separator: str = " | "

    def __call__(self, session: Session) -> ViewExample:
        if self.selector is None:
            raise ValueError("SelectedConcatView needs a trained selector (pipeline=selective with "
                             "data=selected_concat, as in +experiment=baseline_select)")
        history, last = session.queries[:-1], session.last.text
        choice = self.selector(history, last) if history else None
        text = last if choice is None else f"{history[choice]}{self.separator}{last}"
        return ViewExample(session_id=session.id, target=session.target, text=text)


@dataclass(frozen=True)
class TranscriptView:
    """The queries of a session as plain text, one per line (domain-adaptive pre-training)."""

    separator: str = "\n"

    def __call__(self, session: Session) -> ViewExample:
        return ViewExample(session_id=session.id, target=None, text=self.separator.join(session.queries))


VIEW_NAMES: dict[type, str] = {
    ChatView: "chat",
    LastQueryView: "last_query",
    NaiveConcatView: "naive_concat",
    LastKView: "last_k",  # conf/data/view/last_two.yaml is LastKView with k=2
    SelectedConcatView: "selected_concat",
    TranscriptView: "transcript",
}
"""The short name of every view class: deploy.json's `view.kind`, `mtic export --view`, the files of conf/data/view."""


def view_target(view_class: type) -> str:
    """The `_target_` a config gives for `view_class` (e.g. mtic.inputs.views.NaiveConcatView)."""
    return f"{view_class.__module__}.{view_class.__qualname__}"
