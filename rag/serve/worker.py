"""The one model thread: questions wait in a bounded queue and are generated together,
each streaming its own text.

Where the engine can (transformers: `Generator.running_batch`), batching is continuous:
a question joins the running batch at the next decode step, and each leaves it when it
ends, its row taken by the next question (vLLM's and TGI's iteration-level
scheduling). Other engines (CTranslate2, an OpenAI-compatible server) have whole
batches: the questions that come within `wait_s` are gathered, generated together
(`Generator.stream_batch`) and the next batch starts when the last of them ends.

A request whose client went away or whose time limit passed sets its `cancelled`
event: it leaves the batch at the next token, or is dropped before it starts. The
queue is bounded so that a crowd gets a quick 503 rather than answers minutes late.
`stats` counts what the worker did; admission control measures throughput itself
(rag/serve/admission.py).
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
    """Counters of the worker (written by its thread, read by anyone)."""
    batches: int = 0             # busy periods: batches begun with nothing running
    steps: int = 0               # decode steps of running batches (continuous batching)
    sequences: int = 0           # requests generated to their end (or their cancel)
    tokens: int = 0
    cancelled: int = 0
    failed: int = 0
    largest_batch: int = 0       # the most sequences generating at once
    busy_s: float = 0.0          # time the model spent generating
    recent: list = field(default_factory=list)      # the last finished jobs (for tests)

    def ended(self, gen: Generation | None) -> None:
        if gen is not None:
            self.sequences += 1
            self.tokens += gen.new_tokens
            self.cancelled += gen.cancelled
        else:
            self.failed += 1


class ModelWorker:
    def __init__(self, generator: Generator, *, max_batch: int = 16, wait_s: float = 0.02,
                 capacity: int = 64):
        self.generator = generator
        self.max_batch, self.wait_s, self.capacity = max_batch, wait_s, capacity
        self._queue: queue.Queue[Job] = queue.Queue(capacity)
        self._stop = threading.Event()
        self.stats = WorkerStats()
        self._batch = None                    # the running batch (continuous batching)
        self._generating: list[Job] = []      # the whole batch of now (other engines)
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
        """Questions in the queue, not yet generating."""
        return self._queue.qsize()

    @property
    def running(self) -> int:
        """Questions generating now (in the running batch, or the batch of now)."""
        return self._batch.running if self._batch is not None else len(self._generating)

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        batch = self.generator.running_batch()
        if batch is not None:
            self._run_continuous(batch)
            return
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

    # ------------------------------------------------ continuous batching (transformers)

    def _run_continuous(self, batch) -> None:
        """Between two decode steps, the queue's questions join (up to `max_batch`
        running); each step's ended sequences are answered at once."""
        inside: set[Job] = set()                 # joined, not yet answered
        self._batch = batch
        while not self._stop.is_set():
            if not batch.running:
                try:
                    first = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.stats.batches += 1
                joiners = self._gather(first)        # an idle model waits `wait_s` for more
            else:
                joiners = self._take(self.max_batch - batch.running)
            for job in joiners:
                if self._join(batch, job):
                    inside.add(job)
            if not batch.running:
                continue
            self.stats.largest_batch = max(self.stats.largest_batch, batch.running)
            started = time.monotonic()
            try:
                ended = batch.step()
            except Exception as e:  # noqa: BLE001 - a bug in the step: fail what ran, go on
                log.exception("a decode step failed")
                ended = []
                for job in inside:
                    self._finish(job, None, e)
                inside.clear()
                batch = self._batch = self.generator.running_batch()
            now = time.monotonic()
            self.stats.busy_s += now - started
            self.stats.steps += 1
            for seq in ended:
                job = seq.tag
                inside.discard(job)
                job.finished = now
                if seq.error is not None:
                    log.error("generation failed: %s", seq.error)
                self._finish(job, seq.generation, seq.error)
        for job in inside:                       # stopping: what runs ends as cancelled
            job.cancel()
        while batch.running:
            for seq in batch.step():
                self._finish(seq.tag, seq.generation, seq.error)

    def _take(self, n: int) -> list[Job]:
        """Up to `n` jobs that are waiting now (no waiting for more)."""
        jobs = []
        while len(jobs) < n:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _join(self, batch, job: Job) -> bool:
        """The job joins the batch at the next step (False: it was dropped or refused)."""
        if not self._still_wanted(job):
            return False
        job.started = time.monotonic()
        try:
            batch.join(job.prompt, job.options, self._streamer(job), job.cancelled, tag=job)
        except Exception as e:  # noqa: BLE001 - this question fails alone (too long, ...)
            job.finished = time.monotonic()
            self._finish(job, None, e)
            return False
        return True

    def _streamer(self, job: Job) -> Callable[[str], None]:
        def on_text(text: str) -> None:
            if time.monotonic() > job.deadline:
                job.cancel()           # its time is up: leave the batch at this token
            job.streamed = True
            job.on_text(text)
        return on_text

    # ------------------------------------------------------ whole batches (other engines)

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
            self._finish(job, Generation("", 0, None, None, False, cancelled=True), None,
                         generated=False)
            return False
        return True

    def _generate(self, options: GenerationOptions, jobs: list[Job]) -> None:
        started = time.monotonic()
        for job in jobs:
            job.started = started
        self._generating = jobs
        try:
            generations = self.generator.stream_batch(
                [j.prompt for j in jobs], options, on_text=[self._streamer(j) for j in jobs],
                cancelled=[j.cancelled for j in jobs])
        except Exception as e:  # noqa: BLE001 - each request reports it; the worker goes on
            if len(jobs) > 1 and not any(j.streamed for j in jobs):
                log.warning("a batch of %d failed (%s); generating its questions one by one",
                            len(jobs), e)
                for job in jobs:             # so that one bad prompt fails alone
                    self._generate(options, [job])
                return
            log.exception("generation failed")
            self.stats.busy_s += time.monotonic() - started
            self._generating = []
            for job in jobs:
                job.finished = time.monotonic()
                self._finish(job, None, e)
            return
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        finished = time.monotonic()      # a request hears its end with the whole batch
        self.stats.busy_s += finished - started
        self._generating = []
        for job, gen in zip(jobs, generations):
            job.finished = finished
            self._finish(job, gen, None)

    def _finish(self, job: Job, gen: Generation | None, error: BaseException | None, *,
                generated: bool = True) -> None:
        job.generation = gen
        if generated:                     # not one dropped before it started
            self.stats.ended(gen)
        self.stats.recent = [*self.stats.recent[-63:], job]
        try:
            job.on_done(gen, error)
        except Exception:  # noqa: BLE001 - a request's callback must not stop the worker
            log.exception("a finished request could not be told")
