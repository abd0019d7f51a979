"""One question through the server: retrieve and build the prompt (under the lock
that searches share), hand it to the model worker, and follow its text as events.
/api/ask and /v1/chat/completions both answer through `Run`.
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

from ..answer import Answer, Answerer
from ..generation.base import Generation, GenerationOptions, Generator
from ..prompt import ABSTAIN_ANSWER, Turn
from .live_index import LiveIndex
from .worker import Job, ModelWorker, QueueFull

log = logging.getLogger("rag.serve")


class ApiError(Exception):
    """An answer to the client: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Engine:
    """What `rag serve` loads once: the generator and its worker, the live index, and
    how to answer (k, mode, abstention threshold, default decoding)."""
    generator: Generator
    worker: ModelWorker
    index: LiveIndex | None
    k: int = 5
    mode: str = "hybrid"
    min_score: float | None = None
    options: GenerationOptions = GenerationOptions()
    context_tokens: int | None = None        # the prompt budget ([generate] context_tokens)
    # Searches and prompt building share it: Sudachi's tokenizer is not thread-safe.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answerer(self, retriever, max_new_tokens: int) -> Answerer:
        options = GenerationOptions(max_new_tokens, self.options.temperature)
        return Answerer(self.generator, retriever, k=self.k, mode=self.mode,
                        min_score=self.min_score, options=options,
                        context_tokens=self.context_tokens)

    def search(self, query: str, k: int, mode: str) -> tuple[list[dict], str]:
        retriever, generation = self._retriever()
        with self.lock:
            hits = retriever.search(query, k=k, mode=mode)
        return [h.to_json() for h in hits], generation

    def _retriever(self):
        if self.index is None:
            raise ApiError(400, "this server has no index (started without retrieval)")
        return self.index.current()


@dataclass
class Prepared:
    question: str
    prompt: str
    sources: list
    abstained: bool
    retrieval: bool
    generation: str | None             # the index generation it was retrieved from
    options: GenerationOptions
    timings: dict


def prepare(engine: Engine, question: str, history: Sequence[Turn] = (), *,
            retrieval: bool = True, max_new_tokens: int | None = None) -> Prepared:
    """Retrieval and prompt (blocking: run it in a worker thread)."""
    retriever, generation = engine._retriever() if retrieval else (None, None)
    answerer = engine.answerer(retriever, max_new_tokens or engine.options.max_new_tokens)
    timings: dict = {"model_load_s": engine.generator.load_s}
    waiting = time.perf_counter()
    try:
        with engine.lock:
            timings["retrieval_wait_ms"] = (time.perf_counter() - waiting) * 1000
            history = answerer.fit_history(question, history)
            hits = None
            if retrieval:
                hits, timings["retrieval_ms"] = answerer.retrieve(question, history)
            started = time.perf_counter()
            prompt, sources, abstained = answerer.prepare(question, hits, history,
                                                          retrieval=retrieval)
            timings["prompt_ms"] = (time.perf_counter() - started) * 1000
            if not abstained:
                timings["prompt_tokens"] = engine.generator.count_tokens(prompt)
    except RagError as e:
        raise ApiError(400, str(e)) from None
    return Prepared(question, prompt, sources, abstained, retrieval, generation,
                    answerer.options, timings)


class Run:
    """A prepared question in the worker, and its events: ("token", text) pieces, then
    ("end", Generation). Its deadline counts from when the request arrived."""

    def __init__(self, engine: Engine, prepared: Prepared, deadline: float):
        self.engine, self.prepared, self.deadline = engine, prepared, deadline
        self.id = secrets.token_hex(8)
        self._events: asyncio.Queue = asyncio.Queue()
        self.job: Job | None = None
        self.generation: Generation | None = None

    def start(self) -> "Run":
        """Queue the prompt (503 when the queue is full). An abstention needs no model."""
        p = self.prepared
        if p.abstained:
            self._events.put_nowait(("token", ABSTAIN_ANSWER))
            self._events.put_nowait(("end", None))
            return self
        loop = asyncio.get_running_loop()
        relay = _TextRelay(loop, self._events)

        def on_done(gen: Generation | None, error: BaseException | None) -> None:
            def end() -> None:
                relay.flush()
                self._events.put_nowait(("error", error) if error else ("end", gen))
            loop.call_soon_threadsafe(end)

        self.job = Job(p.prompt, p.options, relay.add, on_done,
                       deadline=time.monotonic() + (self.deadline - loop.time()))
        try:
            self.engine.worker.submit(self.job)
        except QueueFull:
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
        try:
            while True:
                remaining = self.deadline - loop.time()
                if remaining <= 0:
                    raise ApiError(504, "the answer took longer than the server's time limit")
                try:
                    kind, value = await asyncio.wait_for(self._events.get(),
                                                         min(remaining, 0.5))
                except TimeoutError:
                    if still_wanted is not None and not await still_wanted():
                        raise ApiError(499, "the client closed the request")
                    continue
                if kind == "token":
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

    def answer(self) -> dict:
        """The finished answer as `rag ask --json` prints it, plus id and generation."""
        p, gen, timings = self.prepared, self.generation, dict(self.prepared.timings)
        if gen is None:
            answer = Answer(p.question, ABSTAIN_ANSWER, p.sources, True, True, "", timings)
        else:
            if gen.first_token_ms and timings.get("prompt_tokens"):
                timings["prefill_tokens_per_s"] = timings["prompt_tokens"] / (
                    gen.first_token_ms / 1000)
            answer = Answerer._answer(p.question, gen, p.sources, p.retrieval, p.prompt,
                                      timings)
        if self.job is not None:
            answer.timings.update(queue_ms=self.job.queue_ms,
                                  generation_ms=self.job.generation_ms)
        obj = answer.to_json()
        for out, source in zip(obj["sources"], p.sources):
            out.update(label=source.passage.label, text=source.passage.text,
                       id=source.passage.id)
        obj.update(id=self.id, index_generation=p.generation, model=self.engine.generator.name,
                   adapter=self.engine.generator.adapter)
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
