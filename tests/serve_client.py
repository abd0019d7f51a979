"""A real `rag serve` app under uvicorn on a free loopback port, in a thread of the test
process (so tests can read the worker's counters), and plain-HTTP helpers."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request


class LiveServer:
    def __init__(self, app):
        """`app` from rag.serve.app.create_app, run with the uvicorn configuration `rag
        serve` uses (rag.serve.server: proxy headers, timeouts) for its settings."""
        import uvicorn

        from rag.serve.server import uvicorn_config

        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        state = getattr(getattr(app, "state", None), "rag", None)
        settings = state.settings if state is not None else app.settings
        self.server = uvicorn.Server(uvicorn_config(app, settings,
                                                    log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def start(self, ready_within: float = 60) -> "LiveServer":
        self.thread.start()
        until = time.monotonic() + ready_within
        while time.monotonic() < until:
            try:
                status, body = request(self.url + "/readyz")
                if status == 200:
                    return self
                if body.get("error", "").startswith("not ready: ") and "loading" not in body["error"]:
                    raise RuntimeError(body["error"])
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the server did not get ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def request(url: str, body=None, *, method: str | None = None, headers=None,
            raw: bytes | None = None, timeout: float = 60):
    """(status, parsed JSON body) of one request; errors are answers too."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def with_headers(url: str, body=None, headers=None):
    """(status, headers, text) of one request."""
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


class EventStream:
    """Server-sent events of one POST, read one at a time; `close()` hangs up."""

    def __init__(self, port: int, path: str, body: dict, headers=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("POST", path, json.dumps(body),
                          {"Content-Type": "application/json", **(headers or {})})
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def __iter__(self):
        event, data = "message", []
        while True:
            line = self.response.readline()
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and data:
                text = "\n".join(data)
                yield event, (text if text == "[DONE]" else json.loads(text))
                event, data = "message", []

    def close(self) -> None:
        self.response.close()
        self.conn.close()
