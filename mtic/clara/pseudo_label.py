"""Resumable pseudo-labelling: one JSONL record per session, appended as each batch finishes, then a summary.

Crash safety. Every record is one `os.write` of a whole line on an O_APPEND descriptor, then fsync. Batches
are aligned to absolute positions in the input (positions b*B .. b*B+B-1) and written in input order, so the
records file is always a prefix of the uninterrupted run's file plus, at worst, a partial last line. A restart
(even after kill -9) truncates that partial line, skips the sessions already recorded and continues; answers of
a batch that was computed but not fully written come back from the LLM answer cache. The file is finally
checked to be in input order (rewritten atomically if not), so it equals an uninterrupted run's, byte for byte.
Only a torn *final* line is ever cut: any other bad line (blank, not JSON, no id) is a `RecordsError` naming
`file:line`, so valid records are never thrown away. A run holds an exclusive lock on its records file
(`<out>.lock`, fcntl); a second run on the same output fails at once, naming the holder's pid and host.

Outputs (`out` = the records path, e.g. `pseudo_labels.jsonl`):
  out                     every session: queries, each ordering's answer, the vote, the status
  <stem>.sessions.jsonl   the kept sessions as a bundle sessions file (last turn labelled): `data.train_sessions`
  <stem>.summary.json/.md kept share, answer statuses, precision with / without self-consistency (gold labels)
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mtic.clara.labeler import ANSWER_STATUSES, KEPT, SESSION_STATUSES
from mtic.data.errors import BundleError
from mtic.data.schema import Session

log = logging.getLogger("mtic")
SESSIONS_SUFFIX = ".sessions.jsonl"
SUMMARY_SUFFIX = ".summary"
LabelBatch = Callable[[Sequence[Session]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Outputs:
    records: Path
    sessions: Path
    summary_json: Path
    summary_md: Path

    @classmethod
    def of(cls, records: str | Path) -> Outputs:
        records = Path(records)
        stem = records.with_suffix("")
        return cls(records, Path(f"{stem}{SESSIONS_SUFFIX}"), Path(f"{stem}{SUMMARY_SUFFIX}.json"),
                   Path(f"{stem}{SUMMARY_SUFFIX}.md"))


def line_of(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


class RecordsError(BundleError):
    """A pseudo-label records file cannot be resumed safely; the message names the file and the line."""


class RecordsLocked(RecordsError):
    """Another process is writing the same records file."""


LOCK_SUFFIX = ".lock"


def _lock_path(path: Path) -> Path:
    return path.with_name(f"{path.name}{LOCK_SUFFIX}")


_HELD: set[Path] = set()  # records files whose lock this process holds (flock is per open file, not per process)


@contextlib.contextmanager
def records_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (via `<path>.lock`, fcntl.flock) while labelling into it.

    A second process on the same records file fails at once with `RecordsLocked`, naming who holds it (pid,
    host). The lock goes with the process (even after kill -9); the lock file itself stays, and is harmless.
    """
    path = Path(path).absolute()
    lock = _lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "pid ? on host ?"
            raise RecordsLocked(path, f"in use by another labelling run ({holder}; lock {lock.name}); "
                                      "wait for it to finish or give another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        _HELD.add(path)
        try:
            yield
        finally:
            _HELD.discard(path)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def recover(path: Path) -> dict[str, dict[str, Any]]:
    """Records already in `path` (id -> record).

    Only a torn final line (the tail after the last newline: a write interrupted by a crash) is cut off the
    file, and only while holding the file's lock (if another run holds it, the tail is left to that run).
    Any other line that is not a JSON record with an id (a blank line, bad JSON, bad UTF-8, a line ending in a
    newline that does not parse) is a `RecordsError` naming `file:line`: the valid records after it are never
    thrown away.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    records: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(data[:complete].splitlines(keepends=True), start=1):
        body = raw[:-1]
        if not body.strip():
            raise RecordsError(path, "blank line in a records file (only a torn final line is repaired); "
                                     "remove the line and rerun", line=number)
        try:
            record = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise RecordsError(path, f"not UTF-8 ({err.reason} at byte {err.start}); fix or remove the line "
                                     "and rerun", line=number) from None
        except (json.JSONDecodeError, RecursionError, ValueError) as err:
            raise RecordsError(path, f"not a JSON record ({str(err).splitlines()[0][:120]}); fix or remove the "
                                     "line and rerun", line=number) from None
        if not isinstance(record, dict) or "id" not in record:
            raise RecordsError(path, "not a pseudo-label record (a JSON object with an \"id\"); fix or remove "
                                     "the line and rerun", line=number)
        records.setdefault(str(record["id"]), record)
    if complete < len(data):
        if path.absolute() in _HELD:
            _cut(path, complete, len(data))
        else:
            try:
                with records_lock(path):
                    _cut(path, complete, len(data))
            except RecordsLocked:
                pass  # another run is writing: its tail is its own
    return records


def _cut(path: Path, keep: int, size: int) -> None:
    line = path.read_bytes()[:keep].count(b"\n") + 1
    log.warning("%s:%d: cut the torn final line (%d bytes of a write interrupted by a crash)", path, line,
                size - keep)
    with path.open("r+b") as handle:
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())


def _append(fd: int, record: dict[str, Any]) -> None:
    payload = line_of(record)
    written = os.write(fd, payload)
    if written != len(payload):  # a regular file takes the whole line; never leave half of one behind
        raise OSError(f"short write ({written} of {len(payload)} bytes)")
    os.fsync(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def pseudo_label(
    sessions: Sequence[Session],
    label_batch: LabelBatch,
    out: str | Path,
    batch_size: int = 8,
    gold: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
    progress: bool = True,
    desc: str = "pseudo-labelling",
) -> dict[str, Any]:
    """Label every session not yet in `out` (resuming), then write the kept sessions and the summary.

    `label_batch(sessions)` returns one record per session (`SessionLabeler.label`). `gold` maps session ids
    to the gold intent of the last turn (for precision). Returns the summary.
    """
    check_inputs(sessions, batch_size)
    paths = Outputs.of(out)
    paths.records.parent.mkdir(parents=True, exist_ok=True)
    with records_lock(paths.records):  # a second run on the same output stops here, naming the holder
        return _label_locked(sessions, label_batch, paths, batch_size, gold, settings, progress, desc)


def check_inputs(sessions: Sequence[Session], batch_size: int) -> None:
    """ValueError unless the batch size is positive and the session ids are unique (records are keyed by id)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ids = [s.id for s in sessions]
    if len(set(ids)) != len(ids):
        raise ValueError("session ids must be unique")


def _label_locked(sessions: Sequence[Session], label_batch: LabelBatch, paths: Outputs, batch_size: int,
                  gold: Mapping[str, str] | None, settings: Mapping[str, Any] | None, progress: bool,
                  desc: str) -> dict[str, Any]:
    done, run = append_pending(sessions, label_batch, paths.records, batch_size, progress=progress, desc=desc)
    return write_outputs(paths, [done[s.id] for s in sessions], gold, settings, run=run)


def append_pending(sessions: Sequence[Session], label_batch: LabelBatch, records: Path, batch_size: int,
                   skip: Collection[str] = (), progress: bool = False,
                   desc: str = "pseudo-labelling") -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Label every session that neither `records` (recovered: a torn final line is cut) nor `skip` holds, and
    append each record as its batch finishes; the caller holds the records file's lock. Batches are the absolute
    positions k // batch_size of `sessions`, so a slice starting at a multiple of `batch_size` (a shard) asks the
    LLM exactly the batches a one-process run asks. Returns (the file's records by id, the run's figures)."""
    done = recover(records)
    skip = set(skip)
    pending = [k for k, s in enumerate(sessions) if s.id not in done and s.id not in skip]
    batches: dict[int, list[int]] = {}
    for k in pending:
        batches.setdefault(k // batch_size, []).append(k)
    started, fresh = time.time(), Counter()
    fd = os.open(records, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with tqdm(total=len(sessions), initial=len(sessions) - len(pending), desc=desc, unit="session",
                  disable=not progress, dynamic_ncols=True) as bar:
            for positions in batches.values():
                batch = label_batch([sessions[k] for k in positions])
                if len(batch) != len(positions):
                    raise RuntimeError("the labeller must return one record per session")
                for k, record in zip(positions, batch):
                    if record.get("id") != sessions[k].id:
                        raise RuntimeError(f"record for {record.get('id')!r} where {sessions[k].id!r} was expected")
                    _append(fd, record)
                    done[sessions[k].id] = record
                    fresh[record.get("status", "?")] += 1
                bar.update(len(positions))
                bar.set_postfix(kept=fresh[KEPT], labelled=sum(fresh.values()), refresh=False)
    finally:
        os.close(fd)
    elapsed = time.time() - started
    return done, run_figures(len(pending), len(sessions) - len(pending), elapsed)


def run_figures(labelled_now: int, resumed_from: int, elapsed: float) -> dict[str, Any]:
    """The `run` part of a summary: sessions labelled now and resumed, wall time, throughput."""
    return {"labelled_now": labelled_now, "resumed_from": resumed_from, "wall_time_s": round(elapsed, 2),
            "sessions_per_s": round(labelled_now / elapsed, 3) if labelled_now and elapsed > 0 else None}


def write_outputs(paths: Outputs, ordered: Sequence[dict[str, Any]], gold: Mapping[str, str] | None,
                  settings: Mapping[str, Any] | None, run: Mapping[str, Any] | None = None,
                  filtered: bool = False) -> dict[str, Any]:
    """Write the records (in the given order; rewritten atomically only when they differ), the kept sessions as a
    sessions file (last turn labelled) and the summary (JSON + Markdown); returns the summary. `filtered`: the kept
    status is a selection among answers (st_distill's confidence threshold), so the kept ones' precision is scored
    as self-consistency's is."""
    expected = b"".join(line_of(r) for r in ordered)
    paths.records.parent.mkdir(parents=True, exist_ok=True)
    if not paths.records.is_file() or paths.records.read_bytes() != expected:
        if paths.records.is_file():
            log.info("%s: rewriting in input order", paths.records)
        _atomic_write(paths.records, expected)
    kept = [{"id": r["id"], "turns": r["turns"]} for r in ordered if r.get("status") == KEPT]
    _atomic_write(paths.sessions, b"".join(line_of(r) for r in kept))
    summary = summarise(ordered, gold, settings, filtered=filtered)
    if run is not None:
        summary["run"] = dict(run)
    summary["files"] = {"records": str(paths.records), "sessions": str(paths.sessions)}
    _atomic_write(paths.summary_json, (json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n").encode())
    _atomic_write(paths.summary_md, (summary_markdown(summary) + "\n").encode("utf-8"))
    return summary


def read_records(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- summary
def _share(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def summarise(records: Sequence[dict[str, Any]], gold: Mapping[str, str] | None = None,
              settings: Mapping[str, Any] | None = None, filtered: bool = False) -> dict[str, Any]:
    """Counts, kept share and, with gold labels, precision without (first ordering) and with the vote (with the
    selection when `filtered`: the precision of the kept answers). Statuses beyond CLARA's are counted too."""
    n = len(records)
    statuses = Counter(r.get("status") for r in records)
    answers = Counter(a["status"] for r in records for a in r.get("answers", []))
    kept = statuses.get(KEPT, 0)
    n_orders = max((len(r.get("answers", [])) for r in records), default=0)
    summary: dict[str, Any] = {
        "prompt": (settings or {}).get("prompt"),
        "self_consistency": {"n": n_orders, "rule": (settings or {}).get("rule")},
        "sessions": n,
        "kept": kept,
        "kept_share": _share(kept, n),
        "session_statuses": {**{s: 0 for s in SESSION_STATUSES}, **{str(s): c for s, c in statuses.items()}},
        "answer_statuses": {s: answers.get(s, 0) for s in ANSWER_STATUSES},
        "precision": None,
        "settings": dict(settings or {}),
    }
    if gold:
        scored = [r for r in records if r["id"] in gold]
        base = [r for r in scored if r.get("base") is not None]
        with_sc = [r for r in scored if r.get("status") == KEPT]
        summary["precision"] = {
            "n_gold": len(scored),
            "without_sc": _share(sum(r["base"] == gold[r["id"]] for r in base), len(base)),
            "without_sc_answered": len(base),
            "with_sc": (_share(sum(r["intent"] == gold[r["id"]] for r in with_sc), len(with_sc))
                        if n_orders > 1 or filtered else None),
            "with_sc_kept": len(with_sc),
            "accuracy_without_sc": _share(sum(r["base"] == gold[r["id"]] for r in base), len(scored)),
        }
    return summary


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


TABLE4_HEADER = "| prompt | n | precision w/o SC | precision w/ SC | kept share (SC) | answered w/o SC |"


def table4_rows(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Rows of the paper's Table 4 layout (one per prompt) from pseudo-labelling summaries."""
    rows = []
    for s in summaries:
        p = s.get("precision") or {}
        sc = s.get("self_consistency", {})
        kept = _pct(s.get("kept_share")) if sc.get("n", 0) > 1 else "–"
        answered = _share(p.get("without_sc_answered", 0), p.get("n_gold", 0)) if p else None
        rows.append(f"| {s.get('prompt')} | {s.get('sessions')} | {_pct(p.get('without_sc'))} | "
                    f"{_pct(p.get('with_sc'))} | {kept} | {_pct(answered)} |")
    return rows


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """A human summary: the Table-4 row and the status counts."""
    sc = summary["self_consistency"]
    counts = (f"Sessions {summary['sessions']}, kept {summary['kept']} ({_pct(summary.get('kept_share'))} %), "
              f"self-consistency n={sc['n']} rule={sc['rule']}.")
    lines = [f"# Pseudo-labelling summary ({summary.get('prompt')})", "", TABLE4_HEADER, "|---|---|---|---|---|---|",
             *table4_rows([summary]), "", counts, "",
             "| session status | count |", "|---|---|",
             *(f"| {k} | {v} |" for k, v in summary["session_statuses"].items()), "",
             "| answer status | count |", "|---|---|",
             *(f"| {k} | {v} |" for k, v in summary["answer_statuses"].items())]
    if summary.get("precision") is None:
        lines += ["", "No gold labels: precision not measured."]
    return "\n".join(lines)


def table4_markdown(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Table 4 (precision of the pseudo-labels with and without self-consistency) for several prompts."""
    return "\n".join([TABLE4_HEADER, "|---|---|---|---|---|---|", *table4_rows(summaries)])
