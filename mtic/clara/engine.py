"""Where the LLM labelling runs (`pipeline.engine`, chosen with `pipeline/engine=local | ray`, conf/pipeline/engine/).

`local` (the default) labels in this process into one resumable records file (mtic/clara/pseudo_label.py).
`ray` runs the same labelling as a Ray job over deterministic shards (mtic/clara/ray_engine.py).

Every engine gets the sessions in input order, a `LabelerRecipe` (what builds the labeller where the labelling
runs: its `prepare` runs once in this process before any labeller is built, its `build` wherever labelling
happens) and the records path; it returns the pseudo-label summary with the LLM's counters (`llm_stats`).
Guarantee: whatever the engine, the records file is byte for byte the one-process run's, and a finished file is
reused without building any model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from mtic.clara.pseudo_label import pseudo_label
from mtic.config_schema import ConfigError
from mtic.data.schema import Session

ENGINES = ("local", "ray")


class Labeller(Protocol):
    """What labels sessions (`SessionLabeler`): one record per session, and the LLM it asks."""

    llm: Any

    def label(self, sessions: Sequence[Session]) -> list[dict[str, Any]]: ...


class LabelerRecipe(Protocol):
    """Builds the labeller. `prepare` (this process, once, only when something is left to label) makes what every
    labeller shares (M_c is trained there, never by two workers at once); `build` makes one labeller (models
    loaded where it is called). A recipe that a Ray engine ships to its workers must pickle."""

    def prepare(self) -> None: ...

    def build(self) -> Labeller: ...


class LazyLabeler:
    """Builds the labeller (models, embedder) on first use: a finished artifact never loads a model."""

    def __init__(self, build: Any) -> None:
        self._build, self.labeler = build, None

    def __call__(self, sessions: Sequence[Session]) -> list[dict[str, Any]]:
        if self.labeler is None:
            self.labeler = self._build()
        return self.labeler.label(sessions)

    def llm_stats(self) -> dict[str, int] | None:
        stats = getattr(getattr(self.labeler, "llm", None), "stats", None)
        return stats.snapshot() if stats is not None else None


class LabellingEngine(Protocol):
    def label(self, sessions: Sequence[Session], recipe: LabelerRecipe, out: str | Path, batch_size: int = 8,
              gold: Mapping[str, str] | None = None, settings: Mapping[str, Any] | None = None,
              progress: bool = True, desc: str = "pseudo-labelling") -> dict[str, Any]: ...


class InProcess:
    """`pipeline/engine=local`: label in this process (pseudo_label: resumable, kill -9 safe, input order)."""

    def label(self, sessions: Sequence[Session], recipe: LabelerRecipe, out: str | Path, batch_size: int = 8,
              gold: Mapping[str, str] | None = None, settings: Mapping[str, Any] | None = None,
              progress: bool = True, desc: str = "pseudo-labelling") -> dict[str, Any]:
        labeler = LazyLabeler(recipe.build)  # build() prepares what it needs itself
        summary = pseudo_label(sessions, labeler, out, batch_size=batch_size, gold=gold, settings=settings,
                               progress=progress, desc=desc)
        summary["llm_stats"] = labeler.llm_stats()
        return summary


def build_engine(node: Mapping[str, Any] | str | None) -> LabellingEngine:
    """The engine of a `pipeline.engine` node (its `_target_`); absent = in this process. A bare name (the
    override `pipeline.engine=ray` instead of the group choice `pipeline/engine=ray`) is a one-line ConfigError."""
    if node is None:
        return InProcess()
    if not isinstance(node, Mapping):
        choice = f"pipeline/engine={node}" if node in ENGINES else f"pipeline/engine=<{' | '.join(ENGINES)}>"
        raise ConfigError(f"'pipeline.engine' is {node!r}: choose the engine as a config group, {choice} "
                          "(conf/pipeline/engine/); set its keys with pipeline.engine.<key>=...")
    from hydra.utils import instantiate

    return instantiate(dict(node), _convert_="all")
