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

from .base import (BatchSequence, Generation, GenerationOptions, Generator, RunningBatch,
                   SequenceStream, batch_generation, rate)
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
        """Several prompts decoded together, one forward pass per step over the batch
        (a `running_batch` that they all join at once); a sequence that ends
        (end-of-text, its limit, `cancelled[i]`, its `on_text` failing) leaves it, and
        greedy answers are those of `generate`. A prompt over the window raises before
        anything is generated."""
        batch = self.running_batch()
        on_text = list(on_text or [None] * len(prompts))
        cancelled = list(cancelled or [threading.Event() for _ in prompts])
        joined = [batch.join(p, options, cb, stop)
                  for p, cb, stop in zip(prompts, on_text, cancelled)]
        while batch.running:
            for seq in batch.step():
                if seq.error is not None:
                    raise seq.error
        return [seq.generation for seq in joined]

    def running_batch(self) -> "TransformersBatch":
        return TransformersBatch(self)

    def _read_prompt(self, ids: list[int]):
        """One prompt's forward pass alone: (its KV cache, its last logits). A prompt
        alone takes attention's fast causal path; a padded batch needs an explicit mask,
        several times slower for long prompts on a CPU."""
        torch = self._torch
        # The logits of the last position only: over a long prompt the output layer
        # would otherwise cost more than the rest of the model (a large vocabulary).
        last_only = {"logits_to_keep": 1} if self._accepts("logits_to_keep") else {}
        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True,
                         **last_only)
        return self._cache_of(out), out.logits[0, -1, :]

    def _choose(self, logits: list, options: list[GenerationOptions]) -> list[int]:
        """Each row's next token from its logits, under its own options."""
        torch = self._torch
        logits = torch.stack(logits).float()
        fixed = [i for i, o in enumerate(options) if o.fixed_length]
        if fixed and self.stop_ids:
            logits[torch.tensor(fixed)[:, None], torch.tensor(self.stop_ids)] = float("-inf")
        tokens = logits.argmax(dim=-1)
        for i, o in enumerate(options):
            if o.temperature > 0:
                tokens[i] = self._next_tokens(logits[i:i + 1], o)[0]
        return tokens.tolist()

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
        """Greedy, or sampled with temperature and top-p 0.95 as `generate` samples
        (one options for all rows of `logits`)."""
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


class TransformersBatch(RunningBatch):
    """Continuous batching for a transformers model: iteration-level scheduling as vLLM
    and TGI do it, kept simple. Each step:

    1. joiners read their prompts, each alone (`_read_prompt`), and take free rows of
       the batch's KV cache (`SlotCache`: their keys copied in, ending at the current
       column; its mask lets each row see only its own columns);
    2. every sequence takes its next token from its last logits (a joiner its first,
       from its prompt), and those that end leave, freeing their rows;
    3. one forward pass over all rows for the rest: each row's last token at its own
       position (its real tokens so far, as `generate` counts them), so greedy answers
       are those of `generate` whenever a sequence joined.

    The cache is copied only when it changes shape (rows, columns; `SlotCache.relayout`),
    not per token and not when a sequence leaves. A prompt that fails to read fails its
    sequence alone; a failed step fails the sequences in the batch at that moment (their
    caches are no longer known to be right) and the batch starts afresh."""

    def __init__(self, generator: TransformersGenerator):
        self.generator = generator
        self.cache = None                      # a SlotCache once someone has joined
        self.rows: list[BatchSequence | None] = []    # the sequence in each row of the cache
        self.joining: list[BatchSequence] = []
        self.steps = 0                         # forward passes over the batch

    @property
    def running(self) -> int:
        return len(self.joining) + len(self.live())

    def live(self) -> list[tuple[int, BatchSequence]]:
        return [(row, seq) for row, seq in enumerate(self.rows) if seq is not None]

    def join(self, prompt: str, options: GenerationOptions = GenerationOptions(),
             on_text: Callable[[str], None] | None = None,
             cancelled: threading.Event | None = None, tag=None) -> BatchSequence:
        g = self.generator
        # One encode per prompt, never `padding=True`: that changes the tokenizer's state,
        # which other threads of a server read at the same time.
        ids = g.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        g.check_window(len(ids), options.max_new_tokens)
        seq = BatchSequence(ids, options, SequenceStream(g.tokenizer, on_text),
                            cancelled or threading.Event(), tag)
        self.joining.append(seq)
        return seq

    def step(self) -> list[BatchSequence]:
        g = self.generator
        ended: list[BatchSequence] = []
        if not self.live():
            g._cancel.clear()           # `cancel()` stops the batch running then, not the next
        with g._torch.inference_mode():
            self._admit(ended)
            live = self.live()
            if not live:
                return ended
            tokens = g._choose([seq.logits for _, seq in live], [seq.options for _, seq in live])
            for (row, seq), token in zip(live, tokens):
                going = seq.stream.push(token, g.stop_ids, seq.options.fixed_length,
                                        seq.cancelled.is_set() or g._cancel.is_set())
                if not going or len(seq.stream.ids) >= seq.options.max_new_tokens:
                    self._leave(row, seq, ended)
            if self.live():
                try:
                    self._forward()
                except Exception as e:  # noqa: BLE001 - every sequence in the step reports it
                    for row, seq in self.live():
                        seq.error = GeneratorError(f"generation failed: {e}")
                        self._leave(row, seq, ended)
            if not self.live():
                self.cache, self.rows = None, []       # idle: the memory goes back
        return ended

    def _admit(self, ended: list[BatchSequence]) -> None:
        g = self.generator
        joining, self.joining = self.joining, []
        ready = []
        for seq in joining:
            seq.started = time.perf_counter()
            if seq.cancelled.is_set() or seq.options.max_new_tokens <= 0:
                seq.stream.cancelled = seq.cancelled.is_set()
                seq.generation = seq.stream.result(seq.started)
                ended.append(seq)
                continue
            try:
                prompt_cache, seq.logits = g._read_prompt(seq.prompt_ids)
            except Exception as e:  # noqa: BLE001 - this prompt fails alone
                seq.error = GeneratorError(f"generation failed: {e}")
                ended.append(seq)
                continue
            seq.position = len(seq.prompt_ids)
            ready.append((seq, prompt_cache))
        if not ready:
            if self.cache is not None and self.cache.rows > 2 * len(self.live()):
                self._relayout([], 0)          # most rows free, nobody joining: shrink
            return
        self._make_room([seq for seq, _ in ready], ready[0][1])
        for (seq, prompt_cache), row in zip(ready, self.cache.free_rows()):
            self.cache.place(row, prompt_cache)
            self.rows[row] = seq

    def _room(self, joining: list[BatchSequence] = ()) -> int:
        """Columns to leave after `end`: twice what the longest remaining answer needs,
        so that the buffer is not copied again for a while."""
        seqs = [seq for _, seq in self.live()] + list(joining)
        return 2 * max([s.options.max_new_tokens - len(s.stream.ids) for s in seqs] + [1]) + 1

    def _make_room(self, joining: list[BatchSequence], prompt_cache) -> None:
        """Free rows for `joining`, and columns before `end` for the longest prompt."""
        from .batch_cache import SlotCache

        longest = max(len(seq.prompt_ids) for seq in joining)
        if self.cache is None:
            self.cache = SlotCache(prompt_cache, len(joining), end=longest,
                                   capacity=longest + self._room(joining))
            self.rows = [None] * len(joining)
        elif len(self.cache.free_rows()) < len(joining) or longest > self.cache.end:
            self._relayout(joining, longest)

    def _relayout(self, joining: list[BatchSequence], longest: int) -> None:
        """The live rows first, free rows for `joining` after them, columns enough."""
        cache, live = self.cache, self.live()
        end = max(cache.end - cache.start, longest)
        cache.relayout([row for row, _ in live], len(live) + len(joining), end,
                       end + self._room(joining))
        self.rows = [seq for _, seq in live] + [None] * len(joining)

    def _forward(self) -> None:
        g, torch, cache = self.generator, self.generator._torch, self.cache
        if cache.end >= cache.capacity:
            self._relayout([], 0)
            cache = self.cache
        tokens = [[seq.stream.ids[-1] if seq else 0] for seq in self.rows]
        positions = [[seq.position if seq else 0] for seq in self.rows]
        out = g.model(input_ids=torch.tensor(tokens, device=g.device),
                      attention_mask=cache.attention_mask(),
                      position_ids=torch.tensor(positions, device=g.device), use_cache=True,
                      **{g._cache_argument: cache})
        logits = out.logits[:, -1, :]
        for row, seq in self.live():
            seq.logits, seq.position = logits[row], seq.position + 1
        self.steps += 1

    def _leave(self, row: int, seq: BatchSequence, ended: list[BatchSequence]) -> None:
        if seq.error is None:
            seq.generation = seq.stream.result(seq.started)
        self.rows[row] = None
        if self.cache is not None:
            self.cache.free(row)
        ended.append(seq)


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
