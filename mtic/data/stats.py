"""Bundle statistics and the paper's Table 1 (market, languages, intents, single-turn train, multi-turn test)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from mtic.data.bundle import Bundle, read_bundle, read_unlabeled_gold
from mtic.data.languages import encoder_for, encoder_reason, language_counts, language_mismatch
from mtic.data.schema import SESSION_SPLITS, Session, normalise_text
from mtic.data.taxonomy import Taxonomy

FOLLOWUP_SHARE_KEY = "test_followup_share"
MISSING = "–"
TRAINING_SESSION_SPLITS: tuple[str, ...] = ("train", "unlabeled")
EVAL_SESSION_SPLITS: tuple[str, ...] = ("valid", "test")

# (stats key, Markdown header) of the paper's Table 1, then the extra columns.
TABLE1_COLUMNS: tuple[tuple[str, str], ...] = (
    ("market", "Market"),
    ("languages", "Languages"),
    ("intents", "Intents"),
    ("single_turn_train", "Single-turn train"),
    ("sessions_test", "Multi-turn test"),
)
EXTRA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("levels", "Levels"),
    ("texts_by_language", "Texts by language (script)"),
    ("encoder", "Default encoder"),
    ("single_turn_valid", "Single-turn valid"),
    ("sessions_train", "Multi-turn train"),
    ("sessions_unlabeled", "Unlabelled"),
    ("sessions_valid", "Multi-turn valid"),
    ("mean_turns", "Mean turns"),
    ("test_followup_share", "Test follow-up share"),
    ("leaked_last", "Leaked last turns (valid / test)"),
    ("leaked_any", "Leaked turns, any position (valid / test)"),
)
LEAK_COLUMNS: tuple[tuple[str, str], ...] = EXTRA_COLUMNS[-2:]


def training_texts(bundle: Bundle, extra_training: Iterable[Session] = ()) -> set[str]:
    """Normalised texts of every training-side file: single_turn.jsonl (all splits), sessions/train.jsonl,
    sessions/unlabeled.jsonl, plus `extra_training` sessions (e.g. sessions/unlabeled.gold.jsonl)."""
    texts = {normalise_text(q.text) for q in bundle.single_turn}
    sessions = [s for split in TRAINING_SESSION_SPLITS for s in bundle.sessions.get(split, [])]
    texts.update(normalise_text(t.text) for s in (*sessions, *extra_training) for t in s.turns)
    return texts


def leaked_eval_turns(bundle: Bundle, extra_training: Iterable[Session] = ()) -> dict[str, int | None]:
    """How many evaluation texts appear verbatim in a training-side file (compared after `normalise_text`:
    NFKC, case-folded, whitespace collapsed).

    Per evaluation split (valid, test): `leaked_last_<split>` = sessions whose LAST turn (the target) is a
    training-side text; `leaked_any_<split>` = turns at any position (history included) that are; plus the
    totals `eval_turns_<split>`. A split the bundle does not have gives None.
    """
    training = training_texts(bundle, extra_training)
    counts: dict[str, int | None] = {}
    for split in EVAL_SESSION_SPLITS:
        sessions = bundle.sessions.get(split)
        if sessions is None:
            counts.update({f"leaked_last_{split}": None, f"leaked_any_{split}": None, f"eval_turns_{split}": None})
            continue
        counts[f"leaked_last_{split}"] = sum(1 for s in sessions if s.turns and normalise_text(s.last.text) in training)
        counts[f"leaked_any_{split}"] = sum(1 for s in sessions for t in s.turns if normalise_text(t.text) in training)
        counts[f"eval_turns_{split}"] = sum(len(s.turns) for s in sessions)
    return counts


def _pair(counts: dict, key: str) -> str | None:
    valid, test = counts.get(f"{key}_valid"), counts.get(f"{key}_test")
    if valid is None and test is None:
        return None
    return " / ".join(MISSING if v is None else f"{v:,}" for v in (valid, test))


def bundle_stats(bundle: Bundle, extra_training: Iterable[Session] = ()) -> dict:
    """Counts of one bundle; a session split that is absent counts as None (not 0). The leak counts
    (`leaked_eval_turns`) treat `extra_training` (the unlabelled sessions' gold file) as training-side too."""
    taxonomy = Taxonomy.from_intents(bundle.intents)
    all_sessions = [s for split in SESSION_SPLITS for s in bundle.sessions.get(split, [])]
    share = bundle.meta.extra.get(FOLLOWUP_SHARE_KEY)
    test = bundle.sessions.get("test")
    languages = list(bundle.meta.languages)
    texts = [q.text for q in bundle.single_turn] + [t.text for s in all_sessions for t in s.turns]
    by_language = language_counts(texts, languages)
    row = {
        "name": bundle.meta.name,
        "market": bundle.meta.market,
        "languages": languages,
        "intents": len(bundle.intents),
        "levels": taxonomy.depth,
        "language_counts": by_language,
        "texts_by_language": ", ".join(f"{label} {n:,}" for label, n in by_language.items()) or None,
        "language_warning": language_mismatch(by_language),
        "encoder": f"{encoder_for(languages)} ({encoder_reason(languages)})",
        "single_turn_train": sum(1 for q in bundle.single_turn if q.split == "train"),
        "single_turn_valid": sum(1 for q in bundle.single_turn if q.split == "valid"),
        "mean_turns": sum(len(s.turns) for s in all_sessions) / len(all_sessions) if all_sessions else None,
        "test_followup_share": float(share) if share is not None else None,
        "test_nonfirst_share": sum(len(s.turns) > 1 for s in test) / len(test) if test else None,
    }
    for split in SESSION_SPLITS:
        row[f"sessions_{split}"] = len(bundle.sessions[split]) if split in bundle.sessions else None
    leaks = leaked_eval_turns(bundle, extra_training)
    row.update(leaks)
    row["leaked_last"] = _pair(leaks, "leaked_last")
    row["leaked_any"] = _pair(leaks, "leaked_any")
    return row


def bundle_dir_stats(root: str | Path) -> dict:
    """`bundle_stats` of a bundle directory, its `sessions/unlabeled.gold.jsonl` (if any) counted as training-side."""
    bundle = read_bundle(root)
    gold = read_unlabeled_gold(root, {i.id for i in bundle.intents}) or []
    return bundle_stats(bundle, gold)


def _cell(value: object) -> str:
    if value is None:
        return MISSING
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or MISSING
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def stats_table(rows: Sequence[dict], extra: bool = True,
                columns: Sequence[tuple[str, str]] | None = None) -> str:
    """A Markdown table of `bundle_stats` rows in the layout of the paper's Table 1 (+ extra columns), or of
    the given (stats key, header) `columns`."""
    columns = tuple(columns) if columns else TABLE1_COLUMNS + (EXTRA_COLUMNS if extra else ())
    lines = [
        "| " + " | ".join(header for _, header in columns) + " |",
        "|" + "|".join(":---" if key in ("market", "languages") else "---:" for key, _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def stats_report(bundles: Sequence[str | Path]) -> str:
    """`stats_table` of bundle directories followed by one `warning:` line per bundle whose texts are mostly in a
    script none of its declared languages uses (what `mtic data stats`, `prepare` and `import` print)."""
    rows = [bundle_dir_stats(path) for path in bundles]
    warnings = [f"warning: {path}: {row['language_warning']}" for path, row in zip(bundles, rows) if row["language_warning"]]
    return stats_table(rows) + "".join(line + "\n" for line in warnings)
