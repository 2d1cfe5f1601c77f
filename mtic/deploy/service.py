"""The HTTP intent service (FastAPI + uvicorn).

    POST /v1/intents   {"queries": [...], "top_k"?: int}                 -> {"model", "prediction"}
                       {"sessions": [{"id"?: str, "queries": [...]}, ...]} -> {"model", "predictions"}
    GET  /healthz      liveness
    GET  /v1/model     model card: intents, markets, export parity, version, limits

Input is bounded (`ServiceSettings`): too many turns / characters / sessions, empty or blank queries, text that
is not valid Unicode and malformed JSON get a 422 whose `message` names the problem; bodies over
`max_body_bytes` get a 413. Bad input never causes a 5xx. Request bodies are never logged. Inference runs on one
worker thread (the model uses the cores itself); with `batching` concurrent requests share model calls.
"""
import asyncio
import logging
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
        model_config = ConfigDict(extra="forbid")
        id: Annotated[str, StringConstraints(max_length=200)] | None = None
        queries: QueryList

        _check = field_validator("queries")(check)

    class IntentRequest(BaseModel):
        """Exactly one of `queries` (one session, oldest first) or `sessions` (a batch)."""

        model_config = ConfigDict(extra="forbid")
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


class BodyLimit:
    """ASGI middleware: a JSON 413 for bodies over `max_bytes`, told by Content-Length before reading, or counted
    while streaming (then raised as an HTTPException, which the app's handler turns into the same JSON 413)."""

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
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise StarletteHTTPException(413)
            return message

        await self.app(scope, counted, send)


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
    return {**card, "markets": card.get("markets") or ([card["market"]] if card.get("market") else []),
            "precision": classifier.precision, "intents": len(intents), "intent_list": intents,
            "limits": {k: v for k, v in asdict(settings).items() if k.startswith(("max_", "top_k"))},
            "batching": settings.batching}


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

    app = FastAPI(title="mtic intent service", version=version, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
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
            return JSONResponse({"error": "invalid request", "message": "malformed JSON: the body is not UTF-8 JSON",
                                 "details": []}, status_code=422)
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
    uvicorn.run(create_app(classifier, settings), host=host, port=port, log_level=log_level)
