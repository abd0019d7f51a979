"""The index the server answers from, following `rag ingest`'s swaps without a restart.

Each request asks `current()`: at most every `check_s` it reads the index's CURRENT
pointer (one small file). When it names another generation, a background thread loads
it (keeping the embedder already in memory when the index was built with the same
one) and swaps it in; until then, and for requests already running, the previous
retriever answers. ingest keeps the generation it replaced until the next swap, so the
files of the old one stay readable meanwhile.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ingest import store

log = logging.getLogger("rag.serve")


class LiveIndex:
    def __init__(self, index_dir: Path, load: Callable[[Path], object], *,
                 mode: str = "hybrid", check_s: float = 0.5, lock: threading.Lock | None = None):
        """`load(index_dir)` builds a Retriever of the live generation, not yet warmed
        up for `mode`; `lock` is held while one warms up (the lock searches hold:
        Sudachi's tokenizer is not thread-safe)."""
        self.index_dir, self._load, self.check_s = Path(index_dir), load, check_s
        self.mode = mode
        self._lock = lock or threading.Lock()
        retriever = load(self.index_dir)
        with self._lock:
            retriever.warm(mode)
        self._current = (retriever, _generation_of(retriever))
        self._checked = time.monotonic()
        self._loading: threading.Thread | None = None
        self.reloads = 0
        self.last_error: str | None = None

    @property
    def generation(self) -> str:
        return self._current[1]

    def current(self) -> tuple[object, str]:
        """(retriever, generation name): one pair, read together, for one request."""
        now = time.monotonic()
        if now - self._checked >= self.check_s:
            self._checked = now
            self._check()
        return self._current

    def _check(self) -> None:
        try:
            name = (self.index_dir / store.CURRENT).read_text(encoding="utf-8").strip()
        except OSError:
            return                       # mid-swap or gone: keep answering from what we have
        if name and name != self.generation and not (self._loading and self._loading.is_alive()):
            self._loading = threading.Thread(target=self._reload, args=(name,),
                                             name="rag-index-reload", daemon=True)
            self._loading.start()

    def _reload(self, name: str) -> None:
        started = time.perf_counter()
        old = self._current[0]
        try:
            new = self._load(self.index_dir)
            if getattr(new, "info", None) == getattr(old, "info", None) and getattr(
                    old, "_embedder", None) is not None:
                new._embedder = old._embedder          # same embedder: do not load it twice
            with self._lock:
                new.warm(self.mode)
        except Exception as e:  # noqa: BLE001 - the old index keeps answering
            self.last_error = str(e)
            log.error("cannot load index generation %s: %s (still answering from %s)",
                      name, e, self.generation)
            return
        self._current = (new, _generation_of(new))
        self.reloads += 1
        self.last_error = None
        log.info("index generation %s in use (loaded in %.2f s)", self.generation,
                 time.perf_counter() - started)


def _generation_of(retriever) -> str:
    return Path(retriever.index.path).name
