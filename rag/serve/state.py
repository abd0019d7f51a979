"""What a running `rag serve` holds: its limits (`ServeSettings`, read on every request)
and its state (`ServerState`: the Engine once loaded, the recent answers, feedback)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Config, ServeSection
from .answering import ApiError, Engine, RecentAnswers
from .feedback import FeedbackStore
from .guard import TokenBuckets
from .hosts import effective_allowed_hosts

log = logging.getLogger("rag.serve")


@dataclass
class ServeSettings:
    """The server's limits; a running server reads them on each request. Defaults are
    the [serve] settings' own (rag/config.py's ServeSection), the one place they are
    written; the token is RAG_API_TOKEN (Config.api_token)."""
    max_body_bytes: int = ServeSection.max_body_bytes
    max_question_chars: int = ServeSection.max_question_chars
    timeout_s: float = ServeSection.timeout_s
    rate_per_minute: float = ServeSection.rate_per_minute
    rate_burst: int = ServeSection.rate_burst
    feedback_db: str = ServeSection.feedback_db
    token: str | None = None
    host: str = ServeSection.host                 # the bound address: allowed_hosts' default
    allowed_hosts: list[str] = field(default_factory=list)
    forwarded_allow_ips: list[str] = field(default_factory=list)   # uvicorn's (server.py)
    auth_failures_per_minute: int = ServeSection.auth_failures_per_minute
    header_timeout_s: float = ServeSection.header_timeout_s
    body_timeout_s: float = ServeSection.body_timeout_s
    keep_alive_s: float = ServeSection.keep_alive_s
    model_name: str | None = ServeSection.model_name
    buckets: TokenBuckets = field(init=False)
    auth_failures: TokenBuckets = field(init=False)

    def __post_init__(self):
        self.buckets = TokenBuckets(self.rate_per_minute, self.rate_burst)
        self.auth_failures = TokenBuckets(self.auth_failures_per_minute,
                                          self.auth_failures_per_minute)

    @property
    def hosts(self) -> tuple[str, ...]:
        """The Host names answered (rag.serve.hosts): allowed_hosts, else by `host`."""
        return effective_allowed_hosts(self.allowed_hosts, self.host)

    @classmethod
    def from_config(cls, cfg: Config, **overrides) -> "ServeSettings":
        serve = cfg.serve
        values = dict(max_body_bytes=serve.max_body_bytes, timeout_s=serve.timeout_s,
                      max_question_chars=serve.max_question_chars,
                      rate_per_minute=serve.rate_per_minute, rate_burst=serve.rate_burst,
                      feedback_db=serve.feedback_db, token=cfg.api_token or None,
                      host=serve.host, allowed_hosts=list(serve.allowed_hosts),
                      forwarded_allow_ips=list(serve.forwarded_allow_ips),
                      auth_failures_per_minute=serve.auth_failures_per_minute,
                      header_timeout_s=serve.header_timeout_s,
                      body_timeout_s=serve.body_timeout_s, keep_alive_s=serve.keep_alive_s,
                      model_name=serve.model_name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ServerState:
    def __init__(self, settings: ServeSettings, load: Callable[[], Engine],
                 on_load_error: Callable[[str], None] | None = None):
        self.settings, self._load, self._on_load_error = settings, load, on_load_error
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.recent = RecentAnswers()
        self.feedback = FeedbackStore(settings.feedback_db)

    def load(self) -> None:
        try:
            self.engine = self._load()
        except Exception as e:  # noqa: BLE001 - /readyz says it; the log has the trace
            log.debug("loading failed", exc_info=True)
            self.load_error = str(e)
            if self._on_load_error:
                self._on_load_error(self.load_error)

    def ready(self) -> Engine:
        if self.engine is None:
            raise ApiError(503, f"not ready: {self.load_error}" if self.load_error
                           else "not ready: the models are loading", {"Retry-After": "5"})
        return self.engine
