"""Bundle reading and validation: every kind of bad input is a clear error naming the file and line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtic.data.bundle import read_bundle, write_bundle
from mtic.data.errors import BundleError, MissingBundleFileError
from mtic.data.taxonomy import Taxonomy


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_reads_valid_bundle(tiny_bundle: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    assert [i.id for i in bundle.intents] == ["cancel", "cancel_status", "refund", "track"]
    assert len(bundle.single_turn) == 8
    assert set(bundle.sessions) == {"train", "test"}
    assert bundle.sessions["test"][0].target == "cancel_status"
    assert bundle.sessions["test"][0].turns[0].intent is None


def test_round_trip(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    again = read_bundle(write_bundle(bundle, tmp_path / "copy"))
    assert again.intents == bundle.intents
    assert again.single_turn == bundle.single_turn
    assert again.sessions == bundle.sessions


def test_malformed_json_line(tiny_bundle: Path) -> None:
    path = tiny_bundle / "single_turn.jsonl"
    lines = _lines(path)
    lines[2] = '{"text": "oops", "intent": '
    _rewrite(path, lines)
    with pytest.raises(BundleError, match=r"single_turn.jsonl:3: malformed JSON"):
        read_bundle(tiny_bundle)


def test_unknown_intent_in_single_turn(tiny_bundle: Path) -> None:
    path = tiny_bundle / "single_turn.jsonl"
    lines = _lines(path)
    lines[4] = json.dumps({"text": "hello", "intent": "nope"})
    _rewrite(path, lines)
    with pytest.raises(BundleError, match=r"single_turn.jsonl:5: unknown intent id 'nope'"):
        read_bundle(tiny_bundle)


def test_unknown_intent_in_session(tiny_bundle: Path) -> None:
    path = tiny_bundle / "sessions" / "test.jsonl"
    lines = _lines(path)
    lines[1] = json.dumps({"id": "x", "turns": [{"text": "hi", "intent": "ghost"}]})
    _rewrite(path, lines)
    with pytest.raises(BundleError, match=r"test.jsonl:2: unknown intent id 'ghost'"):
        read_bundle(tiny_bundle)


def test_duplicate_intent_id(tiny_bundle: Path) -> None:
    path = tiny_bundle / "intents.jsonl"
    lines = _lines(path)
    row = json.loads(lines[0])
    row["path"] = ["Order", "Cancellation", "Other Leaf"]
    _rewrite(path, lines + [json.dumps(row)])
    with pytest.raises(BundleError, match=r"intents.jsonl:5: duplicate intent id 'cancel' \(first on line 1\)"):
        read_bundle(tiny_bundle)


@pytest.mark.parametrize("field", ["text", "title"])
def test_empty_text(tiny_bundle: Path, field: str) -> None:
    if field == "text":
        path = tiny_bundle / "single_turn.jsonl"
        lines = _lines(path)
        lines[0] = json.dumps({"text": "   ", "intent": "cancel"})
        line = 1
    else:
        path = tiny_bundle / "intents.jsonl"
        lines = _lines(path)
        row = json.loads(lines[1])
        row["title"] = ""
        lines[1] = json.dumps(row)
        line = 2
    _rewrite(path, lines)
    with pytest.raises(BundleError, match=rf"{path.name}:{line}: empty text in '{field}'"):
        read_bundle(tiny_bundle)


def test_two_intents_on_one_path(tiny_bundle: Path) -> None:
    path = tiny_bundle / "intents.jsonl"
    lines = _lines(path)
    row = json.loads(lines[2])
    row["path"] = ["Order", "Cancellation", "Cancel Order"]  # the path of line 1
    lines[2] = json.dumps(row)
    _rewrite(path, lines)
    with pytest.raises(BundleError, match=r"intents.jsonl:3: intent 'refund' has the class path Order > Cancellation > "
                                          r"Cancel Order, already the path of intent 'cancel' \(line 1\)"):
        read_bundle(tiny_bundle)


def test_padded_path_that_meets_another(tiny_bundle: Path) -> None:
    path = tiny_bundle / "intents.jsonl"
    lines = _lines(path)
    row = json.loads(lines[3])
    row["path"] = ["Payment", "Refund"]  # padded to Payment > Refund > Refund ...
    lines[3] = json.dumps(row)
    other = json.loads(lines[2])
    other["path"] = ["Payment", "Refund", "Refund"]  # ... which line 3 already is
    lines[2] = json.dumps(other)
    _rewrite(path, lines)
    with pytest.raises(BundleError, match=r"intents.jsonl:4: .*Payment > Refund > Refund \(padded to depth 3"):
        read_bundle(tiny_bundle)


def test_non_utf8_bytes(tiny_bundle: Path) -> None:
    path = tiny_bundle / "single_turn.jsonl"
    raw = path.read_bytes().split(b"\n")
    raw[3] = b'{"text": "caf\xe9", "intent": "refund"}'
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(BundleError, match=r"single_turn.jsonl:4: invalid UTF-8"):
        read_bundle(tiny_bundle)


def test_missing_required_file(tiny_bundle: Path) -> None:
    (tiny_bundle / "intents.jsonl").unlink()
    with pytest.raises(MissingBundleFileError, match=r"intents.jsonl: every bundle needs intents.jsonl"):
        read_bundle(tiny_bundle)


def test_missing_file_for_pipeline(tiny_bundle: Path) -> None:
    bundle = read_bundle(tiny_bundle)
    with pytest.raises(MissingBundleFileError, match=r"unlabeled.jsonl: this pipeline needs unlabeled sessions"):
        bundle.require_sessions("unlabeled")


def test_test_session_needs_target(tiny_bundle: Path) -> None:
    path = tiny_bundle / "sessions" / "test.jsonl"
    _rewrite(path, [json.dumps({"id": "z", "turns": [{"text": "hello"}]})])
    with pytest.raises(BundleError, match=r"test.jsonl:1: session 'z' has no intent on its last turn"):
        read_bundle(tiny_bundle)


def test_taxonomy_levels(tiny_bundle: Path) -> None:
    taxonomy = Taxonomy.from_intents(read_bundle(tiny_bundle).intents)
    assert taxonomy.depth == 3
    assert taxonomy.levels[0] == ["Logistics", "Order", "Payment"]
    assert taxonomy.num_classes == [3, 3, 4]
    cancel = taxonomy.level_ids("cancel")
    status = taxonomy.level_ids("cancel_status")
    assert cancel[:2] == status[:2] and cancel[2] != status[2]
    for level in (1, 2):
        for child, parent in enumerate(taxonomy.parents[level]):
            assert 0 <= parent < taxonomy.num_classes[level - 1]
    assert taxonomy.parents[1][cancel[1]] == cancel[0]
    assert taxonomy.leaf_to_intent(cancel[2]) == "cancel"
    assert taxonomy.title("cancel", english=True) == "Request to cancel an order"
