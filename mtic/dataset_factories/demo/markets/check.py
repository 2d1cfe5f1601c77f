"""Check a demo market file against the knowledge base: `python -m mtic.dataset_factories.demo.markets.check sg`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIN_QUERIES = 12
MIN_FOLLOWUPS = 4


def check_market(code: str) -> list[str]:
    """Return a list of problems found in `<code>.json` (empty when the file is fine)."""
    kb = json.loads((HERE.parent / "knowledge_base.json").read_text(encoding="utf-8"))
    ids = [i["id"] for i in kb["intents"]]
    data = json.loads((HERE / f"{code}.json").read_text(encoding="utf-8"))
    problems = []
    if data.get("market") != code:
        problems.append(f"market field is {data.get('market')!r}, expected {code!r}")
    entries = data.get("intents", {})
    for missing in sorted(set(ids) - set(entries)):
        problems.append(f"intent {missing} has no entry")
    for extra in sorted(set(entries) - set(ids)):
        problems.append(f"intent {extra} is not in the knowledge base")
    seen: dict[str, str] = {}
    for intent_id, entry in entries.items():
        if not str(entry.get("title", "")).strip():
            problems.append(f"{intent_id}: empty title")
        queries = entry.get("queries", [])
        followups = entry.get("followups", [])
        if len(set(queries)) < MIN_QUERIES:
            problems.append(f"{intent_id}: {len(set(queries))} distinct queries, need {MIN_QUERIES}")
        if len(set(followups)) < MIN_FOLLOWUPS:
            problems.append(f"{intent_id}: {len(set(followups))} distinct follow-ups, need {MIN_FOLLOWUPS}")
        for text in queries:
            if not text.strip():
                problems.append(f"{intent_id}: empty query")
            elif text in seen and seen[text] != intent_id:
                problems.append(f"query {text!r} is used by both {seen[text]} and {intent_id}")
            seen[text] = intent_id
    return problems


if __name__ == "__main__":
    failures = 0
    for market in sys.argv[1:]:
        found = check_market(market)
        failures += len(found)
        print(f"{market}: {'OK' if not found else str(len(found)) + ' problems'}")
        for line in found:
            print("  -", line)
    sys.exit(1 if failures else 0)
