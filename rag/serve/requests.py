"""What the routes of app.py and openai.py share: reading and checking a request's
fields, starting a question's Run, and answering it streamed or whole."""
from __future__ import annotations

import asyncio
import json

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..prompt import Turn
from .answering import ApiError, Run
from .state import ServerState, ServeSettings


MAX_JSON_DEPTH = 32      # a question, its history, OpenAI's messages: a few levels at most


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object, read no further than `limit` bytes: nested at most
    MAX_JSON_DEPTH deep, and every string valid Unicode (no lone surrogate such as
    "\\ud800", which JSON allows and UTF-8 cannot carry)."""
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks) or b"null"
    if _depth(raw) > MAX_JSON_DEPTH:
        raise ApiError(400, f"the body is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "the body must be a JSON object")
    _check_text(obj, "")
    return obj


def _depth(raw: bytes) -> int:
    """How deep brackets nest in `raw`, outside strings (before parsing: the parser
    itself recurses, and 30,000 levels exhaust Python's stack)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return 0                                     # cannot nest deeper: no need to scan
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:                       # backslash
                escaped = True
            elif byte == 0x22:                       # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):                   # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _check_text(value, where: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            name = where.lstrip(".") or "body"
            raise ApiError(400, f"field {name!r} is not valid Unicode (a lone surrogate "
                           f"{value[e.start]!r} at character {e.start})",
                           param=name.split(".")[0].split("[")[0]) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, where)
            _check_text(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text(v, f"{where}[{i}]")


def question_field(value, settings: ServeSettings, name: str = "question", *,
                   limit: bool = True) -> str:
    """The question, stripped; `limit=False` for a server without an index, which is
    sent whole prompts (another `rag` with backend = "openai"): the body limit bounds it."""
    if not isinstance(value, str):
        raise ApiError(400, f"field {name!r} must be a string", param=name)
    if not value.strip():
        raise ApiError(400, f"field {name!r} is empty", param=name)
    if limit and len(value) > settings.max_question_chars:
        raise ApiError(422, f"field {name!r} is longer than {settings.max_question_chars} "
                       "characters", param=name)
    return value.strip()


MAX_HISTORY_TURNS = 20


def history_field(body: dict, settings: ServeSettings) -> list[Turn]:
    """`history`: the earlier turns of the conversation, oldest first, as
    [{"question", "answer"}]. At most MAX_HISTORY_TURNS (the Answerer keeps of them what
    the prompt has room for); each question within max_question_chars (422 beyond), each
    answer cut to 4 × max_question_chars (the server's own answers come back here, and
    the gist is what a follow-up needs)."""
    value = body.get("history")
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "field 'history' must be a list of {question, answer}")
    if len(value) > MAX_HISTORY_TURNS:
        raise ApiError(400, f"field 'history' has more than {MAX_HISTORY_TURNS} turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("question"), str) \
                or not isinstance(turn.get("answer"), str):
            raise ApiError(400, f"field 'history[{i}]' must be {{question, answer}} strings")
        if len(turn["question"]) > settings.max_question_chars:
            raise ApiError(422, f"field 'history[{i}].question' is longer than "
                           f"{settings.max_question_chars} characters")
        try:
            turn["question"].encode("utf-8"), turn["answer"].encode("utf-8")
        except UnicodeEncodeError:                     # a lone surrogate
            raise ApiError(400, f"field 'history[{i}]' is not valid Unicode") from None
        question, answer = turn["question"].strip(), turn["answer"].strip()
        if question:
            turns.append(Turn(question, answer[:4 * settings.max_question_chars]))
    return turns


def int_field(body: dict, name: str, default: int, low: int, high: int, *,
              cap: bool = False) -> int:
    """An integer field from `low` to `high`; `cap`: larger ones are taken as `high`."""
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
            value > high and not cap):
        raise ApiError(400, f"field {name!r} must be an integer from {low} to {high}",
                       param=name)
    return min(value, high)


def bool_field(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"field {name!r} must be true or false", param=name)
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
                    system: str | None = None, editions=None) -> Run:
    engine = state.ready()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.timeout_s
    asked = await run_in_threadpool(engine.prepare, question, history, retrieval=retrieval,
                                    max_new_tokens=max_new_tokens, system=system,
                                    editions=editions)
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
