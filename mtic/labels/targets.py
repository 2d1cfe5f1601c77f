"""What a generative model is trained to answer for each intent: the label set of one target kind.

Kinds (the paper's ablation, Table "label types"):
- `original`   the verbose title r (English `title_en` when `cross_lingual` and available);
- `compressed` a short label (~2 words) chosen by the compression objective among the candidates of every
               proposer (curated label, extractive, LLM: `chooser.py`); a reviewed compression file's entries win
               (each difference from the objective's choice is reported);
- `symbolic`   meaningless symbols, unique per intent ("Kavo Setu" pseudo-words, or "Label 17"), seeded;
- `summary`    the verbose title as the final label of "You are asking about {summary}. So, the intent title
               is {r}" (assembled by the chat encoder; `summary_answer` / `parse_summary_answer` help).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from mtic.data.schema import Intent
from mtic.data.taxonomy import Taxonomy
from mtic.labels.chooser import LabelChooser, source_counts
from mtic.labels.compress import load_compression
from mtic.labels.text import SUMMARY_TEMPLATE, normalize_text, output_key
from mtic.labels.text import parse_summary_answer as _parse_summary_answer


class TargetKind(str, Enum):
    """The kind of label a generative model is trained to answer."""

    ORIGINAL = "original"
    COMPRESSED = "compressed"
    SYMBOLIC = "symbolic"
    SUMMARY = "summary"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value: str | TargetKind) -> TargetKind:
        """The kind named by `value`; a ValueError lists the allowed names."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"unknown label target {value!r}; choose one of {list(TARGET_KINDS)}") from None


TARGET_KINDS: tuple[str, ...] = tuple(k.value for k in TargetKind)

# How symbolic labels look: random pronounceable pseudo-words, or "Label <n>".
SYMBOL_STYLES: tuple[str, ...] = ("pseudoword", "index")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"

# Where a label came from (LabelSet.sources), besides the proposers of chooser.py (curated, extractive, llm).
FILE, TITLE, SYMBOL = "file", "title", "symbol"
# Differences between a compression file and the objective listed in `report()` (all are counted).
MAX_REPORTED_CONFLICTS = 20

log = logging.getLogger("mtic")


class LabelSetError(ValueError):
    """A label set cannot be built (e.g. two intents would share a label)."""


def symbolic_labels(
    ids: list[str], seed: int = 0, style: str = "pseudoword", avoid: Iterable[str] = ()
) -> dict[str, str]:
    """Meaningless, unique labels per intent, deterministic for a given seed and id set.

    `pseudoword`: two capitalised CVCV pseudo-words drawn from a generator seeded by (seed, intent id), so a
    label does not depend on the order of the intents (a clash, or a word in `avoid` such as the words of the
    titles, is re-drawn; ids visited in sorted order).
    `index`: "Label <n>" with n from a seeded permutation of 1..len(ids) over the sorted ids.
    """
    if style not in SYMBOL_STYLES:
        raise ValueError(f"unknown symbol style {style!r}; choose one of {list(SYMBOL_STYLES)}")
    ordered = sorted(ids)
    if style == "index":
        numbers = list(range(1, len(ordered) + 1))
        random.Random(seed).shuffle(numbers)
        return {i: f"Label {n}" for i, n in zip(ordered, numbers)}
    banned = {w.casefold() for w in avoid}
    out: dict[str, str] = {}
    used: set[str] = set()
    for intent_id in ordered:
        rng = random.Random(f"{seed}:{intent_id}")
        while True:
            words = ["".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(2)) for _ in range(2)]
            label = " ".join(w.capitalize() for w in words)
            if label not in used and not banned.intersection(words):
                break
        used.add(label)
        out[intent_id] = label
    return out


def as_taxonomy(taxonomy: Any) -> Taxonomy:
    """A Taxonomy, also from the structured config Hydra makes of one passed to `instantiate` as a keyword."""
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    from omegaconf import OmegaConf

    if OmegaConf.is_config(taxonomy):
        rows = OmegaConf.to_container(taxonomy, resolve=True)["intents"]  # type: ignore[index]
        return Taxonomy.from_intents(
            [Intent(r["id"], r["title"], tuple(r["path"]), r.get("title_en"), r.get("label")) for r in rows]
        )
    raise TypeError(f"expected a Taxonomy, got {type(taxonomy).__name__}")


class LabelSet:
    """The label text of every intent of a taxonomy for one target kind, unique across the set.

    The compressed kind takes its labels from `chooser` (default: `LabelChooser()`, curated + extractive
    candidates scored with MiniLM); `compressed` is a {intent id: label} mapping from a reviewed compression file,
    whose entries win over the chooser (differences are logged and listed in `report()`). Other kinds take
    neither. `seed` and `symbols` shape the symbolic kind. Labels are compared case- and space-insensitively: two
    intents whose labels only differ in case are a `LabelSetError`.
    """

    def __init__(
        self,
        taxonomy: Taxonomy,
        kind: str | TargetKind = TargetKind.COMPRESSED,
        cross_lingual: bool = False,
        compressed: Mapping[str, str] | None = None,
        seed: int = 0,
        symbols: str = "pseudoword",
        chooser: LabelChooser | None = None,
    ) -> None:
        self.taxonomy = taxonomy = as_taxonomy(taxonomy)
        self.kind = TargetKind.parse(kind)
        self.cross_lingual = bool(cross_lingual)
        self.seed = seed
        self.sources: dict[str, str] = {}
        self.chooser: LabelChooser | None = None
        self.file_conflicts: list[dict[str, str]] = []
        if self.kind is TargetKind.COMPRESSED:
            self.chooser = chooser or LabelChooser()
            self._labels = self._compressed(dict(compressed or {}))
        elif self.kind is TargetKind.SYMBOLIC:
            title_words = {w for i in taxonomy.intents for t in (i.title, i.title_en or "") for w in t.lower().split()}
            symbols_by_id = symbolic_labels(taxonomy.ids, seed, symbols, avoid=title_words)
            self._labels = {i: symbols_by_id[i] for i in taxonomy.ids}
            self.sources = dict.fromkeys(taxonomy.ids, SYMBOL)
        else:  # original and summary both answer the verbose title
            self._labels = {i: taxonomy.unique_title(i, english=self.cross_lingual).strip() for i in taxonomy.ids}
            self.sources = dict.fromkeys(taxonomy.ids, TITLE)
        self._by_key = self._check_unique(self._labels)

    @classmethod
    def from_taxonomy(
        cls,
        taxonomy: Taxonomy,
        target: str | TargetKind = TargetKind.COMPRESSED,
        cross_lingual: bool = False,
        compression_file: str | Path | None = None,
        seed: int = 0,
        symbols: str = "pseudoword",
        **chooser: Any,
    ) -> LabelSet:
        """The config entry point (`conf/labels/*.yaml`): reads and validates `compression_file` when given; the
        compressed kind's other keys (proposers, force, alpha, normalise, encoder, tokenizer, compress_llm,
        max_words, max_content_words, cache_dir) configure its `LabelChooser`."""
        taxonomy = as_taxonomy(taxonomy)
        kind = TargetKind.parse(target)
        if chooser and kind is not TargetKind.COMPRESSED:
            raise ValueError(f"labels: {sorted(chooser)} only apply to target=compressed, not {kind}")
        compressed = load_compression(compression_file, taxonomy) if compression_file else None
        made = LabelChooser(**chooser) if kind is TargetKind.COMPRESSED else None
        return cls(taxonomy, kind, cross_lingual, compressed, seed, symbols, chooser=made)

    # -- building ------------------------------------------------------------------------------------------
    def _compressed(self, from_file: dict[str, str]) -> dict[str, str]:
        """The chooser's label of every intent (English titles with cross_lingual), replaced by the compression
        file's label where the file has one; each replacement that differs from the objective is reported."""
        assert self.chooser is not None
        choices = self.chooser.choose(self.taxonomy, english=self.cross_lingual)
        labels = {i: c.label for i, c in choices.items()}
        self.sources = {i: c.source for i, c in choices.items()}
        for i, label in from_file.items():
            if normalize_text(label) != normalize_text(labels[i]):
                self.file_conflicts.append({"id": i, "file": label, "objective": labels[i],
                                            "objective_source": self.sources[i]})
            labels[i], self.sources[i] = label.strip(), FILE
        if self.file_conflicts:
            shown = "; ".join(f"{c['id']}: {c['objective']!r} -> {c['file']!r}" for c in self.file_conflicts[:5])
            log.warning("labels.compression_file overrides %d label(s) the objective chose differently: %s%s",
                        len(self.file_conflicts), shown, " ..." if len(self.file_conflicts) > 5 else "")
        return labels

    def report(self) -> dict[str, Any]:
        """What results.json records of the labels: kind, how many labels each proposer won, the settings of the
        choice, and where the compression file overrode the objective."""
        out: dict[str, Any] = {"kind": str(self.kind), "cross_lingual": self.cross_lingual,
                               "sources": source_counts(self.sources)}
        if self.chooser is not None:
            out["chooser"] = self.chooser.settings()
            out["choices_file"] = None if self.chooser.choices_file is None else str(self.chooser.choices_file)
            out["file_conflicts"] = len(self.file_conflicts)
            out["file_conflicts_shown"] = self.file_conflicts[:MAX_REPORTED_CONFLICTS]
        return out

    def _check_unique(self, labels: Mapping[str, str]) -> dict[str, str]:
        by_key: dict[str, str] = {}
        for intent_id, label in labels.items():
            key = normalize_text(label)
            if not key:
                raise LabelSetError(f"intent {intent_id} has an empty {self.kind} label")
            if key in by_key:
                other = by_key[key]
                where = f"{other} ({self.sources.get(other, '?')}) and {intent_id} ({self.sources.get(intent_id, '?')})"
                raise LabelSetError(
                    f"intents {where} would share the {self.kind} label {label!r}; labels must be unique:"
                    " edit the curated label, the compression file or the titles"
                )
            by_key[key] = intent_id
        return by_key

    # -- queries -------------------------------------------------------------------------------------------
    def label_of(self, intent_id: str) -> str:
        """The label text of an intent."""
        try:
            return self._labels[intent_id]
        except KeyError:
            raise KeyError(f"intent {intent_id!r} is not in this label set") from None

    def intent_of_exact(self, text: object) -> str | None:
        """The intent whose label equals `text` after normalisation (answer phrase, case, spaces, end
        punctuation), else None."""
        return self._by_key.get(output_key(text))

    @property
    def labels(self) -> list[str]:
        """Unique label texts in taxonomy order."""
        return list(self._labels.values())

    @property
    def ids(self) -> list[str]:
        return list(self._labels)

    def as_dict(self) -> dict[str, str]:
        """{intent id: label} in taxonomy order (the input of `mtic.labels.matching.output_matcher`)."""
        return dict(self._labels)

    def summary_answer(self, summary: str, intent_id: str) -> str:
        """The summary target's answer: "You are asking about {summary}. So, the intent title is {label}"."""
        return SUMMARY_TEMPLATE.format(summary=summary.strip().rstrip("."), label=self.label_of(intent_id))

    parse_summary_answer = staticmethod(_parse_summary_answer)

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __contains__(self, intent_id: object) -> bool:
        return intent_id in self._labels

    def __repr__(self) -> str:
        return f"LabelSet(kind={self.kind}, cross_lingual={self.cross_lingual}, n={len(self)})"


parse_summary_answer = _parse_summary_answer
