"""The FastAPI app of `rag serve`: routes of docs/serve-api.md, the page, and errors as
JSON. Models load in a background thread at startup, so /healthz answers at once and
/readyz says 503 until the retriever and the generator are in memory."""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..config import MODES
from .answering import ApiError, Engine, Run
from .feedback import AlreadyRated, FeedbackNotSaved
from .guard import Guard, error_json
from .openai import add_openai_routes
from ..citations import sources_json
from .requests import (bool_field, editions_field, event_stream, finish, history_field, int_field,
                       question_field, read_json, sse, start_run)
from .state import ServerState, ServeSettings

log = logging.getLogger("rag.serve")
STATIC = Path(__file__).parent / "static"
PAGE_LIMIT = re.compile(r'data-max-question-chars="\d*"')


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
            if state.engine.index is not None:
                await run_in_threadpool(state.engine.index.stop)
            await run_in_threadpool(state.engine.worker.stop)

    app = FastAPI(title="rag serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.rag = state
    _errors(app)
    _routes(app, state, static_dir)
    add_openai_routes(app, state)
    if static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    app.add_middleware(Guard, limits=settings)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse(error_json(request.url.path, e.status, e.message, e.param),
                            e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return JSONResponse(error_json(request.url.path, e.status_code, str(e.detail)),
                            e.status_code, headers=getattr(e, "headers", None))

    # Any other exception: rag.serve.guard answers 500 (with the security headers).


def _routes(app: FastAPI, state: ServerState, static_dir: Path) -> None:
    settings = state.settings

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        engine = state.ready()
        problem = engine.index.problem() if engine.index else None
        if problem:
            raise ApiError(503, f"not ready: {problem}", {"Retry-After": "5"})
        return {"status": "ready",
                "index_generation": engine.index.generation if engine.index else None,
                "model": engine.generator.name, "adapter": engine.generator.adapter,
                "queue": {"waiting": engine.worker.waiting, "capacity": engine.worker.capacity}}

    @app.get("/")
    async def page():
        """The page, told the server's limits (its textarea's maxlength)."""
        index = static_dir / "index.html"
        if not index.is_file():
            raise ApiError(404, "the page is not installed")
        html = PAGE_LIMIT.sub(f'data-max-question-chars="{settings.max_question_chars}"',
                              index.read_text(encoding="utf-8"))
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @app.get("/api/search")
    async def search(request: Request, q: str | None = None, k: str | None = None,
                     mode: str | None = None, as_of: str | None = None,
                     entry_year: str | None = None, all_editions: str = "false"):
        """k and mode, when not given, are the server's [search] settings; as_of (default
        today), entry_year and all_editions choose the editions searched."""
        editions = editions_field(as_of, entry_year, all_editions)
        question = question_field(q, settings, "q")
        # isdecimal() alone takes 「²」 and 「٣」, which int() refuses; 5,000 digits are
        # past int()'s limit: only 1 to 2 ASCII digits are a k.
        if k is not None and not (k.isascii() and k.isdecimal() and len(k) <= 2
                                  and 1 <= int(k) <= 50):
            raise ApiError(400, "field 'k' must be an integer from 1 to 50", param="k")
        if mode is not None and mode not in MODES:
            raise ApiError(400, f"field 'mode' must be one of {', '.join(MODES)}")
        engine = state.ready()
        hits, _ = await run_in_threadpool(engine.search, question, int(k) if k else None, mode,
                                          editions=editions)
        return hits

    @app.post("/api/ask")
    async def ask(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        engine = state.ready()
        indexed = engine.index is not None          # else: the model alone, by default
        question = question_field(body.get("question"), settings, limit=indexed)
        history = history_field(body, settings)
        stream = bool_field(body, "stream", False)
        retrieval = bool_field(body, "retrieval", indexed)
        cap = engine.options.max_new_tokens
        max_new = int_field(body, "max_new_tokens", cap, 1, cap)
        editions = editions_field(body.get("as_of"), body.get("entry_year"),
                                  body.get("all_editions", False))
        run = await start_run(request, state, question, history, retrieval=retrieval,
                              max_new_tokens=max_new, editions=editions)
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
        try:
            await run_in_threadpool(state.feedback.record, answer, rating, comment.strip())
        except AlreadyRated:
            raise ApiError(409, "this answer is already rated; the first rating and comment "
                           "are kept") from None
        except FeedbackNotSaved as e:
            log.error("feedback not saved: %s", e)
            if e.full:
                raise ApiError(507, "the rating could not be saved: the server's disk is "
                               "full (the staff have been told in the server log)") from None
            raise ApiError(503, "the rating could not be saved just now; try again shortly",
                           {"Retry-After": "5"}) from None
        return {"ok": True}

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)


async def _ask_events(run: Run, state: ServerState):
    """The passages as soon as retrieval chose them (before the first token: a reader
    has the articles during a long generation), the text as it comes, then the whole
    answer, whose sources are final (evidence marks those the answer rests on)."""
    try:
        p = run.prepared
        yield sse("sources", {"abstained": p.abstained, "sources": sources_json(p.sources)})
        async for text in run.events():
            yield sse("token", {"text": text})
        answer = run.answer()
        state.recent.add(answer)
        if rest := run.rest(answer):          # a citation note, or a held-back answer
            yield sse("token", {"text": rest})
        yield sse("done", answer)
    except ApiError as e:
        yield sse("error", {"error": e.message})
    except Exception:  # noqa: BLE001 - the stream has started: say it as an event
        log.exception("streaming an answer failed")
        yield sse("error", {"error": "internal server error"})
    finally:
        run.cancel()
