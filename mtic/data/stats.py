"""Bundle statistics and the paper's Table 1 (market, languages, intents, single-turn train, multi-turn test)."""
from __future__ import annotations

from collections.abc import Sequence

from mtic.data.bundle import Bundle
from mtic.data.schema import SESSION_SPLITS
from mtic.data.taxonomy import Taxonomy

FOLLOWUP_SHARE_KEY = "test_followup_share"
MISSING = "–"

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
    ("single_turn_valid", "Single-turn valid"),
    ("sessions_train", "Multi-turn train"),
    ("sessions_unlabeled", "Unlabelled"),
    ("sessions_valid", "Multi-turn valid"),
    ("mean_turns", "Mean turns"),
    ("test_followup_share", "Test follow-up share"),
)


def bundle_stats(bundle: Bundle) -> dict:
    """Counts of one bundle; a session split that is absent counts as None (not 0)."""
    taxonomy = Taxonomy.from_intents(bundle.intents)
    all_sessions = [s for split in SESSION_SPLITS for s in bundle.sessions.get(split, [])]
    share = bundle.meta.extra.get(FOLLOWUP_SHARE_KEY)
    test = bundle.sessions.get("test")
    row = {
        "name": bundle.meta.name,
        "market": bundle.meta.market,
        "languages": list(bundle.meta.languages),
        "intents": len(bundle.intents),
        "levels": taxonomy.depth,
        "single_turn_train": sum(1 for q in bundle.single_turn if q.split == "train"),
        "single_turn_valid": sum(1 for q in bundle.single_turn if q.split == "valid"),
        "mean_turns": sum(len(s.turns) for s in all_sessions) / len(all_sessions) if all_sessions else None,
        "test_followup_share": float(share) if share is not None else None,
        "test_nonfirst_share": sum(len(s.turns) > 1 for s in test) / len(test) if test else None,
    }
    for split in SESSION_SPLITS:
        row[f"sessions_{split}"] = len(bundle.sessions[split]) if split in bundle.sessions else None
    return row


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
