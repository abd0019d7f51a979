"""The index the server answers from, following `rag ingest`'s swaps without a restart.

A watcher thread (`watch()`) reads the index's CURRENT pointer (one small file) every
`check_s`, traffic or not, so an idle server is on the new generation before its next
question; `current()` checks too, at most as often, for a LiveIndex not watched. When
CURRENT names another generation, a background thread loads it (keeping the embedder already in memory when the index was built with the same
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
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reloads = 0
        self.last_error: str | None = None
        self.missing: str | None = None      # a generation CURRENT names that is not there
        self._failed: str | None = None      # the generation that failed to load

    def watch(self) -> "LiveIndex":
        """Follow CURRENT from a daemon thread, every `check_s`, until `stop()`."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="rag-index-watch",
                                             daemon=True)
            self._watcher.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout)
        if self._loading is not None:
            self._loading.join(timeout)

    def _watch(self) -> None:
        while not self._stop.wait(self.check_s):
            try:
                self._checked = time.monotonic()
                self._check()
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad moment
                log.exception("checking the index's CURRENT failed")

    def problem(self) -> str | None:
        """Why the index is not what CURRENT says (for /readyz), or None."""
        self._check()
        if self.missing:
            return (f"the index's CURRENT names generation {self.missing}, which does not "
                    f"exist (still answering from {self.generation})")
        if self.last_error:
            return (f"the index's current generation cannot be loaded: {self.last_error} "
                    f"(still answering from {self.generation})")
        return None

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
        with self._check_lock:
            if not name or name == self.generation:
                self.missing = None
                if name:
                    self.last_error = None
                return
            if not (self.index_dir / name / "manifest.json").is_file():
                if self.missing != name:
                    log.error("the index's CURRENT names generation %s, which does not exist "
                              "(still answering from %s)", name, self.generation)
                self.missing = name
                return
            self.missing = None
            if name == self._failed or (self._loading and self._loading.is_alive()):
                return
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
            self._failed = name          # not retried every second: a new CURRENT is
            log.error("cannot load index generation %s: %s (still answering from %s)",
                      name, e, self.generation)
            return
        self._current = (new, _generation_of(new))
        self.reloads += 1
        self.last_error = self._failed = None
        log.info("index generation %s in use (loaded in %.2f s)", self.generation,
                 time.perf_counter() - started)


def _generation_of(retriever) -> str:
    return Path(retriever.index.path).name
