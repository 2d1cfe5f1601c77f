"""Issue 23 (1): big row files are read through a memory-mapped Arrow cache (mtic/data/arrow_cache.py) and handed
out as ArrowRows: the same records as the list reader, the same `file:line` errors, a cache keyed by the file's
version and validation context. MTIC_BUNDLE_ARROW_ABOVE=0 sends every non-empty row file through Arrow."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from test_hardening_bundle_errors import MATRIX, corrupt_bundle, expected_line

from mtic.data import arrow_cache
from mtic.data.arrow_cache import ARROW_ABOVE_ENV, CACHE_DIR
from mtic.data.arrow_rows import ArrowRows
from mtic.data.bundle import read_bundle, write_bundle
from mtic.data.errors import BundleError
from mtic.dataset_factories.synthetic import write_synthetic_bundle

ROW_FILES = ("single_turn.jsonl", "sessions/train.jsonl", "sessions/unlabeled.jsonl", "sessions/valid.jsonl",
             "sessions/test.jsonl")  # the order read_bundle reads them in
ROW_FILE_CASES = [name for name, case in MATRIX.items() if case.line is not None and case.file in ROW_FILES]


def _cache_dir() -> Path:
    from mtic.hub.constants import cache_root

    return cache_root() / CACHE_DIR


def _arrow_files() -> list[Path]:
    return sorted(_cache_dir().glob("*.arrow"))


@pytest.fixture
def through_arrow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ARROW_ABOVE_ENV, "0")
    monkeypatch.setenv("MTIC_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ROW_FILE_CASES)
def test_errors_name_file_and_line_through_arrow(name: str, tmp_path: Path, through_arrow: None) -> None:
    """Every bad row of the hardening matrix is the same `file:line: reason` through the Arrow reader; the files
    read before the bad one are cached, the bad one leaves nothing (no cache, no temporary file)."""
    root = corrupt_bundle(tmp_path / "bundle", name)
    with pytest.raises(BundleError) as err:
        read_bundle(root)
    assert f"error: {err.value}".startswith(expected_line(root, name)), (str(err.value), expected_line(root, name))
    assert MATRIX[name].reason in str(err.value)
    read_before = [f for f in ROW_FILES[: ROW_FILES.index(MATRIX[name].file)] if (root / f).is_file()]
    assert len(_arrow_files()) == len(read_before) == 2 and not list(_cache_dir().glob("*.tmp"))


def test_single_turn_error_through_arrow(tiny_bundle: Path, through_arrow: None) -> None:
    path = tiny_bundle / "single_turn.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[5] = '{"text": "hello", "intent": "nope"}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BundleError, match=rf"^{path}:6: unknown intent id 'nope'"):
        read_bundle(tiny_bundle)
    assert not _cache_dir().exists() or not list(_cache_dir().iterdir())


def test_round_trip_same_records_as_the_list_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A synthetic bundle read through Arrow holds the very sessions and queries of the list reader (order
    included); indexing, slicing, pickling and writing it back give the same rows; a second read maps the cache
    without validating again; a changed file is read anew and its stale cache removed."""
    monkeypatch.setenv("MTIC_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_bundle(tmp_path / "synthetic", n_sessions=3000, n_queries=500, n_intents=12, seed=3)
    listed = read_bundle(root)
    monkeypatch.setenv(ARROW_ABOVE_ENV, "0")
    mapped = read_bundle(root)
    assert all(isinstance(rows, ArrowRows) for rows in (mapped.single_turn, *mapped.sessions.values()))
    assert isinstance(listed.sessions["train"], list)
    assert mapped.single_turn == listed.single_turn and mapped.sessions == listed.sessions
    assert set(mapped.sessions) == {"train", "unlabeled", "valid", "test"}
    train, expected = mapped.sessions["train"], listed.sessions["train"]
    assert [train[k] for k in range(len(train))] == expected                 # a walk over indices
    assert [train[k] for k in (1500, 7, -1, 1025)] == [expected[k] for k in (1500, 7, -1, 1025)]  # random access
    assert train[100:2100] == expected[100:2100] and train[::7] == expected[::7]
    assert pickle.loads(pickle.dumps(train[5:50])) == expected[5:50]
    assert train[5:50].dataset()["id"] == [s.id for s in expected[5:50]]
    assert len(pickle.dumps(train)) < 1000  # the path and the range, not the rows
    assert train + listed.sessions["test"] == expected + listed.sessions["test"]
    copy = write_bundle(mapped, tmp_path / "copy")
    for relative in ("single_turn.jsonl", "sessions/train.jsonl", "sessions/unlabeled.jsonl"):
        assert (copy / relative).read_bytes() == (root / relative).read_bytes(), relative
    cached = _arrow_files()
    assert len(cached) == 5  # single_turn + four session splits

    def no_second_build(*args: object) -> None:
        raise AssertionError("the cache was rebuilt for an unchanged file")

    monkeypatch.setattr(arrow_cache, "write_arrow", no_second_build)
    assert read_bundle(root).sessions == listed.sessions
    monkeypatch.undo()
    monkeypatch.setenv("MTIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(ARROW_ABOVE_ENV, "0")
    test_file = root / "sessions" / "test.jsonl"
    test_file.write_text("\n".join(test_file.read_text(encoding="utf-8").splitlines()[:-1]) + "\n", encoding="utf-8")
    assert len(read_bundle(root).sessions["test"]) == len(listed.sessions["test"]) - 1
    assert len(_arrow_files()) == 5 and _arrow_files() != cached


def test_default_reader_is_chosen_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTIC_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_bundle(tmp_path / "synthetic", n_sessions=400, n_queries=50, n_intents=5)
    train_bytes = (root / "sessions" / "train.jsonl").stat().st_size
    monkeypatch.setenv(ARROW_ABOVE_ENV, str(train_bytes - 1))
    bundle = read_bundle(root)
    assert isinstance(bundle.sessions["train"], ArrowRows)
    assert all(isinstance(bundle.sessions[s], list) for s in ("unlabeled", "valid", "test"))
    monkeypatch.delenv(ARROW_ABOVE_ENV)
    assert arrow_cache.arrow_above() == arrow_cache.ARROW_ABOVE_BYTES
    monkeypatch.setenv(ARROW_ABOVE_ENV, "16MB")
    with pytest.raises(ValueError, match="MTIC_BUNDLE_ARROW_ABOVE must be a number of bytes"):
        read_bundle(root)


def test_unwritable_cache_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_synthetic_bundle(tmp_path / "synthetic", n_sessions=50, n_queries=10, n_intents=5)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / CACHE_DIR).write_text("a file where the cache directory belongs", encoding="utf-8")
    monkeypatch.setenv("MTIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(ARROW_ABOVE_ENV, "0")
    with pytest.raises(BundleError, match=rf"^{root / 'single_turn.jsonl'}: cannot write its Arrow cache in "):
        read_bundle(root)


def test_synthetic_bundle_is_seeded_and_valid(tmp_path: Path) -> None:
    a = write_synthetic_bundle(tmp_path / "a", n_sessions=1000, n_queries=200, n_intents=30, seed=1)
    b = write_synthetic_bundle(tmp_path / "b", n_sessions=1000, n_queries=200, n_intents=30, seed=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jsonl"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    bundle = read_bundle(a)
    assert len(bundle.intents) == 30 and len(bundle.single_turn) == 200
    assert sum(map(len, bundle.sessions.values())) == 1000
    assert all(t.intent is None for s in bundle.sessions["unlabeled"] for t in s.turns)
    assert all(t.intent is not None for s in bundle.sessions["train"] for t in s.turns)
    assert {len(s.turns) for s in bundle.sessions["train"]} == {1, 2, 3, 4}
    other = write_synthetic_bundle(tmp_path / "c", n_sessions=1000, n_queries=200, n_intents=30, seed=2)
    assert (other / "sessions" / "train.jsonl").read_bytes() != (a / "sessions" / "train.jsonl").read_bytes()
