"""Settings -> Engine: the same Answerer `rag ask` builds (rag.factory), wrapped for
serving: the index followed live, the generator behind one worker."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from ..config import Config, ServeSection
from ..factory import AnswerOptions, ModelOptions, build_answerer, build_retriever, pick
from .answering import Engine
from .live_index import LiveIndex
from .worker import ModelWorker


@dataclass
class WorkerOptions:
    batch_size: int = ServeSection.batch_size          # defaults: the [serve] settings'
    batch_wait_ms: float = ServeSection.batch_wait_ms
    queue_size: int = ServeSection.queue_size
    index_check_ms: float = 500.0

    @classmethod
    def from_config(cls, cfg: Config, **overrides) -> "WorkerOptions":
        values = dict(batch_size=cfg.serve.batch_size, batch_wait_ms=cfg.serve.batch_wait_ms,
                      queue_size=cfg.serve.queue_size)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def build_engine(cfg: Config, model: ModelOptions, answer: AnswerOptions,
                 worker: WorkerOptions, *, retrieval: bool = True, log=lambda s: None) -> Engine:
    mode = pick(answer.mode, cfg.search.mode)
    lock = threading.Lock()
    index = None
    if retrieval:
        def load(index_dir):
            return build_retriever(cfg, index_dir, mode, warm=False)
        index = LiveIndex(pick(answer.index_dir, cfg.index), load, mode=mode,
                          check_s=worker.index_check_ms / 1000, lock=lock).watch()
    # Its retriever is the live index's, lent per request (Engine.prepare).
    answerer = build_answerer(cfg, model, answer, retrieval=False, log=log)
    model_worker = ModelWorker(answerer.generator, max_batch=worker.batch_size,
                               wait_s=worker.batch_wait_ms / 1000,
                               capacity=worker.queue_size).start()
    return Engine(answerer, model_worker, index, lock=lock)
