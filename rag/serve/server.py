"""The uvicorn server of `rag serve`, configured explicitly rather than by uvicorn's
defaults: proxy headers believed only from [serve] forwarded_allow_ips (uvicorn's own
default trusts X-Forwarded-For from 127.0.0.1, which lets any local client name itself
another address), an idle keep-alive limit, and a limit on how long a connection may
take to send a request's head (uvicorn has none: half a header held a connection open
indefinitely). The body's limit is the app's (rag.serve.guard).
"""
from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .hosts import forwarded_allow_ips


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request line and headers do
    not arrive within `header_timeout_s` of its opening (or of the previous response:
    a keep-alive connection that starts a request and stalls is closed too)."""
    header_timeout_s = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()        # a whole head arrived: the app has it now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_head_timer()           # beside the keep-alive timer, which data stops
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_class(header_timeout_s: float) -> type[TimedH11Protocol]:
    return type("RagH11Protocol", (TimedH11Protocol,), {"header_timeout_s": header_timeout_s})


def uvicorn_config(app, settings, *, host: str = "127.0.0.1", port: int = 8000, **extra):
    """The uvicorn.Config `rag serve` runs `app` with; `settings`: its ServeSettings."""
    import uvicorn

    trusted = forwarded_allow_ips(settings.forwarded_allow_ips)
    values = dict(host=host, port=port, http=protocol_class(settings.header_timeout_s),
                  proxy_headers=bool(trusted), forwarded_allow_ips=trusted or "",
                  timeout_keep_alive=settings.keep_alive_s,
                  server_header=False, timeout_graceful_shutdown=5)
    values.update(extra)
    return uvicorn.Config(app, **values)
