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
    buckets: TokenBuckets = field(init=False)

    def __post_init__(self):
        self.buckets = TokenBuckets(self.rate_per_minute, self.rate_burst)

    @classmethod
    def from_config(cls, cfg: Config, **overrides) -> "ServeSettings":
        serve = cfg.serve
        values = dict(max_body_bytes=serve.max_body_bytes, timeout_s=serve.timeout_s,
                      max_question_chars=serve.max_question_chars,
                      rate_per_minute=serve.rate_per_minute, rate_burst=serve.rate_burst,
                      feedback_db=serve.feedback_db, token=cfg.api_token or None)
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
