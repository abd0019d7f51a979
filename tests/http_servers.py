"""Real HTTP servers on loopback for the client tests, running real (tiny) models.

- `openai_server(generator)`: an OpenAI-compatible server (/v1/models, /v1/completions,
  /v1/chat/completions, streaming as server-sent events) that generates with a
  TransformersGenerator, as vLLM would with the same weights. A chat message's content
  is generated from as it is (the tiny model has no chat template). It speaks HTTP/1.0
  (the body ends when the connection closes), one generation at a time, optional bearer
  token, and records what it saw (`.state`) for the tests.
- `contract_server(answerer)`: the real `rag serve` app (rag.serve.app.create_app) under
  uvicorn in this process, answering with the answerer's generator and retriever, so the
  `--server` client can be checked against what the local commands print. Beside it, the
  hooks the client tests need (`ContractServer`): the last /api/ask body, the token, a
  full queue, holding a stream after its first piece, and the worker's counters.
"""
from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


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

class ContractServer:
    """The real app, and what the client tests look at or change while it runs."""

    def __init__(self, answerer, tmp_dir, token: str | None = None):
        from rag.serve.app import create_app
        from rag.serve.answering import Engine
        from rag.serve.live_index import LiveIndex
        from rag.serve.state import ServeSettings
        from rag.serve.worker import ModelWorker

        self.state: dict = {}
        self.hold_after_first: threading.Event | None = None   # streaming checks
        lock = threading.Lock()
        retriever = answerer.retriever
        index = LiveIndex(retriever.index_dir, lambda _: retriever, mode=answerer.mode,
                          lock=lock)
        generator = answerer.generator
        self._hold_streams(generator)
        worker = ModelWorker(generator)
        self.engine = Engine(answerer.using(None), worker.start(), index, lock=lock)
        self.settings = ServeSettings(rate_per_minute=0, token=token,
                                      feedback_db=str(Path(tmp_dir) / "feedback.sqlite3"))
        self.app = create_app(self.settings, lambda: self.engine)

    @property
    def token(self) -> str | None:
        return self.settings.token

    @token.setter
    def token(self, value: str | None) -> None:
        self.settings.token = value

    def _hold_streams(self, generator) -> None:
        """After a stream's first piece, wait for `hold_after_first` (when set)."""
        stream_batch = generator.stream_batch

        def held(on_text):
            def forward(piece):
                on_text(piece)
                if self.hold_after_first is not None:
                    release, self.hold_after_first = self.hold_after_first, None
                    self.state["held"] = release.wait(timeout=30)
            return forward

        def hold(prompts, options, on_text=None, cancelled=None):
            return stream_batch(prompts, options, [held(cb) if cb else cb for cb in on_text or
                                                   [None] * len(prompts)], cancelled)

        generator.stream_batch = hold
        running_batch = generator.running_batch

        def holding_batch():            # continuous batching: each joiner's stream is held
            batch = running_batch()
            if batch is not None:
                join = batch.join

                def holding_join(prompt, options, on_text=None, *args, **kwargs):
                    return join(prompt, options, held(on_text) if on_text else on_text,
                                *args, **kwargs)
                batch.join = holding_join
            return batch

        generator.running_batch = holding_batch

    async def __call__(self, scope, receive, send):
        """The app, noting the JSON body of each /api/ask."""
        if scope["type"] != "http" or scope["path"] != "/api/ask":
            return await self.app(scope, receive, send)
        chunks = []

        async def noting():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.state["last_body"] = json.loads(b"".join(chunks) or b"null")
            return message

        await self.app(scope, noting, send)

    def full_queue(self):
        """A context in which every question is refused with 503 (a full queue)."""
        from rag.serve.worker import QueueFull

        worker = self.engine.worker

        @contextlib.contextmanager
        def full():
            def refuse(job):
                raise QueueFull
            worker.submit = refuse
            try:
                yield
            finally:
                del worker.submit
        return full()


@contextlib.contextmanager
def contract_server(answerer, tmp_dir, token: str | None = None):
    """`with contract_server(answerer, tmp_dir) as (url, server)`: the real `rag serve`."""
    from serve_client import LiveServer

    server = ContractServer(answerer, tmp_dir, token)
    live = LiveServer(server).start()
    try:
        yield live.url, server
    finally:
        live.stop()
