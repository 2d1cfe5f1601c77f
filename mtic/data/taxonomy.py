"""The label hierarchy of a bundle: levels, per-level class ids, parents, titles and labels."""
from __future__ import annotations

from mtic.data.schema import Intent


class Taxonomy:
    """Intents organised as a tree of `depth` levels; the last level holds one class per intent.

    `levels[l]` lists the class names of level l (sorted, so ids are stable); `parents[l][c]` is the id of
    the level l-1 parent of class c of level l (`parents[0]` is all -1). A plain class, not a dataclass, so that
    Hydra's `instantiate` passes it through untouched instead of turning it into a config node.
    """

    def __init__(self, intents: list[Intent]) -> None:
        if not intents:
            raise ValueError("a taxonomy needs at least one intent")
        self.intents = list(intents)
        depth = len(self.intents[0].path)
        self.levels = [sorted({i.path[level] for i in self.intents}) for level in range(depth)]
        self._level_index = [{name: k for k, name in enumerate(names)} for names in self.levels]
        self._index = {intent.id: k for k, intent in enumerate(self.intents)}
        self.parents = [[-1] * len(self.levels[0])]
        for level in range(1, depth):
            parent_ids = [-1] * len(self.levels[level])
            for intent in self.intents:
                child = self._level_index[level][intent.path[level]]
                parent_ids[child] = self._level_index[level - 1][intent.path[level - 1]]
            self.parents.append(parent_ids)

    @classmethod
    def from_intents(cls, intents: list[Intent]) -> Taxonomy:
        return cls(list(intents))

    def __repr__(self) -> str:
        return f"Taxonomy({len(self.intents)} intents, levels {self.num_classes})"

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.intents]

    @property
    def num_classes(self) -> list[int]:
        """Number of classes at each level, root first."""
        return [len(names) for names in self.levels]

    def __len__(self) -> int:
        return len(self.intents)

    def __contains__(self, intent_id: object) -> bool:
        return intent_id in self._index

    def intent(self, intent_id: str) -> Intent:
        return self.intents[self._index[intent_id]]

    def index(self, intent_id: str) -> int:
        """Position of an intent in `intents`."""
        return self._index[intent_id]

    def level_ids(self, intent_id: str) -> list[int]:
        """Class id at every level for an intent, root first."""
        path = self.intent(intent_id).path
        return [self._level_index[level][name] for level, name in enumerate(path)]

    def parent_path(self, intent_id: str) -> tuple[str, ...]:
        """The category path above the leaf (used to tell switches within a category from away)."""
        return self.intent(intent_id).path[:-1]

    def leaf_to_intent(self, leaf_id: int) -> str:
        """Intent id of a class of the last level."""
        name = self.levels[-1][leaf_id]
        return next(i.id for i in self.intents if i.path[-1] == name)

    def leaf_intent_ids(self) -> list[str]:
        """Intent id of every last-level class, in class-id order."""
        by_leaf = {i.path[-1]: i.id for i in self.intents}
        return [by_leaf[name] for name in self.levels[-1]]

    def title(self, intent_id: str, english: bool = False) -> str:
        """Verbose title; the English one when asked and available."""
        intent = self.intent(intent_id)
        return intent.title_en if english and intent.title_en else intent.title

    def curated_label(self, intent_id: str, english: bool = False) -> str | None:
        """The bundle's curated compressed label: `label_en` when `english`, else `label`.

        Like `title`, the English request falls back to `label` for an intent with no English title (its title is
        then the only language there is).
        """
        intent = self.intent(intent_id)
        if english and (intent.label_en or intent.title_en):
            return intent.label_en
        return intent.label
