"""The FastAPI app of `rag serve`: routes of docs/serve-api.md, the page, and errors as
JSON. Models load in a background thread at startup, so /healthz answers at once and
/readyz says 503 until the retriever and the generator are in memory."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..config import MODES, Config
from .answering import ApiError, Engine, RecentAnswers, Run, prepare
from .feedback import FeedbackStore
from .guard import Guard, TokenBuckets

log = logging.getLogger("rag.serve")
STATIC = Path(__file__).parent / "static"


@dataclass
class ServeSettings:
    """The server's limits; a running server reads them on each request. Defaults are
    the [serve] settings' own (rag/config.py), the one place they are written."""
    max_body_bytes: int = Config.max_body_bytes
    max_question_chars: int = Config.max_question_chars
    timeout_s: float = Config.timeout_s
    rate_per_minute: float = Config.rate_per_minute
    rate_burst: int = Config.rate_burst
    feedback_db: str = Config.feedback_db
    token: str | None = None
    buckets: TokenBuckets = field(init=False)

    def __post_init__(self):
        self.buckets = TokenBuckets(self.rate_per_minute, self.rate_burst)

    @classmethod
    def from_config(cls, cfg: Config, **overrides) -> "ServeSettings":
        values = dict(max_body_bytes=cfg.max_body_bytes, timeout_s=cfg.timeout_s,
                      max_question_chars=cfg.max_question_chars,
                      rate_per_minute=cfg.rate_per_minute, rate_burst=cfg.rate_burst,
                      feedback_db=cfg.feedback_db, token=os.environ.get("RAG_API_TOKEN") or None)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ServerState:
    def __init__(self, settings: ServeSettings, load: Callable[[], Engine],
                 on_load_error: Callable[[str], None] | None = None):
        self.settings, self._load, self._on_load_error = settings, load, on_load_error
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.recent = RecentAnswers()
        self.feedback = FeedbackStore(settings.feedback_db)

    def load(self) -> None:
        try:
            self.engine = self._load()
        except Exception as e:  # noqa: BLE001 - /readyz says it; the log has the trace
            log.debug("loading failed", exc_info=True)
            self.load_error = str(e)
            if self._on_load_error:
                self._on_load_error(self.load_error)

    def ready(self) -> Engine:
        if self.engine is None:
            raise ApiError(503, f"not ready: {self.load_error}" if self.load_error
                           else "not ready: the models are loading", {"Retry-After": "5"})
        return self.engine


def create_app(settings: ServeSettings, load: Callable[[], Engine], *,
               static_dir: Path = STATIC,
               on_load_error: Callable[[str], None] | None = None) -> FastAPI:
    """The app; `load()` builds the Engine (models, index, worker) after startup.
    When it fails, /readyz says why and `on_load_error(message)` is called."""
    state = ServerState(settings, load, on_load_error)

    async def lifespan(app):
        threading.Thread(target=state.load, name="rag-load", daemon=True).start()
        yield
        if state.engine is not None:
            await run_in_threadpool(state.engine.worker.stop)

    app = FastAPI(title="rag serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.rag = state
    _errors(app)
    _routes(app, state, static_dir)
    from .openai import add_openai_routes
    add_openai_routes(app, state)
    if static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    app.add_middleware(Guard, limits=settings)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse({"error": e.message}, e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return JSONResponse({"error": str(e.detail)}, e.status_code,
                            headers=getattr(e, "headers", None))

    # Any other exception: rag.serve.guard answers 500 (with the security headers).


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object, read no further than `limit` bytes."""
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    try:
        obj = json.loads(b"".join(chunks) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "the body must be a JSON object")
    return obj


def question_field(value, settings: ServeSettings, name: str = "question", *,
                   limit: bool = True) -> str:
    """The question, stripped; `limit=False` for a server without an index, which is
    sent whole prompts (another `rag` with backend = "openai"): the body limit bounds it."""
    if not isinstance(value, str):
        raise ApiError(400, f"field {name!r} must be a string")
    if not value.strip():
        raise ApiError(400, f"field {name!r} is empty")
    if limit and len(value) > settings.max_question_chars:
        raise ApiError(422, f"field {name!r} is longer than {settings.max_question_chars} "
                       "characters")
    return value.strip()


def int_field(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, f"field {name!r} must be an integer from {low} to {high}")
    return value


def bool_field(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"field {name!r} must be true or false")
    return value


def sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def start_run(request: Request, state: ServerState, question: str, history=(), *,
                    retrieval: bool = True, max_new_tokens: int | None = None) -> Run:
    engine = state.ready()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.timeout_s
    prepared = await run_in_threadpool(prepare, engine, question, history,
                                       retrieval=retrieval, max_new_tokens=max_new_tokens)
    return Run(engine, prepared, deadline).start()


def disconnect_probe(request: Request):
    async def still_wanted() -> bool:
        return not await request.is_disconnected()
    return still_wanted


def event_stream(events) -> StreamingResponse:
    """Server-sent events, which proxies must pass on unbuffered."""
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def finish(run: Run, request: Request, state: ServerState) -> dict:
    """A non-streamed answer: generated while its client stays, then kept for feedback."""
    async for _ in run.events(disconnect_probe(request)):
        pass
    answer = run.answer()
    state.recent.add(answer)
    return answer


def _routes(app: FastAPI, state: ServerState, static_dir: Path) -> None:
    settings = state.settings

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        engine = state.ready()
        return {"status": "ready",
                "index_generation": engine.index.generation if engine.index else None,
                "model": engine.generator.name, "adapter": engine.generator.adapter,
                "queue": {"waiting": engine.worker.waiting, "capacity": engine.worker.capacity}}

    @app.get("/")
    async def page():
        index = static_dir / "index.html"
        if not index.is_file():
            raise ApiError(404, "the page is not installed")
        return FileResponse(index, media_type="text/html; charset=utf-8")

    @app.get("/api/search")
    async def search(request: Request, q: str | None = None, k: str = "5",
                     mode: str = "hybrid"):
        question = question_field(q, settings, "q")
        if not k.isdigit() or not 1 <= int(k) <= 50:
            raise ApiError(400, "field 'k' must be an integer from 1 to 50")
        if mode not in MODES:
            raise ApiError(400, f"field 'mode' must be one of {', '.join(MODES)}")
        engine = state.ready()
        hits, _ = await run_in_threadpool(engine.search, question, int(k), mode)
        return hits

    @app.post("/api/ask")
    async def ask(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        engine = state.ready()
        indexed = engine.index is not None          # else: the model alone, by default
        question = question_field(body.get("question"), settings, limit=indexed)
        stream = bool_field(body, "stream", False)
        retrieval = bool_field(body, "retrieval", indexed)
        cap = engine.options.max_new_tokens
        max_new = int_field(body, "max_new_tokens", cap, 1, cap)
        run = await start_run(request, state, question, retrieval=retrieval,
                              max_new_tokens=max_new)
        if stream:
            return event_stream(_ask_events(run, state))
        return await finish(run, request, state)

    @app.post("/api/feedback")
    async def feedback(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        answer_id, rating = body.get("id"), body.get("rating")
        comment = body.get("comment") or ""
        if not isinstance(answer_id, str) or not answer_id:
            raise ApiError(400, "field 'id' must be the answer's id")
        if rating not in ("up", "down"):
            raise ApiError(400, "field 'rating' must be \"up\" or \"down\"")
        if not isinstance(comment, str):
            raise ApiError(400, "field 'comment' must be a string")
        if len(comment) > 4 * settings.max_question_chars:
            raise ApiError(422, "field 'comment' is too long")
        answer = state.recent.get(answer_id.removeprefix("chatcmpl-"))
        if answer is None:
            raise ApiError(404, "unknown answer id (the server keeps its recent answers)")
        await run_in_threadpool(state.feedback.record, answer, rating, comment.strip())
        return {"ok": True}

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)


async def _ask_events(run: Run, state: ServerState):
    try:
        async for text in run.events():
            yield sse("token", {"text": text})
        answer = run.answer()
        state.recent.add(answer)
        yield sse("sources", {"abstained": answer["abstained"], "sources": answer["sources"]})
        yield sse("done", answer)
    except ApiError as e:
        yield sse("error", {"error": e.message})
    except Exception:  # noqa: BLE001 - the stream has started: say it as an event
        log.exception("streaming an answer failed")
        yield sse("error", {"error": "internal server error"})
    finally:
        run.cancel()
