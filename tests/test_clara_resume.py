"""Pseudo-labelling survives kill -9: the restarted run skips finished sessions and its final file equals an
uninterrupted run's, byte for byte (local backend: tiny-llama in score mode, slowed down so the kill lands
mid-run)."""
from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mtic.clara.pseudo_label import Outputs, read_records, recover

N_SESSIONS = 18
SCRIPT = textwrap.dedent('''
    import sys, time
    import numpy as np
    from mtic.clara.labeler import SessionLabeler
    from mtic.clara.llm import AnswerCache, CachedLLM
    from mtic.clara.llm.local import LocalLLM
    from mtic.clara.prompts import PromptTemplate
    from mtic.clara.pseudo_label import pseudo_label
    from mtic.clara.retrieval import DemoIndex, Retriever
    from mtic.data.schema import Session, Turn

    TEXTS = ["cancel my order", "i want to cancel", "where is my refund", "refund not in yet", "where is my parcel",
             "track my package", "is my cancellation done", "cancel request status?"]
    INTENTS = ["cancel", "cancel", "refund", "refund", "track", "track", "cancel_status", "cancel_status"]
    LABELS = {"cancel": "Cancel Order", "refund": "Refund Status", "track": "Track Parcel", "cancel_status": "Cancel Status"}

    def embed(texts, kind="query"):
        return np.stack([np.bincount([ord(c) % 32 for c in t], minlength=32).astype(float) + 0.1 for t in texts])

    class Slow:
        """Sleeps before each batch, so that a kill lands in the middle of the run."""
        def __init__(self, inner, delay):
            self.inner, self.delay, self.mode, self.stats = inner, delay, inner.mode, inner.stats
        identity = property(lambda self: self.inner.identity)
        params = property(lambda self: self.inner.params)
        def complete(self, requests):
            time.sleep(self.delay)
            return self.inner.complete(requests)

    def main(out, cache, delay, n_sessions, threads=None):
        llm = CachedLLM(Slow(LocalLLM("tiny-llama", mode="score", batch_size=4, num_threads=threads), delay), AnswerCache(cache))
        retriever = Retriever(DemoIndex(TEXTS, INTENTS, embed), embed, k=2, max_demos=4)
        template = PromptTemplate(name="t", template="{demos}\\nSession:\\n{session}\\nLabels: {labels}")
        labeler = SessionLabeler(retriever, template, LABELS, llm, n_orders=3, seed=7)
        sessions = [Session(f"s{k:02d}", tuple(Turn(TEXTS[(k * 3 + j) % 8]) for j in range(1 + k % 3)))
                    for k in range(n_sessions)]
        gold = {s.id: INTENTS[TEXTS.index(s.turns[-1].text)] for s in sessions}
        return pseudo_label(sessions, labeler.label, out, batch_size=3, gold=gold, settings=labeler.settings(),
                            progress=False)

    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), threads=1)
''')


def _run(script: Path, out: Path, cache: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, str(script), str(out), str(cache), str(delay), str(N_SESSIONS)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_then_resume_gives_the_same_file(tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:
        _kill_and_resume(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _kill_and_resume(tmp_path: Path) -> None:
    script = tmp_path / "label.py"
    script.write_text(SCRIPT, encoding="utf-8")
    reference = tmp_path / "ref" / "pl.jsonl"
    summary = runpy.run_path(str(script))["main"](str(reference), str(tmp_path / "ref.sqlite"), 0.0, N_SESSIONS, 1)
    assert summary["sessions"] == N_SESSIONS and summary["run"]["resumed_from"] == 0

    out = tmp_path / "run" / "pl.jsonl"
    proc = _run(script, out, tmp_path / "run.sqlite", delay=0.4)
    deadline = time.time() + 60
    while time.time() < deadline and len(recover(out)) < 3:  # killed once a few batches are written
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    done_at_kill = len(recover(out))
    assert 3 <= done_at_kill < N_SESSIONS
    with out.open("ab") as handle:  # as if killed in the middle of writing a line
        handle.write(b'{"answers": [{"intent": "cancel", "meth')

    resumed = runpy.run_path(str(script))["main"](str(out), str(tmp_path / "run.sqlite"), 0.0, N_SESSIONS, 1)  # restart

    assert out.read_bytes() == reference.read_bytes()
    assert Outputs.of(out).sessions.read_bytes() == Outputs.of(reference).sessions.read_bytes()
    ids = [r["id"] for r in read_records(out)]
    assert ids == sorted(ids) and len(ids) == N_SESSIONS  # no duplicate, no gap, input order
    assert resumed["run"]["resumed_from"] == done_at_kill
    assert resumed["precision"] == summary["precision"]
