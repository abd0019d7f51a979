"""/v1/chat/completions: the OpenAI chat shapes over the same answering path, so chat
front-ends and bots that speak OpenAI's API ask the regulations unchanged.

The last user message is the question; earlier user/assistant pairs are the history
(searched with it, as in `rag chat`); system messages are ignored (the prompt is the
project's own). The answer text ends with the cited articles, and a `sources` field
beside `choices` carries them as /api/ask does; a `rag` field carries the answer's
evidence, grounding, 要確認, abstention decision and attached citations (rag/trust.py).
"""
from __future__ import annotations

import json
import logging
import time

from fastapi import FastAPI, Request

from ..answer import TRUST_FIELDS
from ..citations import grounds_text
from ..prompt import Turn
from .answering import ApiError, Run
from .requests import (bool_field, event_stream, finish, int_field, question_field, read_json,
                       start_run)
from .state import ServerState

log = logging.getLogger("rag.serve")


def add_openai_routes(app: FastAPI, state: ServerState) -> None:
    settings = state.settings

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        question, history = _conversation(body.get("messages"))
        engine = state.ready()
        indexed = engine.index is not None          # else: the model alone, by default
        question = question_field(question, settings, "messages", limit=indexed)
        stream = bool_field(body, "stream", False)
        retrieval = bool_field(body, "retrieval", indexed)
        cap = engine.options.max_new_tokens
        max_new = int_field(body, "max_tokens", cap, 1, cap)
        if body.get("max_completion_tokens") is not None:
            max_new = int_field(body, "max_completion_tokens", cap, 1, cap)
        run = await start_run(request, state, question, history, retrieval=retrieval,
                              max_new_tokens=max_new)
        created = int(time.time())
        if stream:
            return event_stream(_chunks(run, state, created))
        answer = await finish(run, request, state)
        t = answer["timings"]
        prompt_tokens, completion_tokens = t.get("prompt_tokens", 0), t.get("generated_tokens", 0)
        return {"id": _completion_id(run), "object": "chat.completion", "created": created,
                "model": answer["model"],
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": answer["answer"] + grounds(answer)},
                             "finish_reason": finish_reason(answer, run)}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
                "sources": answer["sources"], "abstained": answer["abstained"],
                "index_generation": answer["index_generation"], "rag": trust(answer)}


def trust(answer: dict) -> dict:
    """The answer's evidence, checks and abstention decision (rag/trust.py), as /api/ask
    gives them, for clients that read past OpenAI's fields."""
    return {k: answer.get(k) for k in TRUST_FIELDS}


def _completion_id(run: Run) -> str:
    return f"chatcmpl-{run.id}"        # the part after "chatcmpl-" is the id for feedback


def _text(content) -> str:
    """A message's text: a string, or OpenAI's list of parts ({"type": "text", ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    raise ApiError(400, "field 'messages': each message's content must be text")


def _conversation(messages) -> tuple[str, list[Turn]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "field 'messages' must be a non-empty list")
    turns = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user",
                                                            "assistant", "tool"):
            raise ApiError(400, "field 'messages': each message needs a role and content")
        if m["role"] in ("user", "assistant"):
            turns.append((m["role"], _text(m.get("content") or "")))
    if not turns or turns[-1][0] != "user":
        raise ApiError(400, "field 'messages' must end with a user message")
    history, pending = [], None
    for role, text in turns[:-1]:
        if role == "user":
            pending = text
        elif pending is not None:
            history.append(Turn(pending, text))
            pending = None
    return turns[-1][1], history


def grounds(answer: dict) -> str:
    """The cited articles as text, as `rag ask` lists them (rag.citations)."""
    lines = grounds_text(answer["sources"], answer["abstained"])
    return "\n".join(["", "", *lines]) if lines else ""


def finish_reason(answer: dict, run: Run) -> str:
    t = answer["timings"]
    if answer["abstained"] or t.get("stopped_at_eos"):
        return "stop"
    return "length" if t.get("generated_tokens", 0) >= run.prepared.options.max_new_tokens \
        else "stop"


async def _chunks(run: Run, state: ServerState, created: int):
    base = {"id": _completion_id(run), "object": "chat.completion.chunk", "created": created,
            "model": run.engine.generator.name}

    def chunk(delta: dict, finish=None, **extra) -> str:
        obj = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
               **extra}
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for text in run.events():
            yield chunk({"content": text})
        answer = run.answer()
        state.recent.add(answer)
        if rest := run.rest(answer):
            yield chunk({"content": rest})
        if tail := grounds(answer):
            yield chunk({"content": tail})
        yield chunk({}, finish_reason(answer, run), sources=answer["sources"],
                    abstained=answer["abstained"], index_generation=answer["index_generation"],
                    rag=trust(answer))
    except ApiError as e:
        yield f"data: {json.dumps({'error': {'message': e.message, 'code': e.status}})}\n\n"
    except Exception:  # noqa: BLE001 - the stream has started: say it in the stream
        log.exception("streaming a chat completion failed")
        yield f"data: {json.dumps({'error': {'message': 'internal server error'}})}\n\n"
    finally:
        run.cancel()
    yield "data: [DONE]\n\n"
