"""One question through the server, on the answering path `rag ask` takes: the
Answerer's `prepare` (under the lock that searches share), the model worker in place of
`Generator.generate`, then the Answerer's `finish`. /api/ask and /v1/chat/completions
both answer through `Run`, which follows the worker's text as events.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from ingest.errors import RagError

from ..answer import Answerer, Prepared, unstreamed
from ..generation.base import Generation, GenerationOptions, Generator
from ..prompt import ABSTAIN_ANSWER, Turn
from .admission import Admission
from .live_index import LiveIndex
from .worker import Job, ModelWorker, QueueFull

log = logging.getLogger("rag.serve")


class ApiError(Exception):
    """An answer to the client: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None, *,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.param = param              # the request field at fault (OpenAI's error.param)


@dataclass
class Engine:
    """What `rag serve` loads once: the Answerer (the generator, and how to answer: k,
    mode, abstention threshold, decoding, the prompt budget; built by rag.factory as
    for `rag ask`), the generator's worker, and the live index."""
    answerer: Answerer
    worker: ModelWorker
    index: LiveIndex | None
    admission: Admission = field(default_factory=Admission)
    # Searches and prompt building share it: Sudachi's tokenizer is not thread-safe.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def generator(self) -> Generator:
        return self.answerer.generator

    @property
    def options(self) -> GenerationOptions:
        return self.answerer.options

    def search(self, query: str, k: int | None = None,
               mode: str | None = None, *, editions=None) -> tuple[list[dict], str]:
        """Hits as `rag search --json` gives them; k and mode default to [search]'s;
        `editions`: an EditionChoice (None: as of today)."""
        retriever, generation = self._retriever()
        with self.lock:
            hits = retriever.search(query, k=k or self.answerer.k,
                                    mode=mode or self.answerer.mode, editions=editions)
        return [h.to_json() for h in hits], generation

    def _retriever(self):
        if self.index is None:
            raise ApiError(400, "this server has no index (started without retrieval)")
        return self.index.current()

    def prepare(self, question: str, history: Sequence[Turn] = (), *,
                retrieval: bool = True, max_new_tokens: int | None = None,
                system: str | None = None, editions=None) -> "Asked":
        """`Answerer.prepare` over the index generation in use now (blocking: run it in a
        worker thread); `system`: text added to the prompt's instruction; `editions`: the
        editions retrieved (None: as of today)."""
        from ..retrieval.editions import with_editions

        retriever, generation = self._retriever() if retrieval else (None, None)
        answerer = with_editions(self.answerer.using(retriever), editions)
        if system:
            answerer.system = system
        waiting = time.perf_counter()
        try:
            with self.lock:
                wait = {"retrieval_wait_ms": (time.perf_counter() - waiting) * 1000}
                prepared = answerer.prepare(question, history, retrieval=retrieval,
                                            max_new_tokens=max_new_tokens, timings=wait)
        except RagError as e:
            raise ApiError(400, str(e)) from None
        return Asked(answerer, prepared, generation)


@dataclass
class Asked:
    """A prepared question, the answerer that prepared it (and will finish it), and the
    index generation it was retrieved from."""
    answerer: Answerer
    prepared: Prepared
    generation: str | None


class Run:
    """A prepared question in the worker, and its events: ("token", text) pieces, then
    ("end", Generation). Its deadline counts from when the request arrived."""
    PROBE_S = 0.25               # how often a non-streamed request asks if its client stayed

    def __init__(self, engine: Engine, asked: Asked, deadline: float):
        self.engine, self.asked, self.deadline = engine, asked, deadline
        self.prepared = asked.prepared
        self.id = secrets.token_hex(8)
        self._events: asyncio.Queue = asyncio.Queue()
        self.job: Job | None = None
        self.generation: Generation | None = None
        self.streamed = ""          # the text handed on so far (none while held back)

    def start(self) -> "Run":
        """Queue the prompt (503 when the queue is full). An abstention needs no model."""
        p = self.prepared
        if p.abstained:
            self._events.put_nowait(("token", ABSTAIN_ANSWER))
            self._events.put_nowait(("end", None))
            return self
        loop = asyncio.get_running_loop()
        relay = _TextRelay(loop, self._events)

        admission = self.engine.admission

        def on_done(gen: Generation | None, error: BaseException | None) -> None:
            job = self.job
            admission.done(job.started, job.finished,
                           error is None and gen is not None and not gen.cancelled)

            def end() -> None:
                relay.flush()
                self._events.put_nowait(("error", error) if error else ("end", gen))
            loop.call_soon_threadsafe(end)

        self.job = Job(p.prompt, p.options, relay.add, on_done,
                       deadline=time.monotonic() + (self.deadline - loop.time()))
        retry = admission.admit(self.deadline - loop.time())
        if retry is not None:
            self.job = None
            raise ApiError(503, "the server is busy: the questions before this one would "
                           "not leave time to answer it within the time limit; try again "
                           f"in {retry:.0f} s", {"Retry-After": f"{retry:.0f}"})
        try:
            self.engine.worker.submit(self.job)
        except QueueFull:
            admission.done(None, None, False)
            self.job = None
            raise ApiError(503, "the server is busy; try again shortly",
                           {"Retry-After": "2"}) from None
        return self

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    async def events(self, still_wanted=None) -> AsyncIterator[str]:
        """The answer's text as it comes. `still_wanted` (async, optional) is asked
        while waiting; False (the client left) cancels the generation."""
        loop = asyncio.get_running_loop()
        asked_at = loop.time()
        try:
            while True:
                remaining = self.deadline - loop.time()
                if remaining <= 0:
                    raise ApiError(504, "the answer took longer than the server's time limit")
                # Asked every PROBE_S, tokens flowing or not: a client that hung up while
                # text streamed in would otherwise hold the model to the end of its answer.
                if still_wanted is not None and loop.time() - asked_at >= self.PROBE_S:
                    asked_at = loop.time()
                    if not await still_wanted():
                        raise ApiError(499, "the client closed the request")
                try:
                    kind, value = await asyncio.wait_for(self._events.get(),
                                                         min(remaining, self.PROBE_S))
                except TimeoutError:
                    continue
                if kind == "token":
                    if not self.prepared.hold:      # may be replaced: given whole at the end
                        self.streamed += value
                        yield value
                elif kind == "error":
                    log.error("generation failed: %s", value)
                    raise ApiError(500, "generation failed; the server log has the reason")
                else:
                    self.generation = value
                    if value is not None and value.cancelled:
                        raise ApiError(504, "the answer took longer than the server's "
                                       "time limit")
                    return
        finally:
            self.cancel()             # a no-op when it finished; stops it otherwise

    def rest(self, answer: dict) -> str:
        """The finished text a streaming reader has not had yet (rag.answer.unstreamed):
        a post-hoc citation note, or the whole answer when it was held back."""
        return unstreamed(self.streamed, answer["answer"])

    def answer(self) -> dict:
        """The finished answer as `rag ask --json` prints it, plus id and generation."""
        timings = {} if self.job is None else {"queue_ms": self.job.queue_ms,
                                               "generation_ms": self.job.generation_ms}
        answer = self.asked.answerer.finish(self.prepared, self.generation, **timings)
        obj = answer.to_json()
        obj.update(id=self.id, index_generation=self.asked.generation,
                   model=self.engine.generator.name, adapter=self.engine.generator.adapter)
        return obj


class _TextRelay:
    """Text pieces from the model thread to a request's event queue. The event loop is
    woken once for whatever came meanwhile, and hands text on at most every FLUSH_S: a
    batch of 16 streams makes 16 pieces a step, and the loop shares the CPU and the GIL
    with the model (a reader sees no difference in 30 ms)."""
    FLUSH_S = 0.03

    def __init__(self, loop: asyncio.AbstractEventLoop, events: asyncio.Queue):
        self.loop, self.events = loop, events
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._last = 0.0

    def add(self, text: str) -> None:            # the model thread
        with self._lock:
            self._pending.append(text)
            if len(self._pending) > 1:
                return                           # a flush is already on its way
        self.loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:                 # the event loop, from here on
        wait = self._last + self.FLUSH_S - self.loop.time()
        if wait > 0:
            self.loop.call_later(wait, self.flush)
        else:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            text = "".join(self._pending)
            self._pending.clear()
        self._last = self.loop.time()
        if text:
            self.events.put_nowait(("token", text))


class RecentAnswers:
    """The last answers by id, for feedback (a rating names the answer it is about)."""

    def __init__(self, size: int = 5000):
        self.size = size
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, answer: dict) -> None:
        with self._lock:
            self._items[answer["id"]] = answer
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, answer_id: str) -> dict | None:
        with self._lock:
            return self._items.get(answer_id)
