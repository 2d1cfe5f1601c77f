"""Reliability of the openai backend against a real, misbehaving OpenAI-compatible server on loopback.

The server (started here, 127.0.0.1, an ephemeral port) answers chat completions; the first attempt of most
prompts misbehaves (a 500, a 429 with Retry-After, a body that is not JSON, a 200 without choices, a response
slower than the client's timeout), later attempts succeed; prompts of "poisoned" sessions always get a 503.
The run must finish, retry the transient failures, count the permanent ones as failed, lose no session.
Like vLLM, the server honours guided choice (`structured_outputs: {choice: [...]}` or the older `guided_choice`):
its answer is then one of the offered choices (picked by a hash of the prompt), unless told to ignore the field.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from mtic.clara.labeler import SessionLabeler
from mtic.clara.llm import AnswerCache, CachedLLM, LLMRequest
from mtic.clara.llm.openai_backend import OpenAILLM
from mtic.clara.prompts import PromptTemplate
from mtic.clara.pseudo_label import pseudo_label, read_records
from mtic.clara.retrieval import DemoIndex, Retriever
from mtic.data.schema import Session, Turn

FAULTS = ("ok", "http500", "http429", "not_json", "no_choices", "slow", "garbage_text", "empty")
CLIENT_TIMEOUT_S = 0.4
SLOW_S = 1.2
MAX_RETRIES = 3
TEMPLATE = PromptTemplate(name="t", template="{demos}\nLabels: {labels}\nQ: {query}", demo="{text} => {answer}")
LABELS = {"cancel": "Cancel Order", "refund": "Refund Status", "track": "Track Parcel"}


class Handler(BaseHTTPRequestHandler):
    server: FaultyServer

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        user = body["messages"][-1]["content"]
        key = hashlib.sha256(user.encode()).hexdigest()
        with self.server.lock:
            attempt = self.server.attempts[key]
            self.server.attempts[key] += 1
            self.server.total += 1
        assert self.headers.get("authorization") == "Bearer sk-test-secret"
        if "poison" in user:
            with self.server.lock:
                self.server.poisoned.add(key)
            return self._send(503, b'{"error": {"message": "overloaded"}}')
        forced = re.search(r"fault=(\w+)", user)
        fault = (forced.group(1) if forced else FAULTS[int(key, 16) % len(FAULTS)]) if attempt == 0 else "ok"
        if fault == "http500":
            return self._send(500, b'{"error": {"message": "boom"}}')
        if fault == "http429":
            return self._send(429, b'{"error": {"message": "slow down"}}', {"retry-after": "0.05"})
        if fault == "not_json":
            return self._send(200, b"<html>502 bad gateway</html>{{{")
        if fault == "no_choices":
            return self._send(200, json.dumps({"id": "x", "object": "chat.completion"}).encode())
        if fault == "slow":
            time.sleep(SLOW_S)
        labels = re.search(r"Labels: (.*)", user).group(1).split("; ")
        content = {"garbage_text": "¯\\_(ツ)_/¯ no idea", "empty": ""}.get(fault, labels[0])
        choices = self._guided_choices(body)
        if choices and self.server.honours_guided:  # constrained decoding: only an offered answer can come out
            content = choices[int(key, 16) % len(choices)]
        elif choices:  # the field ignored: a chat model's free answer
            content = f"The intent is: {content}."
        payload = {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        self._send(200, json.dumps(payload).encode())

    def _guided_choices(self, body):
        """The closed answer set of a request (either vLLM form), counted by the field that carried it."""
        for field, choices in (("structured_outputs", (body.get("structured_outputs") or {}).get("choice")),
                               ("guided_choice", body.get("guided_choice"))):
            if choices is not None:
                with self.server.lock:
                    self.server.guided[field] += 1
                return choices
        return None

    def _send(self, status, body, headers=None):
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass


class FaultyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.total = 0
        self.poisoned: set[str] = set()
        self.guided: Counter[str] = Counter()
        self.honours_guided = True


@pytest.fixture
def server():
    srv = FaultyServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _backend(server, monkeypatch, **options) -> OpenAILLM:
    monkeypatch.setenv("MTIC_TEST_KEY", "sk-test-secret")
    return OpenAILLM(model="fake-model", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                     api_key_env="MTIC_TEST_KEY", max_concurrency=4, timeout_s=CLIENT_TIMEOUT_S, max_retries=MAX_RETRIES,
                     backoff_base_s=0.01, backoff_max_s=0.1, **options)


def _embed(texts, kind="query"):
    rng = [np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16)).normal(size=16) for t in texts]
    return np.stack(rng)


def test_backend_retries_and_fails_cleanly(server, monkeypatch, caplog):
    llm = _backend(server, monkeypatch)
    requests = [LLMRequest("", f"x => Cancel Order\nLabels: Cancel Order; Refund Status\nQ: q{k} fault={FAULTS[k % 6]}")
                for k in range(16)]
    requests.append(LLMRequest("", "Labels: Cancel Order\nQ: poison"))
    started = time.time()
    answers = llm.complete(requests)
    assert len(answers) == len(requests)
    assert all(a.ok for a in answers[:-1])  # every transient fault was retried away
    poisoned = answers[-1]
    assert poisoned.status == "failed" and poisoned.error == "http_503" and poisoned.attempts == MAX_RETRIES + 1
    stats = llm.stats.snapshot()
    assert stats["failed"] == 1
    for error in ("error_http_500", "error_http_429", "error_garbage", "error_timeout", "error_http_503"):
        assert stats[error] >= 1, error
    assert stats["error_garbage"] >= 2 * (16 // 6)  # not JSON, and JSON without choices
    assert stats["retries"] == sum(v for k, v in stats.items() if k.startswith("error_")) - 1  # last 503 not retried
    assert server.total <= len(requests) * (MAX_RETRIES + 1)
    assert time.time() - started < 20
    assert "sk-test-secret" not in caplog.text


def test_pseudo_labelling_run_survives_a_faulty_server(server, monkeypatch, tmp_path, caplog):
    texts = ["cancel my order", "i want to cancel", "where is my refund", "refund not in yet", "where is my parcel"]
    intents = ["cancel", "cancel", "refund", "refund", "track"]
    retriever = Retriever(DemoIndex(texts, intents, _embed), _embed, k=2, max_demos=3)
    llm = CachedLLM(_backend(server, monkeypatch), AnswerCache(tmp_path / "cache.sqlite"))
    labeler = SessionLabeler(retriever, TEMPLATE, LABELS, llm, n_orders=3)
    sessions = [Session(f"s{k}", (Turn(f"hello {k}"), Turn(texts[k % len(texts)] + f" #{k}"))) for k in range(12)]
    sessions += [Session("bad1", (Turn("poison pill"),)), Session("bad2", (Turn("hi"), Turn("poison again")))]
    out = tmp_path / "pl.jsonl"
    summary = pseudo_label(sessions, labeler.label, out, batch_size=4, progress=False)
    records = read_records(out)
    assert [r["id"] for r in records] == [s.id for s in sessions]  # nothing lost, input order
    statuses = summary["answer_statuses"]
    assert statuses["failed"] == 6  # 2 poisoned sessions x 3 orderings, counted, not raised
    assert sum(statuses.values()) == 3 * len(sessions)
    assert {r["status"] for r in records if r["id"].startswith("bad")} == {"no_answer"}
    assert statuses["garbage"] + statuses["unmatched"] + statuses["empty"] >= 1  # odd answers are counted
    assert summary["sessions"] == len(sessions)
    # a re-run asks the server only for what failed before (answers of successful prompts are cached)
    before = server.total
    out2 = tmp_path / "pl2.jsonl"
    pseudo_label(sessions, labeler.label, out2, batch_size=4, progress=False)
    assert 0 < len(server.poisoned) <= 6  # identical prompts (a random order equal to another) are sent once
    assert server.total - before == len(server.poisoned) * (MAX_RETRIES + 1)
    assert out.read_bytes() == out2.read_bytes()
    assert "sk-test-secret" not in caplog.text and "sk-test-secret" not in out.read_text()


# --------------------------------------------------------------------------- decode=score: vLLM guided choice
def _pick(request: LLMRequest) -> int:
    """The choice the server's constrained decoding makes for a request (see Handler)."""
    return int(hashlib.sha256(request.user.encode()).hexdigest(), 16) % len(request.choices)


@pytest.mark.parametrize("param", ["structured_outputs", "guided_choice"])
def test_score_mode_sends_the_closed_set_and_reads_the_chosen_index(server, monkeypatch, param):
    llm = _backend(server, monkeypatch, mode="score", choice_param=param)
    choices = tuple(LABELS.values())
    requests = [LLMRequest("", f"x => Cancel Order\nLabels: {'; '.join(choices)}\nQ: q{k}", choices=choices)
                for k in range(12)]
    answers = llm.complete(requests)  # first attempts misbehave as in free generation: retried alike
    assert set(server.guided) == {param} and server.guided[param] >= len(requests)
    assert [a.choice for a in answers] == [_pick(r) for r in requests]
    assert all(a.ok and a.text == choices[a.choice] for a in answers)
    assert len({a.choice for a in answers}) > 1  # the server's choice, not a default
    assert llm.params["decode"] == "score"  # answers cached apart from free generation's


def test_score_labelling_against_a_server_and_one_that_ignores_guided_choice(server, monkeypatch, tmp_path, caplog):
    texts = ["cancel my order", "where is my refund", "where is my parcel"]
    retriever = Retriever(DemoIndex(texts, list(LABELS), _embed), _embed, k=2, max_demos=3)
    cache = AnswerCache(tmp_path / "cache.sqlite")
    sessions = [Session(f"s{k}", (Turn(f"hi {k} fault=ok"), Turn(texts[k % 3]))) for k in range(6)]

    server.honours_guided = False  # an OpenAI-compatible server without guided choice: free text comes back
    llm = CachedLLM(_backend(server, monkeypatch, mode="score"), cache)
    ignored = pseudo_label(sessions, SessionLabeler(retriever, TEMPLATE, LABELS, llm, n_orders=1).label,
                           tmp_path / "ignored.jsonl", batch_size=3, progress=False)
    assert ignored["answer_statuses"]["failed"] == len(sessions)  # never silently read as free text
    assert llm.stats.snapshot()["error_not_in_choices"] == len(sessions)
    assert "outside the closed answer set" in caplog.text and len(cache) == 0  # nothing cached

    server.honours_guided = True
    llm = CachedLLM(_backend(server, monkeypatch, mode="score"), cache)
    labeler = SessionLabeler(retriever, TEMPLATE, LABELS, llm, n_orders=1)
    summary = pseudo_label(sessions, labeler.label, tmp_path / "pl.jsonl", batch_size=3, progress=False)
    records = read_records(tmp_path / "pl.jsonl")
    assert summary["answer_statuses"]["ok"] == len(sessions)
    assert {a["method"] for r in records for a in r["answers"]} == {"score"}
    assert all(LABELS[r["base"]] == r["answers"][0]["text"] for r in records)  # the intent the server chose
    assert len({r["base"] for r in records}) > 1
