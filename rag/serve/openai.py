"""/v1/chat/completions: the OpenAI chat shapes over the same answering path, so chat
front-ends and bots that speak OpenAI's API ask the regulations unchanged.

The last user message is the question; earlier user/assistant pairs are the history
(searched with it, as in `rag chat`); system (and developer) messages are added to the
prompt's instruction (rag.prompt.with_system). The answer text ends with the cited
articles, and a `sources` field beside `choices` carries them as /api/ask does; a `rag`
field carries the answer's evidence, grounding, 要確認, abstention decision and attached
citations (rag/trust.py). Errors are OpenAI's error object (rag.serve.guard.error_json);
`GET /v1/models` lists the one model served, by name (never a file path).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request

from ..answer import TRUST_FIELDS
from ..citations import grounds_text
from ..prompt import Turn
from .answering import ApiError, Run
from .guard import error_json
from .requests import (bool_field, event_stream, finish, int_field, question_field, read_json,
                       start_run)
from .state import ServerState

log = logging.getLogger("rag.serve")


STARTED = int(time.time())         # /v1/models' "created"


def model_name(state: ServerState) -> str:
    """The served model's name: [serve] model_name, else the generator's Hugging Face id,
    or the directory's name when it is a local path (a path tells a client nothing and
    the server's layout to anyone)."""
    if state.settings.model_name:
        return state.settings.model_name
    name = state.ready().generator.name
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or path.exists():
        return path.resolve().name or name
    return name


def add_openai_routes(app: FastAPI, state: ServerState) -> None:
    settings = state.settings

    def model_object(name: str) -> dict:
        return {"id": name, "object": "model", "created": STARTED, "owned_by": "rag"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_object(model_name(state))]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        if name != model_name(state):
            raise ApiError(404, f"the model {name!r} does not exist (this server serves "
                           f"{model_name(state)!r})", param="model")
        return model_object(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request, settings.max_body_bytes)
        question, history, system = _conversation(body.get("messages"))
        engine = state.ready()
        indexed = engine.index is not None          # else: the model alone, by default
        question = question_field(question, settings, "messages", limit=indexed)
        stream = bool_field(body, "stream", False)
        retrieval = bool_field(body, "retrieval", indexed)
        n = body.get("n", 1)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
            raise ApiError(400, "only one choice is generated: 'n' must be 1", param="n")
        include_usage = _include_usage(body.get("stream_options"), stream)
        cap = engine.options.max_new_tokens          # a larger request is capped to it
        max_new = int_field(body, "max_tokens", cap, 1, cap, cap=True)
        if body.get("max_completion_tokens") is not None:
            max_new = int_field(body, "max_completion_tokens", cap, 1, cap, cap=True)
        name = model_name(state)
        run = await start_run(request, state, question, history, retrieval=retrieval,
                              max_new_tokens=max_new, system=system)
        created = int(time.time())
        if stream:
            return event_stream(_chunks(run, state, created, name, include_usage))
        answer = await finish(run, request, state)
        return {"id": _completion_id(run), "object": "chat.completion", "created": created,
                "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": answer["answer"] + grounds(answer)},
                             "finish_reason": finish_reason(answer, run)}],
                "usage": usage(answer),
                "sources": answer["sources"], "abstained": answer["abstained"],
                "index_generation": answer["index_generation"], "rag": trust(answer)}


def trust(answer: dict) -> dict:
    """The answer's evidence, checks and abstention decision (rag/trust.py), as /api/ask
    gives them, for clients that read past OpenAI's fields."""
    return {k: answer.get(k) for k in TRUST_FIELDS}


def usage(answer: dict) -> dict:
    t = answer["timings"]
    prompt_tokens = t.get("prompt_tokens") or 0
    completion_tokens = t.get("generated_tokens") or 0
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _include_usage(options, stream: bool) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise ApiError(400, "field 'stream_options' must be an object", param="stream_options")
    if not stream:
        raise ApiError(400, "'stream_options' is only allowed with \"stream\": true",
                       param="stream_options")
    value = options.get("include_usage", False)
    if not isinstance(value, bool):
        raise ApiError(400, "field 'stream_options.include_usage' must be true or false",
                       param="stream_options")
    return value


def _completion_id(run: Run) -> str:
    return f"chatcmpl-{run.id}"        # the part after "chatcmpl-" is the id for feedback


def _text(content, i: int) -> str:
    """A message's text: a string, or OpenAI's list of parts ({"type": "text", "text":
    "..."}; parts of other types, such as images, are left out)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, p in enumerate(content):
            if not isinstance(p, dict) or not isinstance(p.get("type"), str):
                raise ApiError(400, f"messages[{i}].content[{j}] must be an object with a "
                               "\"type\"", param="messages")
            if p["type"] == "text":
                if not isinstance(p.get("text"), str):
                    raise ApiError(400, f"messages[{i}].content[{j}].text must be a string",
                                   param="messages")
                texts.append(p["text"])
        return "".join(texts)
    raise ApiError(400, f"messages[{i}].content must be text (a string or a list of "
                   "text parts)", param="messages")


def _conversation(messages) -> tuple[str, list[Turn], str | None]:
    """(the question, the earlier turns, the system text or None)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "field 'messages' must be a non-empty list", param="messages")
    turns, system = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user",
                                                            "assistant", "tool"):
            raise ApiError(400, f"messages[{i}] needs a role (system, developer, user, "
                           "assistant or tool) and content", param="messages")
        content = m.get("content")
        text = "" if content is None else _text(content, i)
        if m["role"] in ("user", "assistant"):
            turns.append((m["role"], text))
        elif m["role"] in ("system", "developer") and text.strip():
            system.append(text.strip())
    if not turns or turns[-1][0] != "user":
        raise ApiError(400, "field 'messages' must end with a user message", param="messages")
    history, pending = [], None
    for role, text in turns[:-1]:
        if role == "user":
            pending = text
        elif pending is not None:
            history.append(Turn(pending, text))
            pending = None
    return turns[-1][1], history, "\n".join(system) or None


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


async def _chunks(run: Run, state: ServerState, created: int, name: str,
                  include_usage: bool = False):
    base = {"id": _completion_id(run), "object": "chat.completion.chunk", "created": created,
            "model": name}
    if include_usage:
        base["usage"] = None          # as OpenAI: null on every chunk but the last

    def data(obj: dict) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    def chunk(delta: dict, finish=None, **extra) -> str:
        return data({**base, "choices": [{"index": 0, "delta": delta,
                                          "finish_reason": finish}], **extra})

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
        if include_usage:
            yield data({**base, "choices": [], "usage": usage(answer)})
    except ApiError as e:
        yield data(error_json("/v1/", e.status, e.message, e.param))
    except Exception:  # noqa: BLE001 - the stream has started: say it in the stream
        log.exception("streaming a chat completion failed")
        yield data(error_json("/v1/", 500, "internal server error"))
    finally:
        run.cancel()
    yield "data: [DONE]\n\n"
