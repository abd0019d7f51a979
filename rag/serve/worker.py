"""The one model thread: questions wait in a bounded queue, are gathered for a short
while into a batch, and are generated together (`Generator.stream_batch`), each
streaming its own text.

A request whose client went away or whose time limit passed sets its `cancelled`
event: it leaves the batch at the next token, or is dropped before it starts. The
queue is bounded so that a crowd gets a quick 503 rather than answers minutes late.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..generation.base import Generation, GenerationOptions, Generator

log = logging.getLogger("rag.serve")


class QueueFull(Exception):
    """Every place in the queue is taken."""


@dataclass(eq=False)
class Job:
    """One prompt to generate. `on_text` and `on_done` are called from the worker thread."""
    prompt: str
    options: GenerationOptions
    on_text: Callable[[str], None]
    on_done: Callable[[Generation | None, BaseException | None], None]
    deadline: float                          # time.monotonic() after which it is dropped
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None             # when its batch began generating
    finished: float | None = None
    generation: Generation | None = None
    streamed: bool = False                   # some of its text has gone out

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def queue_ms(self) -> float:
        return ((self.started or self.submitted) - self.submitted) * 1000

    @property
    def generation_ms(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return (self.finished - self.started) * 1000


@dataclass
class WorkerStats:
    batches: int = 0
    sequences: int = 0
    tokens: int = 0
    cancelled: int = 0
    largest_batch: int = 0
    recent: list = field(default_factory=list)      # the last finished jobs (for tests)


class ModelWorker:
    def __init__(self, generator: Generator, *, max_batch: int = 16, wait_s: float = 0.02,
                 capacity: int = 64):
        self.generator = generator
        self.max_batch, self.wait_s, self.capacity = max_batch, wait_s, capacity
        self._queue: queue.Queue[Job] = queue.Queue(capacity)
        self._stop = threading.Event()
        self.stats = WorkerStats()
        self._thread = threading.Thread(target=self._run, name="rag-model-worker", daemon=True)

    def start(self) -> "ModelWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.generator.cancel()
        self._thread.join(timeout)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = self._gather(first)
            live = [j for j in batch if self._still_wanted(j)]
            groups: dict[GenerationOptions, list[Job]] = {}
            for job in live:
                groups.setdefault(job.options, []).append(job)
            for options, jobs in groups.items():
                self._generate(options, jobs)

    def _gather(self, first: Job) -> list[Job]:
        """The first job and whatever arrives within the wait, up to the batch size."""
        batch = [first]
        until = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            remaining = until - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0
                             else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _still_wanted(self, job: Job) -> bool:
        if job.cancelled.is_set() or time.monotonic() > job.deadline:
            job.started = job.finished = time.monotonic()
            self._finish(job, Generation("", 0, None, None, False, cancelled=True), None)
            return False
        return True

    def _generate(self, options: GenerationOptions, jobs: list[Job]) -> None:
        started = time.monotonic()
        for job in jobs:
            job.started = started

        def streamer(job: Job) -> Callable[[str], None]:
            def on_text(text: str) -> None:
                if time.monotonic() > job.deadline:
                    job.cancel()           # its time is up: leave the batch at this token
                job.streamed = True
                job.on_text(text)
            return on_text

        try:
            generations = self.generator.stream_batch(
                [j.prompt for j in jobs], options, on_text=[streamer(j) for j in jobs],
                cancelled=[j.cancelled for j in jobs])
        except Exception as e:  # noqa: BLE001 - each request reports it; the worker goes on
            if len(jobs) > 1 and not any(j.streamed for j in jobs):
                log.warning("a batch of %d failed (%s); generating its questions one by one",
                            len(jobs), e)
                for job in jobs:             # so that one bad prompt fails alone
                    self._generate(options, [job])
                return
            log.exception("generation failed")
            for job in jobs:
                job.finished = time.monotonic()
                self._finish(job, None, e)
            return
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        finished = time.monotonic()      # a request hears its end with the whole batch
        for job, gen in zip(jobs, generations):
            job.finished = finished
            self.stats.sequences += 1
            self.stats.tokens += gen.new_tokens
            self.stats.cancelled += gen.cancelled
            self._finish(job, gen, None)

    def _finish(self, job: Job, gen: Generation | None, error: BaseException | None) -> None:
        job.generation = gen
        self.stats.recent = [*self.stats.recent[-63:], job]
        try:
            job.on_done(gen, error)
        except Exception:  # noqa: BLE001 - a request's callback must not stop the worker
            log.exception("a finished request could not be told")
