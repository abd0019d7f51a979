"""Real HTTP servers on loopback for the client tests, running real (tiny) models.

- `openai_server(generator)`: an OpenAI-compatible server (/v1/models, /v1/completions,
  /v1/chat/completions, streaming as server-sent events) that generates with a
  TransformersGenerator, as vLLM would with the same weights. A chat message's content
  is generated from as it is (the tiny model has no chat template).
- `contract_server(answerer)`: the `/api/ask` and `/api/search` of docs/serve-api.md,
  answered by a real Answerer, so the `--server` client can be checked against what the
  local commands print. It stands in for `rag serve` only to test the client side of that
  contract; tests/test_serve_client.py runs the same checks against the real `rag serve`.

Both speak HTTP/1.0 (the body ends when the connection closes), one generation at a
time, optional bearer token, and record what they saw (`.state`) for the tests.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    app = None                        # set per server class

    def log_message(self, *args):     # keep pytest's output clean
        pass

    def _send_json(self, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def _event(self, data, event: str | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        head = f"event: {event}\n" if event else ""
        self.wfile.write(f"{head}data: {text}\n\n".encode("utf-8"))
        self.wfile.flush()

    def _authorised(self) -> bool:
        token = self.app.token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self.app.state["unauthorised"] = self.app.state.get("unauthorised", 0) + 1
            self._send_json(401, self.app.unauthorised_body)
            return False
        return True

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length).decode("utf-8")) if length else {}

    def do_GET(self):
        if self._authorised():
            self.app.get(self, urlsplit(self.path))

    def do_POST(self):
        if self._authorised():
            self.app.post(self, urlsplit(self.path).path, self._body())


class _App:
    unauthorised_body: dict = {"error": "unauthorised"}

    def __init__(self, token: str | None = None):
        self.token = token
        self.state: dict = {}
        self.lock = threading.Lock()          # one generation at a time
        self.hold_after_first: threading.Event | None = None   # streaming checks

    def wait_if_held(self) -> None:
        if self.hold_after_first is not None:
            self.state["held"] = self.hold_after_first.wait(timeout=30)
            self.hold_after_first = None


@contextlib.contextmanager
def _serving(app: _App, prefix: str = ""):
    handler = type("Handler", (_Handler,), {"app": app})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}", app
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- OpenAI

class OpenAIApp(_App):
    unauthorised_body = {"error": {"message": "Incorrect API key provided", "type": "auth"}}

    def __init__(self, generator, token=None):
        super().__init__(token)
        self.generator = generator
        self.state["requests"] = []

    def get(self, h, url):
        if url.path == "/v1/models":
            h._send_json(200, {"object": "list", "data": [
                {"id": self.generator.name, "object": "model",
                 "max_model_len": self.generator.context_window}]})
        else:
            h._send_json(404, {"error": {"message": f"no route {url.path}"}})

    def post(self, h, path, body):
        from rag.generation.base import GenerationOptions

        self.state["requests"].append({"path": path, **body})
        if path == "/v1/completions":
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            chat = False
        elif path == "/v1/chat/completions":
            prompts = ["".join(m["content"] for m in body["messages"] if m["role"] == "user")]
            chat = True
        else:
            h._send_json(404, {"error": {"message": f"no route {path}"}})
            return
        options = GenerationOptions(int(body.get("max_tokens") or 16),
                                    float(body.get("temperature") or 0.0))
        if not body.get("stream"):
            with self.lock:
                gens = [self.generator.generate(p, options) for p in prompts]
            choices = [({"index": i, "message": {"role": "assistant", "content": g.text}}
                        if chat else {"index": i, "text": g.text})
                       | {"finish_reason": "stop" if g.stopped_at_eos else "length"}
                       for i, g in enumerate(gens)]
            h._send_json(200, {"object": "chat.completion" if chat else "text_completion",
                               "model": self.generator.name, "choices": choices})
            return
        h._start_events()
        sent = []

        def on_text(piece):
            chunk = ({"choices": [{"index": 0, "delta": {"content": piece},
                                   "finish_reason": None}]} if chat else
                     {"choices": [{"index": 0, "text": piece, "finish_reason": None}]})
            h._event(chunk)
            sent.append(piece)
            if len(sent) == 1:
                self.wait_if_held()

        with self.lock:
            try:
                gen = self.generator.generate(prompts[0], options, on_text=on_text)
            except (BrokenPipeError, ConnectionResetError):
                self.state["client_went_away"] = True
                self.state["pieces_sent"] = len(sent)
                return
        last = {"index": 0, "finish_reason": "stop" if gen.stopped_at_eos else "length"}
        last |= {"delta": {}} if chat else {"text": ""}
        h._event({"choices": [last], "usage": {"completion_tokens": gen.new_tokens}})
        h._event("[DONE]")


def openai_server(generator, token: str | None = None):
    """`with openai_server(gen) as (base_url, app)`: base_url ends in /v1."""
    return _serving(OpenAIApp(generator, token), "/v1")


# --------------------------------------------------------------------------- rag serve

class ContractApp(_App):
    """docs/serve-api.md's /api/ask and /api/search over a real Answerer."""

    def __init__(self, answerer, token=None):
        super().__init__(token)
        self.answerer = answerer
        self.busy_retry_after: int | None = None       # answer 503 with Retry-After

    def get(self, h, url):
        if url.path == "/healthz":
            h._send_json(200, {"status": "ok"})
            return
        if url.path != "/api/search":
            h._send_json(404, {"error": "not found"})
            return
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if not q.get("q"):
            h._send_json(400, {"error": "q: the question is missing"})
            return
        retriever = self.answerer.retriever
        hits = retriever.search(q["q"], k=int(q.get("k", 5)), mode=q.get("mode", "hybrid"))
        h._send_json(200, [hit.to_json() for hit in hits])

    def post(self, h, path, body):
        if path != "/api/ask":
            h._send_json(404, {"error": "not found"})
            return
        if self.busy_retry_after is not None:
            h._send_json(503, {"error": "the queue is full"},
                         {"Retry-After": str(self.busy_retry_after)})
            return
        self.state["last_body"] = body
        question = body.get("question") or ""
        if body.get("max_new_tokens"):
            self.answerer.options = type(self.answerer.options)(int(body["max_new_tokens"]))
        retrieval = body.get("retrieval", True)

        def whole(answer) -> dict:
            obj = answer.to_json()
            obj["model"] = self.answerer.generator.name
            obj["adapter"] = self.answerer.generator.adapter
            obj["id"], obj["index_generation"] = "a1", "g1"
            return obj

        if not body.get("stream"):
            with self.lock:
                answer = self.answerer.ask(question, retrieval=retrieval)
            h._send_json(200, whole(answer))
            return
        h._start_events()
        sent = []

        def on_text(piece):
            h._event({"text": piece}, "token")
            sent.append(piece)
            if len(sent) == 1:
                self.wait_if_held()

        with self.lock:
            try:
                answer = self.answerer.ask(question, retrieval=retrieval, on_text=on_text)
            except (BrokenPipeError, ConnectionResetError):
                self.state["client_went_away"] = True
                return
        obj = whole(answer)
        h._event({"abstained": obj["abstained"], "sources": obj["sources"]}, "sources")
        time.sleep(0)
        h._event(obj, "done")


def contract_server(answerer, token: str | None = None):
    """`with contract_server(answerer) as (url, app)`."""
    return _serving(ContractApp(answerer, token))
