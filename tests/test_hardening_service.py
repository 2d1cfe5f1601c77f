"""Issue 22, group 9: the HTTP service under slow and hostile clients, over real HTTP on loopback.

Read timeouts (slow head, slow body, stalled connection: closed within a bound), /docs and /openapi.json off by
default, strict request types, the right 422 reason for deeply nested JSON and huge integers, no absolute paths
in /v1/model, no query strings in the access log. Every socket loop is bounded (count and socket timeout)."""
from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_deploy_export import make_tiny_export
from test_deploy_service import serving

from mtic.deploy.predictor import IntentClassifier
from mtic.deploy.service import create_app, public, server_config
from mtic.deploy.settings import ServiceSettings

HEAD_S, BODY_S = 0.6, 0.8  # short read timeouts: each slow-client test ends within a few seconds
BOUND_S = 4.0  # a slow or stalled connection must be closed within this


@contextlib.contextmanager
def running(classifier: IntentClassifier, **settings: object) -> Iterator[tuple[str, int]]:
    """The service as `mtic serve` runs it (server_config), on a free loopback port in a thread."""
    s = ServiceSettings(header_timeout_s=HEAD_S, body_timeout_s=BODY_S, keep_alive_s=1.0, **settings)
    with serving(server_config(create_app(classifier, s), s, "127.0.0.1", 0, "warning")) as served:
        yield served


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_export(tmp_path_factory.mktemp("hardening_service"))


@pytest.fixture(scope="module")
def classifier(export_dir: Path) -> IntentClassifier:
    return IntentClassifier.load(export_dir, threads=1)


@pytest.fixture(scope="module")
def service(classifier: IntentClassifier) -> Iterator[tuple[str, int]]:
    with running(classifier) as served:
        yield served


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded by `deadline`)."""
    data = b""
    for _ in range(1000):
        sock.settimeout(max(0.05, deadline - time.time()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            raise AssertionError(f"connection still open after the bound; got {data!r}") from None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("server kept sending")


def _dribble(sock: socket.socket, pieces: list[bytes], pause: float, deadline: float) -> bool:
    """Send `pieces` slowly; False once the server has closed the connection."""
    for piece in pieces:
        if time.time() > deadline:
            return True
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return False
        time.sleep(pause)
    return True


def test_stalled_connection_is_closed(service: tuple[str, int]) -> None:
    _, port = service
    start = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as sock:
        data = _read_until_closed(sock, start + BOUND_S)  # sends nothing at all
    assert data == b""  # nothing was asked: closed without an answer
    assert HEAD_S * 0.8 <= time.time() - start < BOUND_S


def test_slow_header_is_408_and_closed(service: tuple[str, int]) -> None:
    _, port = service
    start = time.time()
    pieces = [b"POST /v1/intents HTTP/1.1\r\nHost: x\r\n"] + [b"X-Slow: %d\r\n" % k for k in range(40)]
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as sock:
        _dribble(sock, pieces, 0.1, start + BOUND_S)  # a header line every 0.1 s, forever: a deadline, not idle
        data = _read_until_closed(sock, start + BOUND_S + 1)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert time.time() - start < BOUND_S + 1


def test_slow_body_is_408_and_closed(service: tuple[str, int]) -> None:
    _, port = service
    start = time.time()
    head = b"POST /v1/intents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as sock:
        _dribble(sock, [head] + [b" "] * 40, 0.1, start + BOUND_S)
        data = _read_until_closed(sock, start + BOUND_S + 1)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"body" in data
    assert time.time() - start < BOUND_S + 1


def test_stalled_body_is_closed(service: tuple[str, int]) -> None:
    _, port = service
    start = time.time()
    head = b"POST /v1/intents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as sock:
        sock.sendall(head)
        data = _read_until_closed(sock, start + BOUND_S)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert BODY_S * 0.8 <= time.time() - start < BOUND_S


def test_normal_and_keep_alive_requests_still_work(service: tuple[str, int]) -> None:
    url, _ = service
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(3):  # the same connection, past the header timeout in total
            response = client.post("/v1/intents", json={"queries": ["where is my parcel"]})
            assert response.status_code == 200, response.text
            time.sleep(HEAD_S / 2)


def test_docs_are_off_by_default_and_a_flag_turns_them_on(service: tuple[str, int],
                                                          classifier: IntentClassifier) -> None:
    url, _ = service
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 404, path
    with running(classifier, docs=True) as (docs_url, _):
        assert httpx.get(f"{docs_url}/docs", timeout=10).status_code == 200
        assert httpx.get(f"{docs_url}/openapi.json", timeout=10).json()["paths"]["/v1/intents"]


@pytest.mark.parametrize("body, needle", [
    ({"queries": ["a"], "top_k": "3"}, "top_k: Input should be a valid integer"),
    ({"queries": ["a"], "top_k": True}, "top_k: Input should be a valid integer"),
    ({"queries": ["a"], "top_k": 3.0}, "top_k: Input should be a valid integer"),
    ({"sessions": [{"id": 7, "queries": ["a"]}]}, "sessions.0.id"),
    ({"queries": ["a", True]}, "queries.1"),
], ids=["top_k_string", "top_k_true", "top_k_float", "id_int", "query_bool"])
def test_types_are_strict(service: tuple[str, int], body: object, needle: str) -> None:
    url, _ = service
    response = httpx.post(f"{url}/v1/intents", json=body, timeout=10)
    assert response.status_code == 422, response.text
    assert needle in response.json()["message"], response.json()


@pytest.mark.parametrize("raw, needle", [
    (b'{"queries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"queries": ["a"], "top_k": ' + b"9" * 5000 + b"}", "integer with too many digits"),
    (b'{"queries": ["\xff\xfe"]}', "not UTF-8"),
    (b'{"queries": [', "malformed JSON: "),
], ids=["nested", "huge_int", "not_utf8", "truncated"])
def test_malformed_json_gets_the_right_reason(service: tuple[str, int], raw: bytes, needle: str) -> None:
    url, _ = service
    response = httpx.post(f"{url}/v1/intents", content=raw, headers={"content-type": "application/json"},
                          timeout=10)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith("malformed JSON") and needle in message, message
    if needle != "not UTF-8":
        assert "UTF-8" not in message


def test_model_card_shows_no_absolute_path(service: tuple[str, int], export_dir: Path) -> None:
    url, _ = service
    text = httpx.get(f"{url}/v1/model", timeout=10).text
    root = str(export_dir.parent)
    assert root not in text and str(Path.home()) not in text

    def strings(value: object) -> Iterator[str]:
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    card = httpx.get(f"{url}/v1/model", timeout=10).json()
    assert not [s for s in strings(card) if s.startswith(("/", "~"))]
    assert card["source_checkpoint"]["path"] == "best.ckpt" and len(card["source_checkpoint"]["sha256"]) == 64
    assert public({"a": ["/home/u/x/m.ckpt", "C:\\Users\\u\\m.onnx", "~/m", "rel/ok", "tiny-bert"]}) == \
        {"a": ["m.ckpt", "m.onnx", "m", "rel/ok", "tiny-bert"]}


def test_access_log_has_no_query_string(service: tuple[str, int]) -> None:
    url, _ = service
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger, handler = logging.getLogger("mtic.service.access"), Keep()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert httpx.get(f"{url}/healthz?token=SECRET-TOKEN-1", timeout=10).status_code == 200
        httpx.post(f"{url}/v1/intents?api_key=SECRET-TOKEN-2", json={"queries": ["x"]}, timeout=10)
        deadline = time.time() + 5
        while len(records) < 2 and time.time() < deadline:
            time.sleep(0.02)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [r.getMessage() for r in records]
    assert any('"GET /healthz HTTP/1.1" 200' in line for line in lines), lines
    assert any('"POST /v1/intents HTTP/1.1" 200' in line for line in lines), lines
    assert not [line for line in lines if "SECRET" in line or "?" in line]
