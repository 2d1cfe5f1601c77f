"""The HTTP intent service over real HTTP on loopback: good and bad requests, limits, non-Latin text, load."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from test_deploy_export import make_tiny_export

from mtic.deploy.batching import MicroBatcher
from mtic.deploy.predictor import IntentClassifier
from mtic.deploy.service import create_app
from mtic.deploy.settings import ServiceSettings

LIMITS = {"max_turns": 8, "max_chars": 200, "max_batch": 4, "max_body_bytes": 20_000, "max_top_k": 10}
NON_LATIN = [["我的包裹在哪裡？已經兩個星期了。"], ["พัสดุของฉันอยู่ที่ไหน", "ยังไม่ได้รับเลย"], ["Gói hàng của tôi ở đâu?"],
             ["أين طردي؟"], ["Где моя посылка?"], ["小包はどこですか 😊 👍"], ["Straße ﬁ Ünïcödé \u200b\t\n ok"]]


@contextlib.contextmanager
def serving(config: uvicorn.Config) -> Iterator[tuple[str, int]]:
    """A real uvicorn server for `config` (port 0: a free loopback port), in a thread; yields (base URL, port)."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextlib.contextmanager
def running(app: object) -> Iterator[str]:
    """`app` served on a free loopback port; yields its base URL."""
    with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")) as (url, _):
        yield url


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_export(tmp_path_factory.mktemp("service"))


@pytest.fixture(scope="module")
def classifier(export_dir: Path) -> IntentClassifier:
    return IntentClassifier.load(export_dir, threads=1)


@pytest.fixture(scope="module", params=[False, True], ids=["direct", "micro_batching"])
def server(request: pytest.FixtureRequest, classifier: IntentClassifier) -> Iterator[tuple[str, object]]:
    app = create_app(classifier, ServiceSettings(**LIMITS, batching=request.param, batch_wait_ms=3))
    with running(app) as url:
        yield url, app


def post(url: str, body: object = None, content: object = None, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/intents", json=body, content=content, headers=headers, timeout=30)


def test_health_and_model_card(server: tuple[str, object]) -> None:
    url, _ = server
    health = httpx.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = httpx.get(f"{url}/v1/model", timeout=10).json()
    assert info["intents"] == 4 and len(info["intent_list"]) == 4 and info["markets"] == ["sg"]
    assert info["parity"]["fp32"]["argmax_agreement"] == 1.0 and info["version"] == health.json()["model"]
    assert info["precision"] == "int8" and info["limits"]["max_turns"] == 8


def test_good_requests(server: tuple[str, object], classifier: IntentClassifier) -> None:
    url, _ = server
    queries = ["i want to cancel", "is it done?"]
    single = post(url, {"queries": queries})
    assert single.status_code == 200, single.text
    pred = single.json()["prediction"]
    assert pred == classifier.predict(queries).to_json()  # the service answers what the library answers
    assert set(pred) == {"intent", "title", "path", "probability", "levels", "top_k"}
    batch = post(url, {"sessions": [{"id": "a", "queries": queries}, {"queries": ["where is my parcel"]}], "top_k": 2})
    assert batch.status_code == 200, batch.text
    preds = batch.json()["predictions"]
    assert len(preds) == 2 and preds[0]["id"] == "a" and "id" not in preds[1]
    library = [p.to_json() for p in classifier.predict_batch([queries, ["where is my parcel"]], top_k=2)]
    assert [{k: v for k, v in p.items() if k != "id"} for p in preds] == library  # the library's batch answer
    assert len(preds[1]["top_k"]) == 2


def test_non_latin_scripts(server: tuple[str, object]) -> None:
    url, _ = server
    for queries in NON_LATIN:
        response = post(url, {"queries": queries})
        assert response.status_code == 200, (queries, response.text)
        assert response.json()["prediction"]["intent"]
    response = post(url, {"sessions": [{"queries": q} for q in NON_LATIN[:4]]})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 4


@pytest.mark.parametrize(("body", "needle"), [
    ({"queries": []}, "at least 1"),
    ({"queries": [""]}, "at least 1 character"),
    ({"queries": ["   \n"]}, "blank"),
    ({"sessions": []}, "at least 1"),
    ({}, "exactly one"),
    ({"queries": ["a"], "sessions": [{"queries": ["b"]}]}, "exactly one"),
    ({"queries": "where is my parcel"}, "valid list"),
    ({"queries": [1, 2]}, "valid string"),
    ({"queries": ["a"], "extra": 1}, "extra"),
    ({"queries": ["a"], "top_k": 0}, "top_k"),
    ({"queries": ["a"], "top_k": 11}, "top_k"),
    ({"queries": ["q"] * 9}, "at most 8"),
    ({"queries": ["x" * 201]}, "at most 200 characters"),
    ({"sessions": [{"queries": ["a"]}] * 5}, "at most 4"),
    ({"sessions": [{"queries": []}]}, "sessions.0.queries"),
    ([], "JSON object"),
], ids=["empty", "empty_text", "blank", "empty_batch", "neither", "both", "string", "ints", "extra_field",
        "top_k_0", "top_k_big", "turns", "chars", "batch", "empty_session", "array"])
def test_bad_input_is_422_with_a_message(server: tuple[str, object], body: object, needle: str) -> None:
    url, _ = server
    response = post(url, body)
    assert response.status_code == 422, response.text
    assert needle in response.json()["message"], response.json()


def test_malformed_and_oversized_bodies(server: tuple[str, object]) -> None:
    url, _ = server
    json_header = {"content-type": "application/json"}
    nested = b'{"queries": ' + b"[" * 5000 + b"]" * 5000 + b"}"  # recursion in the JSON parser
    for raw in (b'{"queries": [', b"not json", b'{"queries": ["\xff\xfe"]}', b"", nested, b'{"top_k": 1e999}'):
        response = post(url, content=raw, headers=json_header)
        assert response.status_code == 422, (raw, response.text)
        assert response.json()["error"] == "invalid request"
    malformed = post(url, content=b'{"queries": [', headers=json_header).json()["message"]
    assert malformed.startswith("malformed JSON")
    surrogate = post(url, content=b'{"queries": ["\\ud800 hi"]}', headers=json_header)
    assert surrogate.status_code == 422 and "unicode" in surrogate.json()["message"].lower()
    plain = post(url, content=b'{"queries": ["a"]}', headers={"content-type": "text/plain"})
    assert plain.status_code == 422
    big = post(url, content=b'{"queries": ["' + b"a" * 30_000 + b'"]}', headers=json_header)
    assert big.status_code == 413 and "20000 bytes" in big.json()["error"]
    chunks = iter([b'{"queries": ["', b"a" * 15_000, b"a" * 15_000, b'"]}'])  # no Content-Length: counted
    streamed = post(url, content=chunks, headers=json_header)
    assert streamed.status_code == 413 and "20000 bytes" in streamed.json()["error"]
    assert "empty" in post(url, content=b"", headers=json_header).json()["message"]
    assert httpx.get(f"{url}/v1/intents", timeout=10).status_code == 405
    assert httpx.get(f"{url}/nope", timeout=10).status_code == 404


def test_load_200_concurrent_requests(server: tuple[str, object]) -> None:
    """200 concurrent requests (singles, batches, a few bad ones): all answered, no 5xx, in bounded time."""
    url, app = server
    bodies: list[object] = []
    for k in range(200):
        if k % 20 == 7:
            bodies.append({"queries": []})  # bad input inside the load: 422, never 5xx
        elif k % 5 == 0:
            bodies.append({"sessions": [{"queries": ["where is my parcel", f"still nothing {k}"]},
                                        {"queries": NON_LATIN[k % len(NON_LATIN)]}]})
        else:
            bodies.append({"queries": ["cancel my order", f"and the money? #{k}"]})

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/v1/intents", json=b) for b in bodies))

    start = time.perf_counter()
    responses = asyncio.run(main())
    elapsed = time.perf_counter() - start
    codes = [r.status_code for r in responses]
    assert len(codes) == 200 and not [c for c in codes if c >= 500]
    assert codes.count(422) == 10 and codes.count(200) == 190
    assert elapsed < 60
    batcher = app.state.engine.batcher
    if batcher is not None:  # concurrent requests shared model calls
        assert batcher.calls < 190


def test_micro_batcher_groups_and_isolates_errors() -> None:
    from concurrent.futures import ThreadPoolExecutor

    calls: list[int] = []

    def fn(sessions: list) -> list:
        calls.append(len(sessions))
        if any(s == ["boom"] for s in sessions):
            raise RuntimeError("boom")
        return [s[-1].upper() for s in sessions]

    async def main() -> tuple[list, list]:
        batcher = MicroBatcher(fn, ThreadPoolExecutor(1), max_sessions=4, wait_ms=20)
        await batcher.start()
        ok = await asyncio.gather(*(batcher.submit([[f"q{k}"]]) for k in range(6)), batcher.submit([["a"]] * 5))
        bad = await asyncio.gather(batcher.submit([["boom"]]), return_exceptions=True)
        await batcher.stop()
        return ok, bad

    ok, bad = asyncio.run(main())
    assert ok[:6] == [[f"Q{k}"] for k in range(6)] and ok[6] == ["A"] * 5
    assert max(calls[:-1]) <= 5 and len(calls) < 8  # grouped; a request above max_sessions runs alone
    assert isinstance(bad[0], RuntimeError)


def test_mtic_serve_command(export_dir: Path) -> None:
    """`mtic serve` end to end in a subprocess (micro-batching on)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "mtic.cli", "serve", str(export_dir), "--port", str(port), "--threads", "1",
           "--batching", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, ok = time.time() + 60, False
        while time.time() < deadline and proc.poll() is None and not ok:
            with contextlib.suppress(httpx.HTTPError):
                ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            time.sleep(0.1)
        assert ok, proc.stdout.read().decode() if proc.poll() is not None else "no answer"
        response = httpx.post(f"http://127.0.0.1:{port}/v1/intents", json={"queries": ["where is my parcel"]})
        assert response.status_code == 200 and response.json()["prediction"]["intent"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
