"""JSON lines of a bundle: read one line at a time with exact `file:line` errors, and written back.

A line ends at "\\n" only (as editors and `wc -l` count; a trailing "\\r" is dropped): JSON strings may hold raw
U+2028, U+0085, ... and those must not shift later line numbers. Blank lines are skipped. A UTF-8 byte-order mark
at the start of a file is accepted and dropped. Every record is checked for what JSON can carry but no text may
(`check_values`). The file is streamed: memory holds one line, whatever the size of the file.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mtic.data.errors import BundleError

MAX_LINE_CHARS = 1_000_000
MAX_JSON_DEPTH = 32
"""Nesting deeper than this is no bundle record (a session is an object > turns list > turn object: depth 3)."""
UTF8_BOM = "\ufeff"


def read_text(path: Path) -> str:
    """The file as text. A leading byte-order mark is dropped; invalid UTF-8 or a file that cannot be read is a
    BundleError (with the line of the bad byte)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BundleError(path, f"cannot be read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BundleError(path, f"invalid UTF-8 byte at offset {err.start}", line) from None
    return text.removeprefix(UTF8_BOM)


def check_values(row: Any, path: Path, line: int | None) -> None:
    """Reject what JSON can carry but no text may: nesting deeper than MAX_JSON_DEPTH, NUL characters and lone
    surrogates (`"\\ud800"`, which no tokenizer can encode) in any key or string value. Iterative: no recursion."""
    stack: list[tuple[Any, int]] = [(row, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BundleError(path, f"nested deeper than {MAX_JSON_DEPTH} levels", line)
        if isinstance(node, dict):
            for key, value in node.items():
                _check_string(key, path, line)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str):
            _check_string(node, path, line)


def _check_string(value: str, path: Path, line: int | None) -> None:
    if "\x00" in value:
        raise BundleError(path, f"NUL character (\\u0000) in the string {value[:40]!r}", line)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        raise BundleError(path, f"lone surrogate \\u{code:04x} (not a Unicode character) in the string "
                                f"{value[:40]!r}", line) from None


def _cannot_fail_value_checks(raw: str) -> bool:
    """True when `check_values` cannot reject the record of line `raw`, so it may be skipped: a NUL character or a
    lone surrogate in parsed JSON comes only from a `\\u` escape (raw NUL bytes are refused before parsing, and
    decoded UTF-8 holds no surrogate), and nesting deeper than MAX_JSON_DEPTH needs more opening brackets."""
    return "\\u" not in raw and raw.count("[") + raw.count("{") <= MAX_JSON_DEPTH


def load_json_line(raw: str, path: Path, line: int) -> Any:
    """The JSON value of one line, checked with `check_values`; any fault is a BundleError at `path:line`."""
    if "\x00" in raw:
        raise BundleError(path, f"NUL byte at column {raw.index(chr(0)) + 1} (a binary file?)", line)
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as err:
        raise BundleError(path, f"malformed JSON ({err.msg} at column {err.colno})", line) from None
    except RecursionError:
        raise BundleError(path, f"nested deeper than {MAX_JSON_DEPTH} levels", line) from None
    except ValueError as err:  # an integer of more digits than Python converts (sys.get_int_max_str_digits())
        raise BundleError(path, f"number too long ({str(err).split(';')[0]})", line) from None
    if not _cannot_fail_value_checks(raw):
        check_values(row, path, line)
    return row


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without its line end) of every line, decoded one at a time."""
    try:
        handle = path.open("rb")
    except OSError as err:
        raise BundleError(path, f"cannot be read ({err.strerror or err})") from None
    offset = 0
    with handle:
        for number, data in enumerate(handle, start=1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise BundleError(path, f"invalid UTF-8 byte at offset {offset + err.start}", number) from None
            offset += len(data)
            yield number, raw.removesuffix("\n").removesuffix("\r").removeprefix(UTF8_BOM if number == 1 else "")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line raises BundleError naming it."""
    try:
        for number, raw in _decoded_lines(path):
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_CHARS:
                raise BundleError(path, f"line longer than {MAX_LINE_CHARS} characters", number)
            row = load_json_line(raw, path, number)
            if not isinstance(row, dict):
                raise BundleError(path, f"expected a JSON object, got {type(row).__name__}", number)
            yield number, row
    except OSError as err:  # the file went away or failed while it was read
        raise BundleError(path, f"cannot be read ({err.strerror or err})") from None


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Write rows (any iterable: they are streamed) as UTF-8 JSON lines, non-ASCII kept readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
