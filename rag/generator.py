"""What answering, chat and evaluation need from a language model, whatever runs it.

`Generator` is the interface; `rag.generate.TransformersGenerator` (Hugging Face
transformers + PEFT) is the implementation today, and other engines (CTranslate2, an
OpenAI-compatible server) plug in behind the same methods, so `rag.answer` and
`rag.evaluate` never know which one runs.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass


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
    return Generation(text, new_tokens, first_ms,
                      new_tokens / elapsed if elapsed > 0 else None, stopped_at_eos)


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

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's own tokenizer, without special tokens."""

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

    def cancel(self) -> None:
        """Stop the generation running now (from another thread)."""
        self._cancel.set()
