"""Which short label each intent gets: candidates from every proposer, the compression objective picks one.

Proposers (`labels.proposers`, any non-empty subset):
  curated     the bundle's curated `label` (`label_en` with cross_lingual): a human proposer, like the paper's GPT-4;
  extractive  ordered subsets of 1..max_words content words of the title (mtic/labels/candidates.py);
  llm         an LLM's proposal per title (`labels.compress_llm`: any backend of mtic.clara.llm, e.g. an
              OpenAI-compatible server; it must generate text, decode=greedy), prompted with DEFAULT_LLM_PROMPT.
Every candidate is scored by the same objective (`mtic.labels.compress.objective`: alpha*C(L')[/C(L)] + 1 - cos)
with phi = a semantic sentence encoder (`labels.encoder`, the market's by default; never a hashed one) and C = the
tokens of `labels.tokenizer` (the tuned LM's), and the cheapest candidate of each intent wins; collisions are
resolved so that labels are unique (`resolve_collisions`).
`force: curated` (the ablation `labels=curated`) keeps the curated label of every intent that has one; intents
without one still get the objective's choice among the other proposers.

Guarantee: the same taxonomy and settings give the same labels (deterministic scores, ties broken by token count
and text). The choices are cached per (taxonomy, settings) as a reviewable JSONL file under `<cache_dir>/labels/`
(`choices_file`): copy it, edit labels, pass the copy as `labels.compression_file` to override them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mtic.data.taxonomy import Taxonomy
from mtic.labels.candidates import word_count
from mtic.labels.compress import (
    DEFAULT_ALPHA,
    DEFAULT_LLM_PROMPT,
    LLM,
    CompressionChoice,
    compress_labels,
    load_choices,
    save_compression,
)

log = logging.getLogger("mtic")

CURATED, EXTRACTIVE = "curated", "extractive"
PROPOSERS: tuple[str, ...] = (CURATED, EXTRACTIVE, LLM)
FORCE_CHOICES: tuple[str | None, ...] = (None, CURATED)
LABELS_SUBDIR = "labels"


@lru_cache(maxsize=4)
def _embedder(name: str, cache_dir: str | None) -> Callable[[list[str]], np.ndarray]:
    from mtic.hub.registry import load_sentence_embedder

    return load_sentence_embedder(name, cache_dir)


@lru_cache(maxsize=4)
def _token_counter(name: str | None, cache_dir: str | None) -> Callable[[str], int]:
    """C(.): tokens of `name`'s tokenizer (no special tokens), or whitespace words without one."""
    if not name:
        return word_count
    from transformers import AutoTokenizer

    from mtic.hub.registry import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name, cache_dir), trust_remote_code=False)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


class LabelChooser:
    """Candidates from `proposers`, scored by the compression objective; see the module docstring."""

    def __init__(
        self,
        proposers: Iterable[str] = (CURATED, EXTRACTIVE),
        force: str | None = None,
        alpha: float = DEFAULT_ALPHA,
        normalise: bool = True,
        encoder: str = "minilm-l6",
        tokenizer: str | None = None,
        compress_llm: Any = None,
        max_words: int = 3,
        max_content_words: int = 8,
        cache_dir: str | None = None,
    ) -> None:
        self.proposers = tuple(dict.fromkeys(str(p) for p in proposers))
        unknown = [p for p in self.proposers if p not in PROPOSERS]
        if unknown or not self.proposers:
            raise ValueError(f"labels.proposers: unknown or empty {unknown or list(self.proposers)}; choose from {list(PROPOSERS)}")
        if force not in FORCE_CHOICES:
            raise ValueError(f"labels.force must be null or {CURATED!r}, got {force!r}")
        if (LLM in self.proposers) != (compress_llm is not None):
            raise ValueError("labels.proposers lists 'llm' but labels.compress_llm is null" if compress_llm is None
                             else "labels.compress_llm is set but labels.proposers does not list 'llm'")
        if alpha < 0:
            raise ValueError(f"labels.alpha must be >= 0, got {alpha}")
        self.force, self.alpha, self.normalise = force, float(alpha), bool(normalise)
        self.encoder, self.tokenizer, self.llm = str(encoder), tokenizer, compress_llm
        self.max_words, self.max_content_words = int(max_words), int(max_content_words)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.choices_file: Path | None = None

    def settings(self) -> dict[str, Any]:
        """What determines the labels besides the taxonomy (recorded in results.json, part of the cache key)."""
        llm = None if self.llm is None else {"identity": self.llm.identity, "params": self.llm.params}
        return {"proposers": list(self.proposers), "force": self.force, "alpha": self.alpha, "normalise": self.normalise,
                "encoder": self.encoder, "tokenizer": self.tokenizer, "compress_llm": llm, "max_words": self.max_words,
                "max_content_words": self.max_content_words}

    def choose(self, taxonomy: Taxonomy, english: bool = False) -> dict[str, CompressionChoice]:
        """The chosen label of every intent (taxonomy order), from the cache when these settings already ran."""
        rows = [[i.id, i.title, i.title_en, i.label, i.label_en, list(i.path)] for i in taxonomy.intents]
        key = hashlib.sha256(json.dumps([rows, english, self.settings()], sort_keys=True, default=str).encode()).hexdigest()
        path = None if self.cache_dir is None else Path(self.cache_dir) / LABELS_SUBDIR / f"compressed-{key[:16]}.jsonl"
        if path is not None and path.is_file():
            self.choices_file = path
            return load_choices(path)
        choices = self._choose(taxonomy, english)
        if path is not None:
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            save_compression(partial, choices)
            partial.replace(path)  # whole file or none: a crash never leaves half a label set behind
            self.choices_file = path
        return choices

    def _choose(self, taxonomy: Taxonomy, english: bool) -> dict[str, CompressionChoice]:
        embed = _embedder(self.encoder, self.cache_dir)
        count = _token_counter(self.tokenizer, self.cache_dir)
        curated = {i: (taxonomy.curated_label(i, english=english) or "").strip() for i in taxonomy.ids}
        forced = [i for i in taxonomy.ids if self.force == CURATED and curated[i]]
        rest = [i for i in taxonomy.ids if i not in set(forced)]
        options = {"alpha": self.alpha, "normalise": self.normalise, "max_words": self.max_words,
                   "max_content_words": self.max_content_words}
        out: dict[str, CompressionChoice] = {}
        if forced:
            try:
                out.update(compress_labels(taxonomy, embed, count, english, ids=forced, extractive=False,
                                           proposed={i: [(curated[i], CURATED)] for i in forced}, **options))
            except ValueError as err:
                raise ValueError(f"labels.force=curated: {err}") from None
        if rest:
            proposed = {i: [] for i in rest}
            if CURATED in self.proposers:
                for i in rest:
                    proposed[i] += [(curated[i], CURATED)] if curated[i] else []
            if LLM in self.proposers:
                for i, texts in self._llm_proposals(taxonomy, rest, english).items():
                    proposed[i] += [(t, LLM) for t in texts]
            out.update(compress_labels(taxonomy, embed, count, english, ids=rest, proposed=proposed,
                                       extractive=EXTRACTIVE in self.proposers,
                                       reserved=[out[i].label for i in forced], **options))
        return {i: out[i] for i in taxonomy.ids}

    def _llm_proposals(self, taxonomy: Taxonomy, ids: Sequence[str], english: bool) -> dict[str, list[str]]:
        from mtic.clara.llm import GREEDY, LLMRequest

        decode = self.llm.params.get("decode", GREEDY)
        if decode != GREEDY:
            raise ValueError(f"labels.compress_llm must generate text (decode: greedy), not decode={decode!r}")
        requests = [LLMRequest(system="", user=DEFAULT_LLM_PROMPT.format(title=taxonomy.unique_title(i, english=english)))
                    for i in ids]
        answers = self.llm.complete(requests)
        failed = sum(not a.ok for a in answers)
        if failed:
            log.warning("labels.compress_llm: %d of %d title prompts failed; those intents get no LLM candidate",
                        failed, len(ids))
        return {i: [a.text] if a.ok and a.text else [] for i, a in zip(ids, answers)}


def source_counts(sources: Mapping[str, str]) -> dict[str, int]:
    """How many labels each proposer (or the compression file) won, in a stable order."""
    counts: dict[str, int] = {}
    for source in sources.values():
        counts[source] = counts.get(source, 0) + 1
    return dict(sorted(counts.items()))
