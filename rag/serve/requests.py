"""What the routes of app.py and openai.py share: reading and checking a request's
fields, starting a question's Run, and answering it streamed or whole."""
from __future__ import annotations

import asyncio
import json

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .answering import ApiError, Run
from .state import ServerState, ServeSettings


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


def editions_field(as_of=None, entry_year=None, all_editions=False):
    """as_of (YYYY-MM-DD), entry_year and all_editions of a request: the EditionChoice
    its retrieval uses (rag.retrieval.editions); 400 when they are not a date or a year."""
    from ..retrieval.editions import EditionChoiceError, parse_choice

    if not isinstance(all_editions, bool) and all_editions not in ("true", "false", "1", "0"):
        raise ApiError(400, "field 'all_editions' must be true or false")
    if isinstance(entry_year, float) or isinstance(as_of, (int, float)):
        raise ApiError(400, "field 'as_of' must be a date YYYY-MM-DD and 'entry_year' a year")
    try:
        return parse_choice(as_of, entry_year, all_editions in (True, "true", "1"))
    except EditionChoiceError as e:
        raise ApiError(400, f"field {str(e).split()[0]!r}{str(e)[len(str(e).split()[0]):]}") from None


def sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def start_run(request: Request, state: ServerState, question: str, history=(), *,
                    retrieval: bool = True, max_new_tokens: int | None = None,
                    editions=None) -> Run:
    engine = state.ready()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.timeout_s
    asked = await run_in_threadpool(engine.prepare, question, history, retrieval=retrieval,
                                    max_new_tokens=max_new_tokens, editions=editions)
    return Run(engine, asked, deadline).start()


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
