"""The transformers implementation of the generator interface (rag.generation.base):
a Hugging Face causal LM with an optional PEFT LoRA adapter.

Loading (device, dtype, weights, adapter) is rag.generation.models'; here: decoding, greedy by
default so answers are reproducible, tokens streamed through a streamer thread, the
end-of-text (and end-of-turn) tokens stop generation, and a stopping criterion that
ends the generation thread when the caller cancels or stops reading. Load once,
generate many times.
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .base import (Generation, GenerationOptions, Generator, SequenceStream,
                   batch_generation, rate)
from .models import (DEFAULT_GENERATOR, ModelError, apply_adapter, base_model_for,
                     load_causal_lm, load_tokenizer, pick_device_dtype, tokenizer_source)

GeneratorError = ModelError     # the name answering code has always caught


class TransformersGenerator(Generator):
    """A causal LM (+ LoRA adapter), loaded once."""

    def __init__(self, model: str | None = None, *, adapter: str | None = None,
                 device: str | None = None, dtype: str | None = None,
                 trust_remote_code: bool = False, allow_pickle: bool = False):
        import torch

        super().__init__()
        started = time.perf_counter()
        if adapter:       # checked before any weights are loaded
            base = model or base_model_for(adapter, None)
            if not allow_pickle and Path(adapter).is_dir() and not Path(
                    adapter, "adapter_model.safetensors").is_file():
                raise GeneratorError(f"{adapter}: no adapter_model.safetensors (pickled "
                                     "adapters load only with --allow-pickle)")
        else:
            base = model or DEFAULT_GENERATOR
        self.name, self.adapter = base, adapter
        try:
            self.device, self.dtype = pick_device_dtype(device, dtype)
        except (RuntimeError, AssertionError) as e:
            raise GeneratorError(f"cannot use device {device!r}: {e}") from None
        self.tokenizer = load_tokenizer(tokenizer_source(adapter, base),
                                        trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(base, device=self.device, dtype=self.dtype,
                                    trust_remote_code=trust_remote_code,
                                    allow_pickle=allow_pickle)
        if adapter:
            self.model = apply_adapter(self.model, adapter, base)
        try:
            self.model.to(self.device)
        except (RuntimeError, AssertionError) as e:
            raise GeneratorError(f"cannot use device {self.device!r}: {e}") from None
        self.model.eval()
        self.context_window = self._context_window()
        # End-of-text, plus the end-of-turn tokens chat models list in generation_config.
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        configured = configured if isinstance(configured, list) else [configured]
        self.stop_ids = sorted({i for i in [*configured, self.tokenizer.eos_token_id]
                                if i is not None})
        self.load_s = time.perf_counter() - started
        self._torch = torch

    def _context_window(self) -> int:
        cfg = self.model.config
        window = getattr(cfg, "max_position_embeddings", None) or 2048
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if tok_max and tok_max < 1_000_000:        # tokenizers without a limit say 1e30
            window = min(window, tok_max)
        return int(window)

    def generate_batch(self, prompts: list[str],
                       options: GenerationOptions = GenerationOptions()) -> list[Generation]:
        """Greedy answers for several prompts at once (left padding), for evaluation.
        `options.fixed_length` generates exactly max_new_tokens (for benchmarks)."""
        torch = self._torch
        tok = self.tokenizer
        max_new_tokens = options.max_new_tokens
        side, tok.padding_side = tok.padding_side, "left"
        try:
            inputs = tok(prompts, return_tensors="pt", padding=True,
                         add_special_tokens=False).to(self.device)
        finally:
            tok.padding_side = side
        width = inputs["input_ids"].shape[1]
        self.check_window(width, max_new_tokens)
        from transformers import LogitsProcessorList

        first = _FirstStep()
        started = time.perf_counter()
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      temperature=None, top_p=None, top_k=None,
                                      eos_token_id=self.stop_ids,
                                      pad_token_id=tok.pad_token_id,
                                      logits_processor=LogitsProcessorList([first]),
                                      min_new_tokens=max_new_tokens if options.fixed_length
                                      else None)
        elapsed = time.perf_counter() - started
        out = []
        for row in ids[:, width:].tolist():
            stop = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            new = row if stop is None else row[:stop + 1]
            text = tok.decode(new, skip_special_tokens=True)
            out.append(batch_generation(text, len(new), stop is not None, started,
                                        first.at, elapsed))
        return out

    def stream_batch(self, prompts: list[str], options: GenerationOptions = GenerationOptions(),
                     on_text: Sequence[Callable[[str], None] | None] | None = None,
                     cancelled: Sequence[threading.Event] | None = None) -> list[Generation]:
        """Several prompts decoded together, one forward pass per step over the batch.

        Each prompt is read alone (`_prefill`), then the batch decodes with left-padded
        caches (positions count real tokens only, as `generate` counts them, so greedy
        answers are the same); a sequence that ends (end-of-text, its limit,
        `cancelled[i]`, its `on_text` failing) leaves the batch and the KV cache, so the
        rest decode at the cost of the rows still running."""
        torch = self._torch
        n = len(prompts)
        streams = [SequenceStream(self.tokenizer, cb)
                   for cb in (on_text or [None] * n)]
        cancelled = list(cancelled or [threading.Event() for _ in prompts])
        # One encode per prompt, never `padding=True`: that changes the tokenizer's state,
        # which other threads of a server read at the same time.
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        for ids in encoded:
            self.check_window(len(ids), options.max_new_tokens)
        self._cancel.clear()
        started = time.perf_counter()
        with torch.inference_mode():
            cache, logits, attention = self._prefill(encoded, room=options.max_new_tokens)
            positions = attention.sum(-1, keepdim=True)     # where each next token goes
            rows = list(range(n))            # which sequence each row of the batch is
            for step in range(options.max_new_tokens):
                next_ids = self._next_tokens(logits.float(), options)
                last_step = step + 1 == options.max_new_tokens
                keep = [row for row, (i, token) in enumerate(zip(rows, next_ids.tolist()))
                        if streams[i].push(token, self.stop_ids, options.fixed_length,
                                           cancelled[i].is_set() or self._cancel.is_set())
                        and not last_step]
                if not keep:
                    break
                if len(keep) < len(rows):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    next_ids, attention, positions = (next_ids[index], attention[index],
                                                      positions[index])
                    rows = [rows[row] for row in keep]
                attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
                out = self.model(input_ids=next_ids[:, None], attention_mask=attention,
                                 position_ids=positions, use_cache=True,
                                 **{self._cache_argument: cache})
                cache, logits = self._cache_of(out), out.logits[:, -1, :]
                positions = positions + 1
        return [s.result(started) for s in streams]

    def _prefill(self, encoded: list[list[int]], room: int):
        """Each prompt's forward pass alone, their KV caches then left-padded into one
        batch with `room` for the answer: (cache, last logits, attention mask). A prompt
        alone takes attention's fast causal path; a padded batch needs an explicit
        mask, several times slower for long prompts on a CPU."""
        from .batch_cache import roomy_cache

        torch = self._torch
        width = max(len(ids) for ids in encoded)
        caches, logits = [], []
        # The logits of the last position only: over a long prompt the output layer
        # would otherwise cost more than the rest of the model (a large vocabulary).
        last_only = {"logits_to_keep": 1} if self._accepts("logits_to_keep") else {}
        for ids in encoded:
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True,
                             **last_only)
            caches.append(self._cache_of(out))
            logits.append(out.logits[:, -1, :])

        def padded(tensors):
            return torch.cat([torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0))
                              for t in tensors])

        layers = [(padded([c.layers[i].keys for c in caches]),
                   padded([c.layers[i].values for c in caches]))
                  for i in range(len(caches[0].layers))]
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded],
                                 device=self.device)
        return roomy_cache(layers, room), torch.cat(logits), attention

    @staticmethod
    def _cache_of(out):
        cache = getattr(out, "cache", None)
        return out.past_key_values if cache is None else cache

    @functools.cached_property
    def _cache_argument(self) -> str:
        """transformers renamed `past_key_values` to `cache` within 5.x."""
        return "cache" if self._accepts("cache") else "past_key_values"

    def _accepts(self, argument: str) -> bool:
        import inspect

        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else (
            self.model)
        return argument in inspect.signature(model.forward).parameters

    def _next_tokens(self, logits, options: GenerationOptions):
        """Greedy, or sampled with temperature and top-p 0.95 as `generate` samples."""
        torch = self._torch
        if options.fixed_length and self.stop_ids:
            logits[:, self.stop_ids] = float("-inf")
        if options.temperature <= 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / options.temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > 0.95
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        choice = torch.multinomial(sorted_probs, 1)
        return order.gather(-1, choice).squeeze(-1)

    def generate(self, prompt: str, options: GenerationOptions = GenerationOptions(), *,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """Generate after `prompt`; `on_text` receives the text as it streams."""
        torch = self._torch
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(
            self.device)
        prompt_len = inputs["input_ids"].shape[1]
        self.check_window(prompt_len, options.max_new_tokens)
        streamer = _timed_streamer_class()(self.tokenizer, skip_prompt=True,
                                           skip_special_tokens=True)
        self._cancel.clear()
        stop = _stop_criteria(self._cancel)
        kwargs = dict(**inputs, max_new_tokens=options.max_new_tokens, streamer=streamer,
                      eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
                      stopping_criteria=stop)
        if options.temperature > 0:
            kwargs.update(do_sample=True, temperature=options.temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        result: dict = {}

        def run():
            try:
                with torch.inference_mode():
                    result["ids"] = self.model.generate(**kwargs)
            except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = e
                streamer.end()

        started = time.perf_counter()
        thread = threading.Thread(target=run, daemon=True, name="rag-generate")
        thread.start()
        pieces = []
        try:
            for piece in streamer:
                pieces.append(piece)
                if on_text and piece:
                    on_text(piece)
        except BaseException:
            # The reader is gone (Ctrl-C, a closed connection): stop the model too, so it
            # does not go on generating beside the next question.
            self._cancel.set()
            thread.join()
            raise
        thread.join()
        if "error" in result:
            raise GeneratorError(f"generation failed: {result['error']}")
        elapsed = time.perf_counter() - started
        new = result["ids"][0, prompt_len:].tolist()
        first = (streamer.first_token_at - started) * 1000 if streamer.first_token_at else None
        stopped = bool(new) and new[-1] in self.stop_ids
        n = len(new)
        return Generation("".join(pieces), n, first, rate(n, elapsed), stopped,
                          cancelled=self._cancel.is_set())


def _stop_criteria(event: threading.Event):
    """A stopping criterion that ends generation once `event` is set."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    return StoppingCriteriaList([_Cancelled()])


@functools.cache
def _timed_streamer_class():          # transformers is imported on first use only
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        """Streams text, and notes when the first new token arrives: the token, not its
        text, which may wait for the next token to complete a character."""
        first_token_at: float | None = None

        def put(self, value):
            if self.first_token_at is None and not self.next_tokens_are_prompt:
                self.first_token_at = time.perf_counter()
            super().put(value)

    return TimedStreamer


class _FirstStep:
    """A logits processor that only notes when the first step's logits arrive: the end
    of the batch's prefill (generate() has no streamer for batches)."""

    def __init__(self):
        self.at: float | None = None

    def __call__(self, input_ids, scores):
        if self.at is None:
            self.at = time.perf_counter()
        return scores
