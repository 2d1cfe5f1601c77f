"""The label hierarchy of a bundle: levels, per-level class ids, parents, titles and labels.

A category is identified by its **path** (root first), not by its name: `Hotel > Inform` and
`Attraction > Inform` are two classes of level 2 that share the display name "Inform". Intents may sit at
different depths; a shallower intent's path is padded to the deepest level by repeating its leaf
(`Billing > Refund` in a 3-level taxonomy is the class `Billing > Refund > Refund` of level 3), so every model
sees one tree of `depth` levels and each intent is exactly one class of the last level.
"""
from __future__ import annotations

from collections.abc import Sequence

from mtic.data.schema import Intent, normalise_text

ClassPath = tuple[str, ...]


def padded_path(path: Sequence[str], depth: int) -> ClassPath:
    """`path` repeated at its leaf down to `depth` levels (a path already `depth` long is unchanged)."""
    path = tuple(path)
    return path + (path[-1],) * (depth - len(path))


class SharedPathError(ValueError):
    """Two intents end at the same (padded) class path: `intent` repeats the path of `first`."""

    def __init__(self, intent: Intent, first: Intent, path: ClassPath, depth: int) -> None:
        padding = "" if path == intent.path else f" (padded to depth {depth} by repeating its leaf)"
        super().__init__(f"intent '{intent.id}' has the class path {' > '.join(path)}{padding}, already the path of "
                         f"intent '{first.id}'")
        self.intent, self.first = intent, first


def class_paths(intents: Sequence[Intent]) -> dict[str, ClassPath]:
    """{intent id: its padded class path}, in intent order; SharedPathError when two intents end at one path."""
    depth = max(len(i.path) for i in intents)
    owner: dict[ClassPath, Intent] = {}
    for intent in intents:
        path = padded_path(intent.path, depth)
        if path in owner:
            raise SharedPathError(intent, owner[path], path, depth)
        owner[path] = intent
    return {intent.id: path for path, intent in owner.items()}


def _class_order(prefix: ClassPath) -> tuple[str, ClassPath]:
    """Classes of a level sort by display name, then by path: ids stay what they were for taxonomies whose names
    are unique at every level (checkpoints and exported models of those keep their class ids)."""
    return prefix[-1], prefix


def _shared_keys(texts: dict[str, str]) -> set[str]:
    """Normalised texts that more than one entry has."""
    counts: dict[str, int] = {}
    for text in texts.values():
        key = normalise_text(text)
        counts[key] = counts.get(key, 0) + 1
    return {key for key, n in counts.items() if n > 1}


class Taxonomy:
    """Intents organised as a tree of `depth` levels; the last level holds one class per intent.

    `nodes[l]` lists the class paths of level l (root-first prefixes of the intents' padded paths, sorted by
    name then path, so ids are stable); `levels[l]` their display names (the last element, may repeat across
    parents); `parents[l][c]` is the id of the level l-1 parent of class c of level l (`parents[0]` is all -1).
    A plain class, not a dataclass, so that Hydra's `instantiate` passes it through untouched instead of turning
    it into a config node.
    """

    def __init__(self, intents: list[Intent]) -> None:
        if not intents:
            raise ValueError("a taxonomy needs at least one intent")
        self.intents = list(intents)
        self.paths = class_paths(self.intents)
        depth = len(next(iter(self.paths.values())))
        self._intent_by_path = {path: intent_id for intent_id, path in self.paths.items()}
        self.nodes: list[list[ClassPath]] = [
            sorted({path[: level + 1] for path in self.paths.values()}, key=_class_order) for level in range(depth)
        ]
        self.levels = [[prefix[-1] for prefix in level] for level in self.nodes]
        self._node_index = [{prefix: k for k, prefix in enumerate(level)} for level in self.nodes]
        self._index = {intent.id: k for k, intent in enumerate(self.intents)}
        self._unique: dict[bool, dict[str, str]] = {}
        self.parents = [[-1] * len(self.nodes[0])]
        for level in range(1, depth):
            self.parents.append([self._node_index[level - 1][prefix[:-1]] for prefix in self.nodes[level]])

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
        path = self.paths[intent_id]
        return [self._node_index[level][path[: level + 1]] for level in range(self.depth)]

    def class_path(self, level: int, class_id: int) -> ClassPath:
        """The path (root first) that identifies class `class_id` of `level` (0 = root level)."""
        return self.nodes[level][class_id]

    def parent_path(self, intent_id: str) -> tuple[str, ...]:
        """The category path above the leaf (used to tell switches within a category from away)."""
        return self.intent(intent_id).path[:-1]

    def leaf_to_intent(self, leaf_id: int) -> str:
        """Intent id of a class of the last level."""
        return self._intent_by_path[self.nodes[-1][leaf_id]]

    def leaf_intent_ids(self) -> list[str]:
        """Intent id of every last-level class, in class-id order."""
        return [self._intent_by_path[path] for path in self.nodes[-1]]

    def title(self, intent_id: str, english: bool = False) -> str:
        """Verbose title; the English one when asked and available."""
        intent = self.intent(intent_id)
        return intent.title_en if english and intent.title_en else intent.title

    def unique_title(self, intent_id: str, english: bool = False) -> str:
        """`title`, followed by the intent's category path in parentheses when another intent has the same title
        (case- and space-insensitive): "Inform (Hotel)" and "Inform (Attraction)"; the whole path when even the
        categories above the leaf are the same. Label sets built from titles (verbose targets, extractive
        compression) stay unique on taxonomies that repeat names."""
        return self._unique_titles(english)[intent_id]

    def _unique_titles(self, english: bool) -> dict[str, str]:
        if english not in self._unique:
            titles = {i: self.title(i, english) for i in self.ids}
            shared = _shared_keys(titles)
            by_parent = {i: self._qualified(i, t, whole_path=False) if normalise_text(t) in shared else t
                         for i, t in titles.items()}
            still = _shared_keys(by_parent)
            self._unique[english] = {i: self._qualified(i, titles[i], whole_path=True)
                                     if normalise_text(t) in still else t for i, t in by_parent.items()}
        return self._unique[english]

    def _qualified(self, intent_id: str, title: str, whole_path: bool) -> str:
        """"title (A > B)": the categories above the intent (its whole path when asked, or when it has none)."""
        path = self.intent(intent_id).path
        return f"{title} ({' > '.join(path if whole_path else path[:-1] or path)})"

    def curated_label(self, intent_id: str, english: bool = False) -> str | None:
        """The bundle's curated compressed label: `label_en` when `english`, else `label`.

        Like `title`, the English request falls back to `label` for an intent with no English title (its title is
        then the only language there is).
        """
        intent = self.intent(intent_id)
        if english and (intent.label_en or intent.title_en):
            return intent.label_en
        return intent.label
