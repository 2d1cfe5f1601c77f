"""Label compression (the paper's Symbol Tuning labels): pick a short label L' for every verbose title L.

For each intent the chosen label minimises the paper's objective  min_L' C(L') + E(L', L):

    loss(L') = alpha * C(L') / C(L)  +  (1 - cos(phi(L'), phi(L)))      (normalise=True, the default)
    loss(L') = alpha * C(L')         +  (1 - cos(phi(L'), phi(L)))      (normalise=False; alpha=1: the literal C + E)

where C counts tokens (`count_tokens`), phi is the caller's sentence embedder (`embed`, L2-normalised rows) and
E = 1 - cos is the semantic loss of replacing the title by the label (0 = same meaning, `objective`).
Dividing C(L') by C(L), the token count of the title itself, puts the length term on the same 0..1 scale as the
semantic term: `alpha` is then the price of keeping the whole title relative to losing all of its meaning. The
default alpha = 1 gives about 2 words per label on the demo knowledge base with MiniLM embeddings (the paper's
"about 2 words"). Unnormalised, one token costs as much as the whole semantic range: the shortest candidates win.
Candidates come from proposers (mtic/labels/chooser.py): extractive (ordered subsets of 1..`max_words` content
words of the title, filler and stop words removed; contiguous character spans for scripts written without
spaces), `proposed` ones (the bundle's curated label, an LLM's proposals), all scored alike.
Labels are made unique across the set (see `resolve_collisions`). Results go to a reviewable JSONL file
(`save_compression` / `load_compression`) whose hand edits are respected.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtic.data.errors import BundleError
from mtic.data.taxonomy import Taxonomy
from mtic.labels.candidates import (
    FILLER_PREFIXES,
    STOPWORDS,
    CountTokens,
    HashedEmbedder,
    clean_llm_candidate,
    extractive_candidates,
    word_count,
)
from mtic.labels.text import clean_text, normalize_text

__all__ = [
    "DEFAULT_ALPHA", "CompressionChoice", "CompressionFileError", "HashedEmbedder", "compress_labels",
    "extractive_candidates", "load_choices", "load_compression", "objective", "resolve_collisions", "save_compression",
    "word_count",
]

Embed = Callable[[list[str]], np.ndarray]

DEFAULT_ALPHA = 1.0
DEFAULT_LLM_PROMPT = (
    "Compress this customer-service intent title to about 2 words, keeping its key words.\n"
    "Title: {title}\nShort title:"
)
EXTRACTIVE, LLM = "extractive", "llm"


@dataclass(frozen=True)
class CompressionChoice:
    """The label chosen for one intent.

    `cost` is the minimised objective (`objective`, lower is better), `similarity` the cosine between label and
    title, `tokens` = C(L'), `title` the text that was compressed, `source` the proposer (curated | extractive |
    llm, or file for a label read from a compression file).
    """

    label: str
    cost: float
    similarity: float
    candidates_considered: int
    tokens: int = 0
    title: str = ""
    source: str = EXTRACTIVE


class CompressionFileError(BundleError):
    """A compression file is malformed; the message names the file and the 1-based line."""


def embed_all(texts: Sequence[str], embed: Embed, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Embed unique texts in batches; rows are re-normalised so a sloppy embedder still gives cosines."""
    unique = list(dict.fromkeys(texts))
    table: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), batch_size):
        batch = unique[start : start + batch_size]
        rows = np.asarray(embed(list(batch)), dtype=np.float64)
        if rows.ndim != 2 or rows.shape[0] != len(batch):
            raise ValueError(f"embed returned shape {rows.shape} for {len(batch)} texts; expected (n, dim)")
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = (rows / np.where(norms == 0, 1.0, norms)).astype(np.float32)
        table.update(zip(batch, rows))
    return table


# -- selection ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A scored candidate label of one intent (lower cost is better)."""

    label: str
    cost: float
    similarity: float
    tokens: int
    source: str


def resolve_collisions(
    ranked: Mapping[str, Sequence[Candidate]], order: Sequence[str], reserved: Iterable[str] = ()
) -> dict[str, int]:
    """Index of the chosen option per intent so that no two labels (normalised) are equal.

    Every intent starts at its best option. While a label is shared, the intent of the group whose cost
    increases least by moving to its next option not taken by anyone else moves (ties: the later intent in
    `order` moves, so the first keeps its best label).
    Each move advances one pointer, so the loop ends; a group in which nobody can move raises ValueError.
    """
    taken_fixed = {normalize_text(r) for r in reserved}
    rank = {i: k for k, i in enumerate(order)}
    pick: dict[str, int] = {}
    for i in order:
        free = [j for j, c in enumerate(ranked[i]) if normalize_text(c.label) not in taken_fixed]
        if not free:
            raise ValueError(f"intent {i}: every candidate label is already taken by a reserved label")
        pick[i] = free[0]

    def key(i: str) -> str:
        return normalize_text(ranked[i][pick[i]].label)

    while True:
        groups: dict[str, list[str]] = {}
        for i in order:
            groups.setdefault(key(i), []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return pick
        group = clashes[0]
        used = {key(i) for i in order} | taken_fixed
        moves = []
        for i in group:
            current = ranked[i][pick[i]].cost
            for j in range(pick[i] + 1, len(ranked[i])):
                if normalize_text(ranked[i][j].label) not in used:
                    moves.append((round(ranked[i][j].cost - current, 12), -rank[i], i, j))
                    break
        if not moves:
            raise ValueError(
                f"intents {', '.join(group)} all compress to {ranked[group[0]][pick[group[0]]].label!r} and have no "
                "other candidate left; raise max_words, give llm candidates or curate their labels"
            )
        _, _, mover, j = min(moves)
        pick[mover] = j


def objective(tokens: int, title_tokens: int, similarity: float, alpha: float = DEFAULT_ALPHA,
              normalise: bool = True) -> float:
    """The loss of a label of `tokens` tokens whose cosine with its title (`title_tokens` tokens) is `similarity`:
    alpha * C(L') [/ C(L) when normalise] + (1 - cos)."""
    length = tokens / max(title_tokens, 1) if normalise else float(tokens)
    return alpha * length + (1.0 - similarity)


def _rank(
    proposals: Sequence[tuple[str, str]],
    vectors: Mapping[str, np.ndarray],
    title: str,
    count_tokens: CountTokens,
    alpha: float,
    normalise: bool,
) -> list[Candidate]:
    """Candidates of one title scored by `objective` and sorted best first (ties: fewer tokens, then text)."""
    title_vec = vectors[title]
    title_tokens = max(count_tokens(title), 1)
    options = []
    for cand, source in proposals:
        tokens = count_tokens(cand)
        similarity = float(np.clip(vectors[cand] @ title_vec, -1.0, 1.0))
        cost = objective(tokens, title_tokens, similarity, alpha, normalise)
        options.append(Candidate(cand, cost, similarity, tokens, source))
    return sorted(options, key=lambda o: (round(o.cost, 12), o.tokens, o.label))


def compress_labels(
    taxonomy: Taxonomy,
    embed: Embed,
    count_tokens: CountTokens,
    english: bool = False,
    *,
    proposed: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    extractive: bool = True,
    alpha: float = DEFAULT_ALPHA,
    normalise: bool = True,
    max_words: int = 4,
    max_content_words: int = 12,
    ids: Sequence[str] | None = None,
    reserved: Iterable[str] = (),
    fillers: Iterable[str] = FILLER_PREFIXES,
    stopwords: Iterable[str] = STOPWORDS,
    batch_size: int = 256,
) -> dict[str, CompressionChoice]:
    """Compressed label of every intent (or of `ids`), unique across the set and distinct from `reserved`.

    `english=True` compresses `title_en` where available (cross-lingual labels). `proposed` adds candidates of
    other proposers per intent id as (text, source) pairs; `extractive=False` leaves the extractive ones out.
    A candidate not shorter than its title is dropped. See the module docstring.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    order = list(taxonomy.ids if ids is None else ids)
    unknown = [i for i in order if i not in taxonomy]
    if unknown:
        raise ValueError(f"ids not in the taxonomy: {unknown[:5]}")
    reserved_keys = {normalize_text(r) for r in reserved}
    titles = {i: taxonomy.unique_title(i, english=english) for i in order}
    proposals: dict[str, list[tuple[str, str]]] = {}
    for i in order:
        title = titles[i]
        found = []
        if extractive:
            found += [(c, EXTRACTIVE) for c in extractive_candidates(title, max_words, max_content_words, fillers, stopwords)]
        title_tokens = max(count_tokens(title), 1)
        for raw, source in (proposed or {}).get(i, ()):
            cand = clean_llm_candidate(raw, title_tokens + 1, count_tokens)  # at most as long as the title
            if cand is not None:
                found.append((cand, source))
        seen: dict[str, tuple[str, str]] = {}
        for cand, source in found:
            k = normalize_text(cand)
            if k and k not in reserved_keys and k not in seen:
                seen[k] = (cand, source)
        proposals[i] = list(seen.values())
    ranked: dict[str, list[Candidate]] = {}
    chunk: list[str] = []
    size = 0
    for k, i in enumerate(order):  # embed intents chunk by chunk: memory stays bounded on big taxonomies
        if not proposals[i]:
            raise ValueError(f"intent {i}: no candidate label for title {titles[i]!r} (no proposer gave one, or all"
                             " are reserved)")
        chunk.append(i)
        size += len(proposals[i]) + 1
        if k == len(order) - 1 or size >= batch_size:
            texts = [titles[j] for j in chunk] + [c for j in chunk for c, _ in proposals[j]]
            vectors = embed_all(texts, embed, batch_size)
            for j in chunk:
                ranked[j] = _rank(proposals[j], vectors, titles[j], count_tokens, alpha, normalise)
            chunk, size = [], 0
    pick = resolve_collisions(ranked, order, reserved)
    out = {}
    for i in order:
        o = ranked[i][pick[i]]
        out[i] = CompressionChoice(o.label, o.cost, o.similarity, len(ranked[i]), o.tokens, titles[i], o.source)
    return out


# -- the reviewable file -----------------------------------------------------------------------------------------
FILE_HEADER = (
    "# mtic label compression: one intent per line. Edit \"label\" to override the chosen label; the other fields"
    " are informational (score = the objective alpha*C(L')[/C(L)] + 1 - cosine, lower is better; source = the"
    " proposer that won). Lines starting with # are ignored."
)


def save_compression(path: str | Path, choices: Mapping[str, CompressionChoice]) -> Path:
    """Write one JSON object per intent (id, title, label, score, similarity, tokens, source), UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [FILE_HEADER]
    for intent_id, c in choices.items():
        row = {"id": intent_id, "title": c.title, "label": c.label, "score": round(c.cost, 4),
               "similarity": round(c.similarity, 4), "tokens": c.tokens, "source": c.source,
               "candidates": c.candidates_considered}
        lines.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_choices(path: str | Path) -> dict[str, CompressionChoice]:
    """The choices of a file written by `save_compression` (a cache the chooser wrote itself), in file order."""
    out: dict[str, CompressionChoice] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            row = json.loads(line)
            out[row["id"]] = CompressionChoice(row["label"], float(row["score"]), float(row["similarity"]),
                                               int(row.get("candidates", 0)), int(row["tokens"]), row["title"],
                                               row["source"])
    return out


def load_compression(path: str | Path, taxonomy: Taxonomy | None = None) -> dict[str, str]:
    """Labels of a (possibly hand-edited) compression file: {intent id: label}.

    Checks each line is a JSON object with a string `id` and a non-empty string `label`, ids are known to
    `taxonomy` (when given) and appear once, and labels are unique (case/space-insensitive). Errors are
    `CompressionFileError`s naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CompressionFileError(path, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise CompressionFileError(path, f"cannot read the file: {err.strerror or err}") from None
    labels: dict[str, str] = {}
    id_line: dict[str, int] = {}
    label_line: dict[str, tuple[int, str]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CompressionFileError(path, f"not valid JSON: {err.msg} (column {err.colno})", n) from None
        if not isinstance(row, dict):
            raise CompressionFileError(path, "each line must be a JSON object", n)
        intent_id, label = row.get("id"), row.get("label")
        if not isinstance(intent_id, str) or not intent_id:
            raise CompressionFileError(path, "missing or non-string 'id'", n)
        if not isinstance(label, str) or not clean_text(label):
            raise CompressionFileError(path, f"intent {intent_id}: missing or empty 'label'", n)
        if taxonomy is not None and intent_id not in taxonomy:
            raise CompressionFileError(path, f"unknown intent id {intent_id!r} (not in the taxonomy)", n)
        if intent_id in id_line:
            raise CompressionFileError(path, f"intent {intent_id} is listed again (first on line {id_line[intent_id]})", n)
        label = label.strip()
        k = normalize_text(label)
        if k in label_line:
            other_line, other_id = label_line[k]
            raise CompressionFileError(
                path, f"duplicate label {label!r}: intent {intent_id} and intent {other_id} (line {other_line})", n
            )
        id_line[intent_id], label_line[k] = n, (n, intent_id)
        labels[intent_id] = label
    return labels
