"""What a running `rag serve` holds: its limits (`ServeSettings`, read on every request)
and its state (`ServerState`: the Engine once loaded, the recent answers, feedback)."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Config
from .answering import ApiError, Engine, RecentAnswers
from .feedback import FeedbackStore
from .guard import TokenBuckets

log = logging.getLogger("rag.serve")


@dataclass
class ServeSettings:
    """The server's limits; a running server reads them on each request. Defaults are
    the [serve] settings' own (rag/config.py), the one place they are written."""
    max_body_bytes: int = Config.max_body_bytes
    max_question_chars: int = Config.max_question_chars
    timeout_s: float = Config.timeout_s
    rate_per_minute: float = Config.rate_per_minute
    rate_burst: int = Config.rate_burst
    feedback_db: str = Config.feedback_db
    token: str | None = None
    buckets: TokenBuckets = field(init=False)

    def __post_init__(self):
        self.buckets = TokenBuckets(self.rate_per_minute, self.rate_burst)

    @classmethod
    def from_config(cls, cfg: Config, **overrides) -> "ServeSettings":
        values = dict(max_body_bytes=cfg.max_body_bytes, timeout_s=cfg.timeout_s,
                      max_question_chars=cfg.max_question_chars,
                      rate_per_minute=cfg.rate_per_minute, rate_burst=cfg.rate_burst,
                      feedback_db=cfg.feedback_db, token=os.environ.get("RAG_API_TOKEN") or None)
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
