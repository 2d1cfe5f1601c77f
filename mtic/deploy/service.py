"""The HTTP intent service (FastAPI + uvicorn).

    POST /v1/intents   {"queries": [...], "top_k"?: int}                 -> {"model", "prediction"}
                       {"sessions": [{"id"?: str, "queries": [...]}, ...]} -> {"model", "predictions"}
    GET  /healthz      liveness
    GET  /v1/model     model card: intents, markets, export parity, version, limits

Input is bounded (`ServiceSettings`): too many turns / characters / sessions, empty or blank queries, text that
is not valid Unicode and malformed JSON get a 422 whose `message` names the problem; bodies over
`max_body_bytes` get a 413. Bad input never causes a 5xx. Request bodies are never logged. Inference runs on one
worker thread (the model uses the cores itself); with `batching` concurrent requests share model calls.

Hardening: types are strict (`"top_k": "3"` or `true` is a 422, not a coercion); a body nested too deeply or
holding an integer too long to parse gets a 422 saying so; slow or stalled clients are cut off by read timeouts
(`server_config`: a complete head within `header_timeout_s`, the body within `body_timeout_s`); /docs, /redoc
and /openapi.json are off unless `docs`; /v1/model shows file names, never absolute paths; the access log
(logger `mtic.service.access`) records method, path and status, never query strings or bodies.
"""
import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from mtic.deploy.batching import MicroBatcher
from mtic.deploy.predictor import IntentClassifier, decode
from mtic.deploy.settings import ServiceSettings

log = logging.getLogger("mtic.service")
access_log = logging.getLogger("mtic.service.access")
BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 for bodies json.loads cannot decode


def request_model(s: ServiceSettings) -> type[BaseModel]:
    """The pydantic request model with the limits of `s`."""
    QueryText = Annotated[str, StringConstraints(min_length=1, max_length=s.max_chars)]
    QueryList = Annotated[list[QueryText], Field(min_length=1, max_length=s.max_turns)]

    def check(values: list[str]) -> list[str]:
        for k, text in enumerate(values):
            if not text.strip():
                raise ValueError(f"query {k} is blank")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ValueError(f"query {k} is not valid Unicode text (lone surrogate)") from err
        return values

    class SessionIn(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: "3" is not 3, true is not 1
        id: Annotated[str, StringConstraints(max_length=200)] | None = None
        queries: QueryList

        _check = field_validator("queries")(check)

    class IntentRequest(BaseModel):
        """Exactly one of `queries` (one session, oldest first) or `sessions` (a batch)."""

        model_config = ConfigDict(extra="forbid", strict=True)
        queries: QueryList | None = None
        sessions: Annotated[list[SessionIn], Field(min_length=1, max_length=s.max_batch)] | None = None
        top_k: Annotated[int, Field(ge=1, le=s.max_top_k)] | None = None

        @field_validator("queries")
        @classmethod
        def _queries(cls, values: list[str] | None) -> list[str] | None:
            return None if values is None else check(values)

        @model_validator(mode="after")
        def _one_of(self) -> "IntentRequest":
            if (self.queries is None) == (self.sessions is None):
                raise ValueError("give exactly one of 'queries' (one session) or 'sessions' (a batch)")
            return self

    return IntentRequest


def _location(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _error_message(errors: Sequence[dict[str, Any]]) -> str:
    out = []
    for e in errors[:5]:
        if e.get("type") == "json_invalid":
            out.append(f"malformed JSON: {(e.get('ctx') or {}).get('error', e.get('msg'))}")
        elif tuple(e.get("loc", ())) == ("body",) and e.get("type") in ("missing", "model_attributes_type"):
            out.append('the body must be a JSON object such as {"queries": ["..."]}' + (
                " (it is empty)" if e.get("type") == "missing" else ""))
        else:
            out.append(f"{_location(e.get('loc', ()))}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(out) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")


def json_problem(body: bytes) -> str | None:
    """Why `body` cannot be JSON for a reason the JSON parser words badly (None: let FastAPI parse and report it).

    Not UTF-8 (JSON on the wire is UTF-8, RFC 8259), nested beyond the parser's recursion limit, or an integer
    beyond Python's int-conversion digit limit."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"the body is not UTF-8 (invalid byte at offset {err.start})"
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return None  # FastAPI reports it with its position
    except RecursionError:
        return "the JSON is nested too deeply"
    except ValueError as err:  # int('9' * 5000): "Exceeds the limit (4300 digits) for integer string conversion"
        if "digits" in str(err):
            return "the JSON holds an integer with too many digits"
        return "the body could not be parsed as JSON"
    return None


def _invalid(message: str) -> JSONResponse:
    return JSONResponse({"error": "invalid request", "message": message, "details": []}, status_code=422)


class BodyGuard:
    """ASGI middleware reading the request body before the app sees it.

    A JSON 413 for bodies over `max_bytes` (told by Content-Length before reading, or counted while reading);
    a JSON 422 with the right reason for a POST body that is not UTF-8, nested too deeply or holds an integer too
    long to parse (`json_problem`); otherwise the body is handed to the app unchanged."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def too_large(self) -> JSONResponse:
        return JSONResponse({"error": f"request body larger than {self.max_bytes} bytes"}, status_code=413)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self.too_large()(scope, receive, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away (or a read timeout cut it off): nothing to answer
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return await self.too_large()(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if scope.get("method") == "POST" and body:
            problem = json_problem(body)
            if problem is not None:
                return await _invalid(f"malformed JSON: {problem}")(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)[:300]


class AccessLog:
    """ASGI middleware: one access-log line per request on `mtic.service.access` (INFO): client, method, path
    (never the query string, which may carry tokens), status and time. uvicorn's own access log is off."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 0

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            access_log.info('%s - "%s %s HTTP/%s" %s %.1fms', f"{client[0]}:{client[1]}" if client else "-",
                            scope.get("method"), _printable(scope.get("path", "")), scope.get("http_version"),
                            status or "-", 1000 * (time.perf_counter() - started))


_ABSOLUTE = re.compile(r"^(?:/|~|[A-Za-z]:[\\/]|\\\\)")


def public(value: Any) -> Any:
    """`value` with every absolute filesystem path replaced by its file name (for /v1/model)."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    if isinstance(value, str) and _ABSOLUTE.match(value):
        return os.path.basename(value.replace("\\", "/").rstrip("/")) or "(path)"
    return value


class Engine:
    """Runs predictions on one worker thread, directly or through the micro-batcher."""

    def __init__(self, classifier: IntentClassifier, settings: ServiceSettings) -> None:
        self.classifier, self.settings = classifier, settings
        classifier.batch_size = settings.infer_batch  # sessions per model call: bounds activation memory
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtic-infer")
        self.batcher = MicroBatcher(self._infer, self.executor, settings.batch_max_sessions,
                                    settings.batch_wait_ms) if settings.batching else None

    def _infer(self, sessions: list[Sequence[str]]) -> list[tuple[list[np.ndarray], int]]:
        probs = self.classifier.level_probabilities(sessions)
        leaves = decode(probs, self.classifier.leaf_paths, self.classifier.decoding)
        return [([p[i] for p in probs], int(leaves[i])) for i in range(len(sessions))]

    async def predict(self, sessions: list[Sequence[str]], top_k: int) -> list[dict[str, Any]]:
        if self.batcher is None:
            loop = asyncio.get_running_loop()
            out = await loop.run_in_executor(self.executor, self.classifier.predict_batch, sessions, top_k)
            return [p.to_json() for p in out]
        rows = await self.batcher.submit(sessions)
        probs = [np.stack([r[0][level] for r in rows]) for level in range(len(rows[0][0]))]
        return [p.to_json() for p in self.classifier.format(probs, np.array([r[1] for r in rows]), top_k)]


def model_info(classifier: IntentClassifier, settings: ServiceSettings) -> dict[str, Any]:
    """GET /v1/model: the model card, the intents and the service limits."""
    card = classifier.card
    intents = [{"id": i.id, "title": i.title, "path": list(i.path)} for i in classifier.taxonomy.intents]
    return public({**card, "markets": card.get("markets") or ([card["market"]] if card.get("market") else []),
                   "precision": classifier.precision, "intents": len(intents), "intent_list": intents,
                   "limits": {k: v for k, v in asdict(settings).items() if k.startswith(("max_", "top_k"))},
                   "batching": settings.batching})


def create_app(classifier: IntentClassifier, settings: ServiceSettings | None = None) -> FastAPI:
    """The FastAPI application serving `classifier` under the limits of `settings`."""
    settings = settings or ServiceSettings()
    engine = Engine(classifier, settings)
    version = str(classifier.card.get("version", "unversioned"))
    info = model_info(classifier, settings)
    IntentRequest = request_model(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine.batcher is not None:
            await engine.batcher.start()
        try:
            yield
        finally:
            if engine.batcher is not None:
                await engine.batcher.stop()
            engine.executor.shutdown(wait=False, cancel_futures=True)

    docs = settings.docs
    app = FastAPI(title="mtic intent service", version=version, lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)  # outermost of ours: logs the 413s and 422s of BodyGuard too
    app.state.engine = engine

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()]  # never echo the input back
        return JSONResponse({"error": "invalid request", "message": _error_message(exc.errors()),
                             "details": errors[:20]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:  # e.g. bytes that are not UTF-8
            return _invalid("malformed JSON: the body could not be parsed")  # BodyGuard names the usual reasons
        message = (f"request body larger than {settings.max_body_bytes} bytes" if exc.status_code == 413
                   else str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": version}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return info

    @app.post("/v1/intents")
    async def intents(body: IntentRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        top_k = body.top_k or settings.top_k
        if body.queries is not None:
            return {"model": version, "prediction": (await engine.predict([body.queries], top_k))[0]}
        out = await engine.predict([s.queries for s in body.sessions], top_k)
        return {"model": version,
                "predictions": [{"id": s.id, **p} if s.id is not None else p for s, p in zip(body.sessions, out)]}

    return app


def serve(model: str | Path, settings: ServiceSettings | None = None, host: str = "127.0.0.1", port: int = 8000,
          precision: str = "auto", threads: int | None = None, log_level: str = "info") -> None:
    """Load an export (or checkpoint) and serve it with uvicorn until interrupted."""
    import uvicorn

    settings = settings or ServiceSettings()
    classifier = IntentClassifier.load(model, precision=precision, threads=threads, top_k=settings.top_k)
    card = classifier.card
    log.warning("mtic serve: %s v%s (%s, %s intents) on http://%s:%d", card.get("name", model), card.get("version"),
                classifier.precision, len(classifier.taxonomy), host, port)
    uvicorn.Server(server_config(create_app(classifier, settings), settings, host, port, log_level)).run()


def guarded_protocol(header_timeout_s: float, body_timeout_s: float) -> type:
    """uvicorn's h11 protocol with read timeouts: a connection that has not delivered a complete request head
    within `header_timeout_s` (counted from connecting or from the end of the previous response), or the whole
    body within `body_timeout_s` of the head, is answered 408 (when part of a request came in) and closed.
    Slow-header, slow-body and stalled connections cannot hold a connection slot for longer than that."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _phase: str | None = None
        _timer: asyncio.TimerHandle | None = None
        _received = 0

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch()

        def data_received(self, data: bytes) -> None:
            self._received += len(data)
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._received = 0
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _watch(self) -> None:
            state = self.conn.their_state
            phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
            if phase == self._phase:
                return  # a deadline, not an idle timer: dribbling bytes does not extend it
            self._cancel()
            self._phase = phase
            if phase is not None and not self.transport.is_closing():
                timeout = header_timeout_s if phase == "head" else body_timeout_s
                self._timer = self.loop.call_later(timeout, self._expire, phase, timeout)

        def _expire(self, phase: str, timeout: float) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            peer = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            if phase == "body" or self._received:
                log.info("%s: no complete request %s within %gs: 408, closed", peer, phase, timeout)
                answered = self.cycle is not None and self.cycle.response_started  # (in the body phase)
                if phase == "head" or not answered:  # nothing sent yet on this request
                    body = json.dumps({"error": f"request {phase} not received within {timeout:g} s"}).encode()
                    self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                         b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            self.transport.close()

    return GuardedH11Protocol


def server_config(app: Any, settings: ServiceSettings, host: str = "127.0.0.1", port: int = 8000,
                  log_level: str = "info") -> Any:
    """The uvicorn configuration of the service: read timeouts, keep-alive, our access log (no query strings)."""
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)  # uvicorn's, plus the service's own loggers on its console handler
    log_config["loggers"]["mtic.service"] = {"handlers": ["default"], "level": str(log_level).upper(),
                                             "propagate": False}
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", log_config=log_config,
                          http=guarded_protocol(settings.header_timeout_s, settings.body_timeout_s),
                          timeout_keep_alive=settings.keep_alive_s, access_log=False, server_header=False)
