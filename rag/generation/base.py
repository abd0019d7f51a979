"""What answering, chat and evaluation need from a language model, whatever runs it.

`Generator` is the interface; `rag.generation.hf.TransformersGenerator` (Hugging Face
transformers + PEFT), `rag.generation.ct2.CT2Generator` (CTranslate2) and
`rag.generation.openai_compat.OpenAIGenerator` (an OpenAI-compatible server) plug in
behind the same methods, so `rag.answer` and `rag.evaluation.run` never know which one
runs. What every engine would otherwise repeat lives here: counting tokens, the check
that a prompt and its answer fit the window (`check_window`), tokens per second
(`rate`), and streaming text a whole character at a time (`CharacterStream`).
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.errors import RagError

DEFAULT_GENERATOR = "cyberagent/open-calm-3b"     # the answering model unless told otherwise


class ModelError(RagError):
    """A model, tokenizer or adapter that cannot be loaded or used as asked."""


def rate(tokens: int, seconds: float) -> float | None:
    """Tokens per second, None when nothing was timed or generated."""
    return tokens / seconds if seconds > 0 and tokens else None


@dataclass
class Generation:
    text: str
    new_tokens: int
    first_token_ms: float | None       # prefill and the first token
    tokens_per_s: float | None         # new tokens over the whole time, prefill included
    stopped_at_eos: bool
    cancelled: bool = False

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first, over the time after it: decoding alone (on a CPU the
        prefill of a long prompt dominates the whole-time rate)."""
        if not (self.first_token_ms and self.tokens_per_s and self.new_tokens > 1):
            return None
        rest = self.new_tokens / self.tokens_per_s - self.first_token_ms / 1000
        return (self.new_tokens - 1) / rest if rest > 0 else None


def batch_generation(text: str, new_tokens: int, stopped_at_eos: bool, started: float,
                     first_step: float | None, elapsed: float) -> Generation:
    """One sequence of a batch, timed as a stream of its own: the batch's prefill is its
    first token, and its rate is its own tokens over the batch's time (so the decode
    rate is per sequence; times the batch size it is the batch's throughput)."""
    first_ms = (first_step - started) * 1000 if first_step is not None else None
    return Generation(text, new_tokens, first_ms, rate(new_tokens, elapsed), stopped_at_eos)


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode: one value handed from the command line down to the model."""
    max_new_tokens: int = 256
    temperature: float = 0.0        # 0 = greedy: the same question gives the same answer
    fixed_length: bool = False      # exactly max_new_tokens, never stopping early (benchmarks)


class Generator(ABC):
    """A loaded language model. Attributes every implementation sets:
    `name` (model id or path), `adapter` (or None), `tokenizer` (a Hugging Face
    tokenizer: prompts are rendered with its chat template), `context_window` (tokens),
    `load_s` (seconds the load took)."""

    name: str
    adapter: str | None
    tokenizer: object
    context_window: int
    load_s: float

    def __init__(self) -> None:
        self._cancel = threading.Event()

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's own tokenizer, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def check_window(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """A prompt of `prompt_tokens` and an answer of `max_new_tokens` must fit the
        context window; every engine refuses one that does not, before generating."""
        if prompt_tokens + max_new_tokens > self.context_window:
            raise ModelError(f"a prompt ({prompt_tokens} tokens) + max_new_tokens "
                             f"({max_new_tokens}) exceeds the context window "
                             f"({self.context_window})")

    @abstractmethod
    def generate(self, prompt: str, options: GenerationOptions = GenerationOptions(), *,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """Generate after `prompt`, streaming text to `on_text` as it comes. Generation
        stops early, returning what it has with `cancelled` set, when `cancel()` is
        called from another thread; when `on_text` raises (Ctrl-C, a client that went
        away) generation stops too and the exception propagates."""

    @abstractmethod
    def generate_batch(self, prompts: list[str],
                       options: GenerationOptions = GenerationOptions()) -> list[Generation]:
        """Greedy answers for several prompts at once (evaluation)."""

    def stream_batch(self, prompts: list[str], options: GenerationOptions = GenerationOptions(),
                     on_text: Sequence[Callable[[str], None] | None] | None = None,
                     cancelled: Sequence[threading.Event] | None = None) -> list[Generation]:
        """Generate after several prompts together, streaming each one's text to its own
        `on_text[i]` (the server's batches). A sequence whose `cancelled[i]` is set, or
        whose `on_text[i]` raises, stops with `cancelled` set; the others go on.

        This default runs them one after another; engines that can decode a batch step
        by step override it. Greedy results equal those of `generate`."""
        on_text = list(on_text or [None] * len(prompts))
        cancelled = list(cancelled or [threading.Event() for _ in prompts])
        return [self._stream_one(p, options, cb, stop)
                for p, cb, stop in zip(prompts, on_text, cancelled)]

    def running_batch(self) -> "RunningBatch | None":
        """A batch that sequences join and leave at any decode step (continuous
        batching: `rag serve`'s worker), or None where this engine decodes a batch only
        from its start to its end; the server then gathers batches for `stream_batch`."""
        return None

    def _stream_one(self, prompt: str, options: GenerationOptions,
                    on_text: Callable[[str], None] | None,
                    cancelled: threading.Event) -> Generation:
        if cancelled.is_set():
            return Generation("", 0, None, None, False, cancelled=True)
        pieces: list[str] = []

        def forward(text: str) -> None:
            if cancelled.is_set():
                raise _Stopped
            pieces.append(text)
            if on_text:
                try:
                    on_text(text)
                except Exception as e:     # this sequence's reader failed: stop it alone
                    raise _Stopped from e

        try:
            return self.generate(prompt, options, on_text=forward)
        except _Stopped:
            text = "".join(pieces)
            return Generation(text, self.count_tokens(text), None, None, False, cancelled=True)

    def cancel(self) -> None:
        """Stop the generation running now (from another thread)."""
        self._cancel.set()


class CharacterStream:
    """Decoded text handed on a whole character at a time: a byte-level token may end
    inside a character, which decodes as U+FFFD until the next token completes it."""

    def __init__(self, on_text: Callable[[str], None] | None):
        self.on_text = on_text
        self.shown = ""

    def show(self, text: str) -> None:
        """`text` is all decoded so far: hand on what is new, unless it ends mid-character.
        An exception of `on_text` propagates (the reader is gone)."""
        if self.on_text and len(text) > len(self.shown) and not text.endswith("\ufffd"):
            self.on_text(text[len(self.shown):])
            self.shown = text

    def finish(self, text: str) -> None:
        """The final text: whatever is left, an incomplete character included."""
        if self.on_text and len(text) > len(self.shown):
            self.on_text(text[len(self.shown):])
            self.shown = text


class SequenceStream:
    """One sequence of a streamed batch (engines' `stream_batch`): its new tokens, and its
    text streamed whole characters at a time (`CharacterStream`)."""

    def __init__(self, tokenizer, on_text: Callable[[str], None] | None):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.chars = CharacterStream(on_text)
        self.ids: list[int] = []
        self.first_at: float | None = None
        self.ended_at: float | None = None
        self.stopped = self.cancelled = False

    def push(self, token: int, stop_ids: list[int], fixed_length: bool, cancel: bool) -> bool:
        """Take the next token; False when this sequence is finished."""
        now = time.perf_counter()
        self.first_at = self.first_at or now
        self.ended_at = now
        self.ids.append(token)
        if token in stop_ids and not fixed_length:
            self.stopped = True
            return False
        try:
            self.chars.show(self.text())
        except Exception:      # noqa: BLE001 - this sequence's reader is gone
            self.cancelled = True
            return False
        self.cancelled = cancel
        return not cancel

    def text(self) -> str:
        return self.tokenizer.decode(self.ids[:-1] if self.stopped else self.ids,
                                     skip_special_tokens=True)

    def result(self, started: float) -> Generation:
        text = self.text()
        if not self.cancelled:
            try:
                self.chars.finish(text)
            except Exception:      # noqa: BLE001 - the reader left at the last moment
                self.cancelled = True
        n = len(self.ids)
        elapsed = (self.ended_at or started) - started
        first = (self.first_at - started) * 1000 if self.first_at else None
        return Generation(text, n, first, rate(n, elapsed), self.stopped,
                          cancelled=self.cancelled)


@dataclass(eq=False)
class BatchSequence:
    """One sequence of a running batch (`Generator.running_batch`): what it was asked,
    its stream, and, once it has left, its `generation` or its `error`."""
    prompt_ids: list[int]
    options: GenerationOptions
    stream: SequenceStream
    cancelled: threading.Event
    tag: Any = None                    # the caller's own (the server's job)
    started: float | None = None       # perf_counter() when its prompt began to be read
    position: int = 0                  # where its next token goes (its real tokens so far)
    logits: Any = None                 # its last logits: its next token is chosen from them
    generation: Generation | None = None
    error: BaseException | None = None


class RunningBatch(ABC):
    """Continuous batching: sequences decode together, one step at a time; a sequence
    joins between any two steps and leaves on its own (end-of-text, its max_new_tokens,
    its cancel event, its reader failing).

        batch = generator.running_batch()
        batch.join(prompt, options, on_text=print)
        while batch.running:
            for seq in batch.step():           # those that ended in this step
                print(seq.generation or seq.error)
            # ... batch.join(...) again whenever a new question comes
    """

    @property
    @abstractmethod
    def running(self) -> int:
        """Sequences joined and not yet ended."""

    @abstractmethod
    def join(self, prompt: str, options: GenerationOptions = GenerationOptions(),
             on_text: Callable[[str], None] | None = None,
             cancelled: threading.Event | None = None, tag: Any = None) -> BatchSequence:
        """Add a sequence; it takes its first token at the next `step`. A prompt that
        cannot be generated (over the context window) raises here, and only here."""

    @abstractmethod
    def step(self) -> list[BatchSequence]:
        """One decode step for every running sequence; the sequences that ended in it,
        each with `generation` (or `error`: that sequence failed, alone where it can)."""


class _Stopped(Exception):
    """Raised into a one-at-a-time generation whose request was cancelled."""
