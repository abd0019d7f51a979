"""What every request passes before a route sees it: security headers on every
response, the bearer token on /api and /v1, the body size limit and a per-client
rate limit. Errors are JSON `{"error": ...}`, as docs/serve-api.md says.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware), so streamed answers
pass through untouched and a client's disconnect still reaches the route.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time

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
    """Per client: `burst` requests at once, refilled at `per_minute`."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000):
        self.rate, self.burst, self.max_clients = per_minute / 60.0, burst, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(client, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                self._trim(now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate

    def _trim(self, now: float) -> None:
        if len(self._buckets) > self.max_clients:     # forget the clients idle longest
            for key, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[
                    :len(self._buckets) - self.max_clients]:
                del self._buckets[key]


async def send_error(send, status: int, message: str, headers=()) -> None:
    body = json.dumps({"error": message}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app, *, limits):
        """`limits`: an object with `token`, `max_body_bytes` and `buckets`
        (TokenBuckets), read on each request so a running server's limits can change."""
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in SECURITY_HEADERS if h[0] not in names)]
            await send(message)

        path = scope["path"]
        if path.startswith(PROTECTED):
            headers = dict(scope["headers"])
            token = self.limits.token
            if token and not _bearer_matches(headers.get(b"authorization", b""), token):
                return await send_error(send, 401, "missing or wrong bearer token",
                                        [(b"www-authenticate", b"Bearer")])
            length = headers.get(b"content-length")
            if length and length.isdigit() and int(length) > self.limits.max_body_bytes:
                return await send_error(send, 413, f"request body over "
                                        f"{self.limits.max_body_bytes} bytes")
            client = (scope.get("client") or ("unknown", 0))[0]
            wait = self.limits.buckets.take(client)
            if wait > 0:
                return await send_error(send, 429, "too many requests; try again later",
                                        [(b"retry-after", str(math.ceil(wait)).encode())])
        try:
            return await self.app(scope, receive, send_with_headers)
        except Exception:
            # Here rather than in Starlette's outermost handler, so that the answer
            # carries the security headers too; the trace goes to the log only.
            log.exception("%s %s failed", scope.get("method"), path)
            if started:
                raise
            return await send_error(send, 500, "internal server error")


def _bearer_matches(header: bytes, token: str) -> bool:
    scheme, _, given = header.decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                               token.encode())
