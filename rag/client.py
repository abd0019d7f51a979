"""The CLI's side of `rag serve` (docs/serve-api.md): `rag ask --server URL` and `rag search
--server URL` send the question to a running server instead of loading the index and
the model, so a cold command answers in well under a second.

Standard library only (http.client): importing this module must stay cheap, which is
the point of it. `RAG_API_TOKEN`, when set, goes as `Authorization: Bearer ...`. Every
failure is a `ServerError` (a RagError) whose message names the URL and says what to do.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from urllib.parse import urlencode, urlsplit

from ingest.errors import RagError

CONNECT_TIMEOUT_S = 10.0
# Between two reads: a question may wait in the server's queue and then generate; the
# server's own limit ([serve] timeout_s, 504) normally ends it first.
READ_TIMEOUT_S = 600.0


class ServerError(RagError):
    """A server that cannot be reached, refuses the request, or answers unexpectedly."""


def _retry_after(headers) -> str:
    value = headers.get("Retry-After") if headers is not None else None
    return f"; retry after {value} s" if value else ""


class Client:
    """One `rag serve` at `url` (http://host:port, a path prefix allowed)."""

    def __init__(self, url: str, *, token: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 read_timeout: float = READ_TIMEOUT_S, what: str = "rag serve",
                 token_variable: str = "RAG_API_TOKEN", setting: str = "--server"):
        url = url.strip()
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"{setting} {url!r}: expected http://HOST:PORT (or https://...)")
        self.url = url.rstrip("/")
        self._parts = parts
        self._prefix = parts.path.rstrip("/")
        self.token = token        # RAG_API_TOKEN: Config.api_token (the commands pass it)
        self.what, self.token_variable = what, token_variable
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout

    # ------------------------------------------------------------------ HTTP

    def _connection(self):
        import http.client

        p = self._parts
        kind = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        return kind(p.hostname, p.port, timeout=self.connect_timeout)

    def request(self, method: str, path: str, body: dict | None = None, *,
                accept: str = "application/json"):
        """The open response of a request that succeeded (2xx); its connection closes
        with it. Any failure is a ServerError naming the URL."""
        import socket

        where = self.url + path
        headers = {"Accept": accept, "User-Agent": "rag-cli"}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        try:
            conn.connect()
            conn.sock.settimeout(self.read_timeout)
            conn.request(method, self._prefix + path, body=data, headers=headers)
            response = conn.getresponse()
        except (socket.timeout, TimeoutError):
            conn.close()
            raise ServerError(f"{self.what} at {self.url} did not answer in time "
                              f"({method} {path})") from None
        except OSError as e:
            conn.close()
            reason = e.strerror or str(e) or type(e).__name__
            hint = (" (is `rag serve` running there? Without --server/RAG_SERVER the "
                    "question is answered here)" if self.what == "rag serve" else
                    " (is the server running there?)")
            raise ServerError(f"cannot reach {self.what} at {self.url}: {reason}{hint}") from None
        except Exception as e:  # noqa: BLE001 - http.client's protocol errors
            conn.close()
            raise ServerError(f"{where}: not an HTTP answer ({type(e).__name__}: {e})") from None
        if 200 <= response.status < 300:
            response.conn = conn          # closed together
            return response
        try:
            raw = response.read()
        finally:
            conn.close()
        raise self._error(method, path, response.status, response.headers, raw)

    def _error(self, method: str, path: str, status: int, headers, raw: bytes) -> ServerError:
        message = ""
        try:
            obj = json.loads(raw.decode("utf-8"))
            if isinstance(obj, dict):
                error = obj.get("error") or obj.get("detail") or ""
                # OpenAI servers: {"error": {"message": ...}}; rag serve: {"error": "..."}
                message = str(error.get("message") or error) if isinstance(error, dict) \
                    else str(error)
        except (ValueError, UnicodeDecodeError):
            pass
        said = f": {message}" if message else ""
        where = f"{self.url}{path}"
        if status == 401:
            how = (f"the token in {self.token_variable} is not the server's" if self.token
                   else f"set {self.token_variable} to the server's API token")
            return ServerError(f"{self.what} at {self.url} refused the request (401 "
                               f"Unauthorized{said}): {how}")
        if status == 404 and not message:
            return ServerError(f"{where}: not found (404): is {self.url} a {self.what} of "
                               "this kind?")
        if status == 429:
            return ServerError(f"{self.what} at {self.url}: too many requests from this "
                               f"client (429{said}){_retry_after(headers)}")
        if status == 503:
            return ServerError(f"{self.what} at {self.url} cannot take the question now (503"
                               f"{said or ': busy or still loading'}){_retry_after(headers)}")
        if status == 504:
            return ServerError(f"{self.what} at {self.url}: the question ran past the "
                               f"server's time limit (504{said})")
        return ServerError(f"{method} {where} failed: HTTP {status}{said}")

    def json(self, method: str, path: str, body: dict | None = None):
        response = self.request(method, path, body)
        try:
            raw = response.read()
        finally:
            response.conn.close()
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ServerError(f"{self.url}{path}: the answer is not JSON; is this a "
                              f"{self.what}?") from None

    # ------------------------------------------------------------------ API

    def health(self) -> dict:
        return self.json("GET", "/healthz")

    def search(self, question: str, *, k: int | None = None,
               mode: str | None = None, **editions) -> list[dict]:
        """What `rag search --json` prints, from GET /api/search. `editions`: as_of,
        entry_year, all_editions (rag.retrieval.editions)."""
        query = {"q": question, **({"k": k} if k else {}), **({"mode": mode} if mode else {}),
                 **{key: str(v).lower() if isinstance(v, bool) else v
                    for key, v in editions.items() if v}}
        hits = self.json("GET", "/api/search?" + urlencode(query))
        if not isinstance(hits, list):
            raise ServerError(f"{self.url}/api/search: expected a list of passages")
        return hits

    def ask(self, question: str, *, max_new_tokens: int | None = None,
            retrieval: bool = True, editions: dict | None = None) -> dict:
        """The object `rag ask --json` prints (plus the server's `id`, `index_generation`).
        `editions`: {as_of, entry_year, all_editions} fields of the request."""
        answer = self.json("POST", "/api/ask", self._ask_body(question, max_new_tokens,
                                                                retrieval, False, editions))
        if not isinstance(answer, dict) or "answer" not in answer:
            raise ServerError(f"{self.url}/api/ask: the answer has no 'answer' field")
        return answer

    def ask_stream(self, question: str, *, max_new_tokens: int | None = None,
                   retrieval: bool = True, on_text: Callable[[str], None] | None = None,
                   on_sources: Callable[[dict], None] | None = None,
                   editions: dict | None = None) -> dict:
        """Streams the answer's text to `on_text` as the server generates it; returns the
        whole answer object (the `done` event). Leaving early (Ctrl-C, an exception in a
        callback) closes the connection, and the server stops generating."""
        body = self._ask_body(question, max_new_tokens, retrieval, True, editions)
        response = self.request("POST", "/api/ask", body, accept="text/event-stream")
        done = None
        try:
            for event, data in _events(response):
                if event == "token":
                    if on_text and data.get("text"):
                        on_text(data["text"])
                elif event == "sources":
                    if on_sources:
                        on_sources(data)
                elif event == "error":
                    raise ServerError(f"{self.what} at {self.url} failed while answering: "
                                      f"{data.get('error') or data}")
                elif event == "done":
                    done = data
                    break
        except (TimeoutError, OSError) as e:
            raise ServerError(f"{self.what} at {self.url}: the answer stream broke off "
                              f"({e})") from None
        finally:
            response.conn.close()
        if not isinstance(done, dict):
            raise ServerError(f"{self.what} at {self.url}: the answer stream ended without "
                              "its final event")
        return done

    @staticmethod
    def _ask_body(question, max_new_tokens, retrieval, stream, editions=None) -> dict:
        body: dict = {"question": question, "stream": stream, **(editions or {})}
        if max_new_tokens:
            body["max_new_tokens"] = max_new_tokens
        if not retrieval:
            body["retrieval"] = False
        return body


def _events(response) -> Iterator[tuple[str, dict]]:
    """(event, JSON data) of a server-sent event stream, as each event completes."""
    for event, text in sse_events(response):
        try:
            payload = json.loads(text)
        except ValueError:
            payload = {"text": text}
        yield event, payload if isinstance(payload, dict) else {"value": payload}


def sse_events(response) -> Iterator[tuple[str, str]]:
    """(event, data text) of a server-sent event stream, as each event completes."""
    event, data = "message", []
    while True:
        raw = response.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue                    # a comment: keep-alive
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
