"""What every request passes before a route sees it: the Host header checked (DNS
rebinding), security headers on every response, the bearer token on /api and /v1 (wrong
guesses throttled per address), the body size limit, JSON bodies only (a cross-site
form or text/plain POST gets 415), a per-client rate limit and a time limit on reading
the body. Errors are JSON `{"error": ...}` (OpenAI's error object under /v1), as
docs/serve-api.md says.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware), so streamed answers
pass through untouched and a client's disconnect still reaches the route.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict

from starlette.requests import ClientDisconnect

from .hosts import host_allowed

# The page is served by the app itself; nothing else may run or load on it.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
     b"form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
PROTECTED = ("/api/", "/v1/")
log = logging.getLogger("rag.serve")


class TokenBuckets:
    """Per client: `burst` requests at once, refilled at `per_minute`. At most
    `max_clients` are remembered (the one idle longest is forgotten first: an LRU, so
    each request costs O(1) however many addresses have called)."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000):
        self.rate, self.burst, self.max_clients = per_minute / 60.0, burst, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """0 when the request may go ahead (a token is taken), else seconds until it may."""
        return self._use(client, take=True)

    def peek(self, client: str) -> float:
        """As `take`, without taking a token: 0 while the client has one left."""
        return self._use(client, take=False)

    def _use(self, client: str, *, take: bool) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            if not take and client not in self._buckets:
                return 0.0                                 # a full bucket: nothing to keep
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            if take and tokens >= 1:
                tokens -= 1
            self._buckets[client] = (tokens, now)          # the most recent, at the end
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)          # the one idle longest
            return wait


class BodyTimeout(Exception):
    """The client did not send its whole body within [serve] body_timeout_s."""


# OpenAI's error object on /v1 (its clients show `error.message`); {"error": "..."} elsewhere.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 408: "timeout",
                 409: "invalid_request_error", 413: "invalid_request_error",
                 415: "invalid_request_error", 421: "invalid_request_error",
                 422: "invalid_request_error", 429: "rate_limit_error",
                 499: "invalid_request_error", 503: "server_overloaded", 504: "timeout",
                 507: "server_error"}
_OPENAI_CODES = {401: "invalid_api_key", 404: "not_found", 413: "request_too_large",
                 429: "rate_limit_exceeded", 503: "server_overloaded", 504: "timeout"}


def error_json(path: str, status: int, message: str, param: str | None = None) -> dict:
    """The error body for `path`: OpenAI's shape under /v1/, the API's own elsewhere."""
    if path.startswith("/v1/") or path == "/v1":
        return {"error": {"message": message,
                          "type": _OPENAI_TYPES.get(status, "server_error" if status >= 500
                                                    else "invalid_request_error"),
                          "param": param, "code": _OPENAI_CODES.get(status)}}
    return {"error": message}


async def send_error(send, status: int, message: str, headers=(), *, path: str = "",
                     param: str | None = None) -> None:
    body = json.dumps(error_json(path, status, message, param), ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": body})


def _is_json(content_type: bytes) -> bool:
    kind = content_type.decode("latin-1").partition(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


class Guard:
    def __init__(self, app, *, limits):
        """`limits`: the ServeSettings (token, max_body_bytes, body_timeout_s, hosts,
        buckets and auth_failures), read on each request so a running server's limits
        can change."""
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        started = False
        path = scope["path"]
        limits = self.limits

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in SECURITY_HEADERS if h[0] not in names)]
            await send(message)

        headers = dict(scope["headers"])
        if not host_allowed(headers.get(b"host", b"").decode("latin-1"), limits.hosts):
            return await send_error(send, 400, "this server does not answer for that Host "
                                    "header ([serve] allowed_hosts)", path=path)
        if path.startswith(PROTECTED) or path == "/v1":
            client = (scope.get("client") or ("unknown", 0))[0]
            token = limits.token
            if token:
                wait = limits.auth_failures.peek(client)
                if wait > 0:
                    return await _too_many(send, wait, path, "too many wrong tokens from "
                                           "this address; try again later")
                if not _bearer_matches(headers.get(b"authorization", b""), token):
                    limits.auth_failures.take(client)
                    return await send_error(send, 401, "missing or wrong bearer token",
                                            [(b"www-authenticate", b"Bearer")], path=path)
            length = headers.get(b"content-length")
            if length and length.isdigit() and int(length) > limits.max_body_bytes:
                return await send_error(send, 413, f"request body over "
                                        f"{limits.max_body_bytes} bytes", path=path)
            if scope.get("method") in ("POST", "PUT", "PATCH") and not _is_json(
                    headers.get(b"content-type", b"")):
                return await send_error(send, 415, "the body must be JSON, sent with "
                                        "Content-Type: application/json", path=path)
            wait = limits.buckets.take(client)
            if wait > 0:
                return await _too_many(send, wait, path, "too many requests; try again later")
        try:
            return await self.app(scope, _body_deadline(receive, limits.body_timeout_s),
                                  send_with_headers)
        except BodyTimeout:
            log.info("%s %s: the body did not arrive within %g s; closing the connection",
                     scope.get("method"), path, limits.body_timeout_s)
            if not started:
                await send_error(send, 408, f"the request body did not arrive within "
                                 f"{limits.body_timeout_s:g} s", [(b"connection", b"close")],
                                 path=path)
        except ClientDisconnect:
            client = (scope.get("client") or ("?", 0))[0]
            log.info("%s %s: the client (%s) went away before sending its whole body",
                     scope.get("method"), path, client)
        except Exception:
            # Here rather than in Starlette's outermost handler, so that the answer
            # carries the security headers too; the trace goes to the log only.
            log.exception("%s %s failed", scope.get("method"), path)
            if started:
                raise
            return await send_error(send, 500, "internal server error", path=path)


async def _too_many(send, wait: float, path: str, message: str):
    return await send_error(send, 429, message,
                            [(b"retry-after", str(max(1, math.ceil(wait))).encode())], path=path)


def _body_deadline(receive, timeout_s: float):
    """`receive`, raising BodyTimeout when the body is not complete within `timeout_s` of
    the request's start; after the body, as it was (waiting for a disconnect has no limit)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    done = False

    async def receive_in_time():
        nonlocal done
        if done:
            return await receive()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise BodyTimeout
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            raise BodyTimeout from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            done = True
        return message
    return receive_in_time


def _bearer_matches(header: bytes, token: str) -> bool:
    scheme, _, given = header.decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                               token.encode())
