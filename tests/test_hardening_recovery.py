"""Issue 22, group 5: CLARA recovery never throws valid records away, and two runs on one output do not both
label. Only a torn final line is cut; any other bad line is an error naming file:line; a second process on
the same records file is refused at once, naming the holder (pid, host)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtic.clara.pseudo_label import RecordsError, RecordsLocked, pseudo_label, recover
from mtic.cli_errors import EXIT_USER_ERROR, friendly_errors
from mtic.data.schema import Session, Turn

N = 40


def _record(k: int) -> dict:
    return {"id": f"s{k:02d}", "status": "no_answer", "turns": [{"text": f"query {k}", "intent": None}]}


def _lines(n: int = N) -> list[bytes]:
    return [(json.dumps(_record(k), sort_keys=True) + "\n").encode() for k in range(n)]


def _sessions(n: int = N) -> list[Session]:
    return [Session(f"s{k:02d}", (Turn(f"query {k}"),)) for k in range(n)]


class Labeller:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, sessions):
        self.calls += [s.id for s in sessions]
        return [_record(int(s.id[1:])) for s in sessions]


@pytest.mark.parametrize("bad, reason", [
    (b"\n", "blank line"),
    (b"   \n", "blank line"),
    (b'{"id": "s03", "status": \n', "not a JSON record"),
    (b"\xff\xfe garbage\n", "not UTF-8"),
    (b'["s03"]\n', "not a pseudo-label record"),
    (b'{"status": "kept"}\n', "not a pseudo-label record"),
])
def test_a_bad_line_mid_file_is_an_error_naming_the_line_and_nothing_is_cut(tmp_path, bad, reason):
    path = tmp_path / "pl.jsonl"
    lines = _lines()
    lines[3] = bad  # line 4 of 40
    data = b"".join(lines)
    path.write_bytes(data)
    with pytest.raises(RecordsError) as err:
        recover(path)
    assert str(err.value).startswith(f"{path}:4: {reason}")
    assert "\n" not in str(err.value)
    assert path.read_bytes() == data  # the 36 valid records after it are still there


def test_a_bad_complete_final_line_is_an_error_not_a_torn_write(tmp_path):
    path = tmp_path / "pl.jsonl"
    data = b"".join(_lines()[:-1]) + b'{"id": "s39", "sta\n'  # ends in a newline: not an interrupted write
    path.write_bytes(data)
    with pytest.raises(RecordsError, match=rf"{path.name}:40: not a JSON record"):
        recover(path)
    assert path.read_bytes() == data


def test_only_a_torn_final_line_is_cut(tmp_path, caplog):
    path = tmp_path / "pl.jsonl"
    good = b"".join(_lines(10))
    path.write_bytes(good + b'{"id": "s10", "answers": [{"intent": "can')
    with caplog.at_level(logging.WARNING, logger="mtic"):
        records = recover(path)
    assert sorted(records) == [f"s{k:02d}" for k in range(10)]
    assert path.read_bytes() == good
    assert f"{path}:11: cut the torn final line" in caplog.text


def test_pseudo_label_refuses_a_corrupt_file_before_labelling_anything(tmp_path):
    path = tmp_path / "pl.jsonl"
    lines = _lines()
    lines[3] = b"\n"
    path.write_bytes(b"".join(lines))
    labeller = Labeller()
    with pytest.raises(RecordsError, match=r":4: blank line"):
        pseudo_label(_sessions(), labeller, path, batch_size=4, progress=False)
    assert labeller.calls == []  # no money spent re-labelling 37 valid records


def test_the_error_is_one_line_and_exit_2_through_the_cli_handler(tmp_path, capsys):
    path = tmp_path / "pl.jsonl"
    lines = _lines()
    lines[3] = b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(SystemExit) as exit_, friendly_errors():
        recover(path)
    assert exit_.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:4: blank line") and err.count("\n") == 1


def test_resume_after_a_torn_line_labels_only_the_missing_sessions(tmp_path):
    path = tmp_path / "pl.jsonl"
    path.write_bytes(b"".join(_lines(12)) + b'{"id": "s12"')
    labeller = Labeller()
    summary = pseudo_label(_sessions(), labeller, path, batch_size=4, progress=False)
    assert labeller.calls == [f"s{k:02d}" for k in range(12, N)]
    assert summary["run"]["resumed_from"] == 12
    assert path.read_bytes() == b"".join(_lines())
    # the lock is released: the same process (or another) can run again on the same output
    assert pseudo_label(_sessions(), labeller, path, batch_size=4, progress=False)["run"]["labelled_now"] == 0


HOLDER = textwrap.dedent("""
    import sys
    from mtic.clara.pseudo_label import records_lock
    with records_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes stdin
""")


@pytest.fixture
def held(tmp_path):
    """A second process holding the lock on tmp_path/pl.jsonl (released when the test ends)."""
    path = tmp_path / "pl.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline() == b"locked\n", proc.stderr.read().decode()
        yield path, proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def test_a_second_run_on_the_same_output_says_who_holds_it(held, capsys):
    path, pid = held
    path.write_bytes(b"".join(_lines(5)) + b'{"id": "s05"')  # the holder's write in progress
    labeller = Labeller()
    with pytest.raises(SystemExit) as exit_, friendly_errors():
        pseudo_label(_sessions(), labeller, path, batch_size=4, progress=False)
    assert exit_.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {path.absolute()}: in use by another labelling run")
    assert f"pid {pid} on host {socket.gethostname()}" in err
    assert labeller.calls == []
    # a bare recover() while another run holds the file reads it but leaves that run's tail alone
    assert len(recover(path)) == 5
    assert path.read_bytes().endswith(b'{"id": "s05"')


def test_the_lock_error_type(held):
    path, _ = held
    with pytest.raises(RecordsLocked):
        pseudo_label(_sessions(3), Labeller(), path, progress=False)
