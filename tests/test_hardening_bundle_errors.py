"""Issue 22, groups 3 and 4: every corrupt bundle is one line `error: <file>[:<line>]: <reason>` with exit 2, the
same through `python run.py` (where Hydra's `instantiate` wraps the data module's error) and `mtic data validate`.

Group 4's gaps are in the matrix: a lone surrogate, deeply nested JSON, a >4300-digit integer, NUL bytes, an
empty test split, a directory where a file belongs, a file given as the bundle. A UTF-8 BOM at the start of a
file is accepted in every bundle file (JSONL and bundle.yaml alike)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_tiny_bundle

from mtic.cli import main
from mtic.cli_errors import EXIT_USER_ERROR, friendly_errors, user_error
from mtic.data.bundle import MAX_JSON_DEPTH, read_bundle
from mtic.data.errors import BundleError

REPO = Path(__file__).resolve().parents[1]
TEST = "sessions/test.jsonl"
GOOD_TEST_LINES = 3  # conftest's tiny bundle: an appended record is line 4 of sessions/test.jsonl


def _append(relative: str, data: bytes) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        with (root / relative).open("ab") as handle:
            handle.write(data)
    return make


def _record(**fields: object) -> bytes:
    row = {"id": "x", "turns": [{"text": "where is it", "intent": "track"}]}
    row.update(fields)
    return json.dumps(row).encode() + b"\n"


def _replace_by_dir(relative: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / relative).unlink()
        (root / relative).mkdir()
    return make


def _prepend_bom(relative: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        path = root / relative
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return make


@dataclass(frozen=True)
class Corrupt:
    make: Callable[[Path], None]
    file: str  # relative to the bundle root; "" = the bundle path itself
    line: int | None  # None: the fault is the file, not a line of it
    reason: str


MATRIX: dict[str, Corrupt] = {
    "bad_json_line": Corrupt(_append(TEST, b"{bad\n"), TEST, 4, "malformed JSON"),
    "unknown_intent": Corrupt(_append(TEST, _record(turns=[{"text": "hi", "intent": "nosuch"}])), TEST, 4,
                              "unknown intent id 'nosuch'"),
    "missing_field": Corrupt(_append(TEST, b'{"id": "x"}\n'), TEST, 4, "'turns' must be a non-empty list"),
    "wrong_type": Corrupt(_append(TEST, _record(turns=[{"text": 5, "intent": "track"}])), TEST, 4,
                          "'text' must be a string, got int"),
    "not_an_object": Corrupt(_append(TEST, b"[1, 2]\n"), TEST, 4, "expected a JSON object, got list"),
    "empty_test_file": Corrupt(lambda root: (root / TEST).write_bytes(b""), TEST, 1, "no sessions"),
    "duplicate_id": Corrupt(_append(TEST, _record(id="s1")), TEST, 4, "duplicate session id 's1'"),
    "duplicate_intent": Corrupt(_append("intents.jsonl", b'{"id": "track", "title": "t", "path": ["a", "b", "c"]}\n'),
                                "intents.jsonl", 5, "duplicate intent id 'track'"),
    "missing_intents": Corrupt(lambda root: (root / "intents.jsonl").unlink(), "intents.jsonl", None,
                               "every bundle needs intents.jsonl"),
    "missing_bundle_yaml": Corrupt(lambda root: (root / "bundle.yaml").unlink(), "bundle.yaml", None,
                                   "every bundle needs bundle.yaml"),
    "bom_mid_file": Corrupt(_append(TEST, b"\xef\xbb\xbf" + _record()), TEST, 4, "malformed JSON"),
    "nul_byte": Corrupt(_append(TEST, b"\x00\x00\n"), TEST, 4, "NUL byte at column 1"),
    "nul_escape": Corrupt(_append(TEST, _record(turns=[{"text": "a\x00b", "intent": "track"}])), TEST, 4,
                          "NUL character"),
    "lone_surrogate": Corrupt(_append(TEST, b'{"id": "x", "turns": [{"text": "a\\ud800", "intent": "track"}]}\n'),
                              TEST, 4, "lone surrogate \\ud800"),
    "surrogate_in_key": Corrupt(_append(TEST, b'{"id": "x", "\\udfff": 1, "turns": [{"text": "a"}]}\n'), TEST, 4,
                                "lone surrogate \\udfff"),
    "deeply_nested": Corrupt(_append(TEST, b"[" * 100_000 + b"]" * 100_000 + b"\n"), TEST, 4,
                             f"nested deeper than {MAX_JSON_DEPTH} levels"),
    "nested_in_record": Corrupt(_append(TEST, b'{"id": "x", "extra": ' + b"[" * 500 + b"]" * 500 + b"}\n"), TEST, 4,
                                f"nested deeper than {MAX_JSON_DEPTH} levels"),
    "huge_integer": Corrupt(_append(TEST, b'{"id": ' + b"9" * 5000 + b', "turns": []}\n'), TEST, 4, "number too long"),
    "invalid_utf8": Corrupt(_append(TEST, b'{"id": "\xff"}\n'), TEST, 4, "invalid UTF-8"),
    "directory_for_test": Corrupt(_replace_by_dir(TEST), TEST, None, "is a directory; expected a file"),
    "directory_for_intents": Corrupt(_replace_by_dir("intents.jsonl"), "intents.jsonl", None,
                                     "is a directory; expected a file"),
    "directory_for_single_turn": Corrupt(_replace_by_dir("single_turn.jsonl"), "single_turn.jsonl", None,
                                         "is a directory; expected a file"),
    "bundle_yaml_tab": Corrupt(_append("bundle.yaml", b"\tx: 1\n"), "bundle.yaml", 5, "malformed YAML"),  # 4 good lines
    "bundle_yaml_huge_integer": Corrupt(_append("bundle.yaml", b"x: " + b"9" * 5000 + b"\n"), "bundle.yaml", None,
                                        "number too long"),
    "bundle_yaml_deeply_nested": Corrupt(_append("bundle.yaml", b"x: " + b"[" * 100_000 + b"\n"), "bundle.yaml", None,
                                         "nested too deeply"),
    "bundle_is_a_file": Corrupt(lambda root: None, "", None, "is a file, not a bundle directory"),
}
"""Every corrupt bundle: how to make it from the tiny bundle, and the file, line and reason of its one-line error."""

RUN_PY_CASES = [
    "bad_json_line", "unknown_intent", "missing_field", "wrong_type", "empty_test_file", "duplicate_id",
    "missing_intents", "bom_mid_file", "nul_byte", "nul_escape", "lone_surrogate", "deeply_nested", "huge_integer",
    "directory_for_test", "bundle_yaml_tab", "bundle_is_a_file",
]
"""The run.py subprocess matrix (each run is a few seconds of start-up): every kind of fault, once."""


def corrupt_bundle(root: Path, name: str) -> Path:
    case = MATRIX[name]
    if not case.file:
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_text("not a directory\n", encoding="utf-8")
        return root
    write_tiny_bundle(root)
    case.make(root)
    return root


def expected_line(root: Path, name: str) -> str:
    case = MATRIX[name]
    where = str(root / case.file) if case.file else str(root)
    if case.line is not None:
        where += f":{case.line}"
    return f"error: {where}: "


def _check_one_line(stderr: str, root: Path, name: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(expected_line(root, name)), (lines[0], expected_line(root, name))
    assert MATRIX[name].reason in lines[0], lines[0]
    assert "Traceback" not in stderr


def test_the_matrix_covers_the_issue() -> None:
    assert len(MATRIX) >= 12 and len(RUN_PY_CASES) >= 12
    assert set(RUN_PY_CASES) <= set(MATRIX)


@pytest.mark.parametrize("name", list(MATRIX))
def test_mtic_data_validate_is_one_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = corrupt_bundle(tmp_path / "bundle", name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["data", "validate", str(root)])
    assert exit_.value.code == EXIT_USER_ERROR
    _check_one_line(capsys.readouterr().err, root, name)


@pytest.mark.parametrize("name", ["deeply_nested", "huge_integer", "lone_surrogate", "bundle_is_a_file"])
def test_mtic_data_stats_is_one_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = corrupt_bundle(tmp_path / "bundle", name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["data", "stats", str(root)])
    assert exit_.value.code == EXIT_USER_ERROR
    _check_one_line(capsys.readouterr().err, root, name)


@pytest.mark.parametrize("name", RUN_PY_CASES)
def test_run_py_is_the_same_one_line(name: str, tmp_path: Path) -> None:
    """Through Hydra: the bundle is read inside `instantiate`; the user sees the validator's line, exit 2."""
    root = corrupt_bundle(tmp_path / "bundle", name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    done = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "+experiment=baseline_tfidf", f"paths.data_dir={root}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == EXIT_USER_ERROR, done.stderr[-3000:]
    _check_one_line(done.stderr, root, name)


@pytest.mark.parametrize("relative", ["bundle.yaml", "intents.jsonl", "single_turn.jsonl", TEST, "sessions/train.jsonl"])
def test_a_leading_bom_is_accepted_in_every_file(relative: str, tiny_bundle: Path) -> None:
    before = read_bundle(tiny_bundle)
    _prepend_bom(relative)(tiny_bundle)
    after = read_bundle(tiny_bundle)
    assert (after.meta, after.intents, after.single_turn, after.sessions) == \
           (before.meta, before.intents, before.single_turn, before.sessions)


def test_line_numbers_count_newlines_only(tiny_bundle: Path) -> None:
    """U+2028 / U+0085 inside a JSON string are text, not line breaks: the record loads, later lines keep their
    numbers."""
    _append(TEST, _record(id="sep", turns=[{"text": "a\u2028b\x85c", "intent": "track"}]))(tiny_bundle)
    text = (tiny_bundle / TEST).read_text(encoding="utf-8").replace("\\u2028", "\u2028").replace("\\u0085", "\x85")
    (tiny_bundle / TEST).write_text(text + "{bad\n", encoding="utf-8")
    with pytest.raises(BundleError) as err:
        read_bundle(tiny_bundle)
    assert err.value.line == GOOD_TEST_LINES + 2


def test_sessions_as_a_file_is_named(tiny_bundle: Path) -> None:
    for split in ("train", "test"):
        (tiny_bundle / "sessions" / f"{split}.jsonl").unlink()
    (tiny_bundle / "sessions").rmdir()
    (tiny_bundle / "sessions").write_text("", encoding="utf-8")
    with pytest.raises(BundleError, match="sessions: is a file; expected a directory"):
        read_bundle(tiny_bundle)


def test_friendly_errors_unwraps_hydra_instantiation(capsys: pytest.CaptureFixture) -> None:
    from hydra.errors import InstantiationException

    inner = BundleError("b/intents.jsonl", "bad", 3)
    try:
        try:
            raise inner
        except BundleError as err:
            raise InstantiationException("Error in call to target 'x'") from err
    except InstantiationException as wrapped:
        assert user_error(wrapped) is inner
    with pytest.raises(SystemExit) as exit_, friendly_errors():
        raise InstantiationException("Error in call to target 'x'") from inner
    assert exit_.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: b/intents.jsonl:3: bad\n"


def test_friendly_errors_keeps_real_bugs() -> None:
    """A bug raised while handling a user error (implicit __context__) is no user error: it propagates."""
    with pytest.raises(TypeError), friendly_errors():
        try:
            raise FileNotFoundError("cache miss")
        except FileNotFoundError:
            raise TypeError("a real bug")  # implicitly chained to the FileNotFoundError: the point
