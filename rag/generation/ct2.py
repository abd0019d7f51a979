"""The CTranslate2 implementation of the generator interface, and the export to it.

CTranslate2 (PyPI `ctranslate2`) runs the same causal LMs several times faster on a CPU
in int8, and fast on GPUs. `export()` converts a transformers model (an adapter is
merged into its base first) with CTranslate2's own converter and writes, beside the
weights, the tokenizer and `rag-export.json` (what was exported: base, adapter,
quantization, context window, prompt format). `CT2Generator` loads such a directory:
`rag ask --model DIR` detects it.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..prompt import PROMPT_VERSION, trained_layout
from .base import (CharacterStream, Generation, GenerationOptions, Generator, SequenceStream,
                   rate)
from .models import ModelError, load_tokenizer

RECORD = "rag-export.json"
QUANTIZATIONS = ("int8", "int8_float16", "int8_bfloat16", "int8_float32", "float16",
                 "bfloat16", "float32")


def is_export(path: str | os.PathLike) -> bool:
    return (Path(path) / RECORD).is_file() and (Path(path) / "model.bin").is_file()


# --------------------------------------------------------------------------- export

def export(model: str, out: str | os.PathLike, *, quantization: str = "int8",
           adapter: str | None = None, allow_pickle: bool = True,
           trust_remote_code: bool = False, log=lambda s: None) -> Path:
    """Convert `model` (+ `adapter`, merged first) to a CTranslate2 directory."""
    import ctranslate2.converters as converters

    from .models import missing_local_path

    if quantization not in QUANTIZATIONS:
        raise ModelError(f"unknown quantization {quantization!r} ({', '.join(QUANTIZATIONS)})")
    if missing_local_path(model):
        raise ModelError(f"{model}: no such model directory (give a local path or a Hugging "
                         "Face id)")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="rag-export-") as tmp:
        source = model
        if adapter:
            from .models import merge_adapter
            log(f"merging {adapter} into {model}")
            source = str(merge_adapter(adapter, Path(tmp) / "merged", model=model,
                                       allow_pickle=allow_pickle))
        log(f"converting {source} ({quantization})")
        converter = _converter(converters)(source, load_as_float16=False,
                                           trust_remote_code=trust_remote_code)
        try:
            converter.convert(str(out), quantization=quantization, force=True)
        except (ValueError, NotImplementedError, KeyError, OSError) as e:
            raise ModelError(f"cannot export {source!r} to CTranslate2: {e}") from None
        tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
        tokenizer.save_pretrained(out)
        source_config = _source_config(source)
    record = {"engine": "ctranslate2", "base": model, "adapter": adapter,
              "quantization": quantization, "context_window": _window(source_config),
              "model_type": source_config.get("model_type"),
              "prompt_version": PROMPT_VERSION,
              "chat_template": bool(getattr(tokenizer, "chat_template", None)),
              # the layout the merged adapter was trained on: answering checks it
              "trained_prompt": trained_layout(adapter) if adapter else None,
              "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / RECORD).write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", "utf-8")
    return out


def _converter(converters):
    class Converter(converters.TransformersConverter):
        """transformers 5 keeps GPT-NeoX's rotary share in `rope_parameters` and calls its
        output layer `lm_head`, where CTranslate2 4.x reads `config.rotary_pct` and
        `embed_out`: give it those names before converting."""

        def load_model(self, model_class, model_name_or_path, **kwargs):
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            config = model.config
            if config.model_type == "gpt_neox":
                if "rotary_pct" not in config.__dict__:
                    rope = getattr(config, "rope_parameters", None) or {}
                    config.rotary_pct = float(rope.get("partial_rotary_factor", 1.0))
                if not hasattr(model, "embed_out") and hasattr(model, "lm_head"):
                    model.embed_out = model.lm_head
            return model

    return Converter


_MISTRAL_TYPES = {"mistral", "mistral3", "ministral", "pixtral", "voxtral"}


def _source_config(source: str) -> dict:
    path = Path(source) / "config.json"
    return json.loads(path.read_text("utf-8")) if path.is_file() else {}


def _window(cfg: dict) -> int:
    return int(cfg.get("max_position_embeddings") or cfg.get("n_positions") or 2048)


# --------------------------------------------------------------------------- generate

class CT2Generator(Generator):
    """A model exported by `rag models export --to ct2`, on CPU or CUDA."""

    def __init__(self, path: str | os.PathLike, *, device: str | None = None,
                 threads: int = 0):
        import ctranslate2

        super().__init__()
        started = time.perf_counter()
        path = Path(path)
        if not is_export(path):
            raise ModelError(f"{path} is not a CTranslate2 export of this project (no "
                             f"model.bin and {RECORD}); make one with `rag models export`")
        try:
            self.record = json.loads((path / RECORD).read_text("utf-8"))
        except ValueError as e:
            raise ModelError(f"{path / RECORD} is damaged ({e}); export the model again") from None
        self.name, self.adapter = str(path), None
        self.device = device or ("cuda" if ctranslate2.get_cuda_device_count() else "cpu")
        if self.device.startswith("cuda:"):
            self.device = "cuda"
        # On a CPU "default" may widen int8 weights (measured: 11 GB instead of 2.6 GB for
        # OpenCALM-3B); ask for what was exported. On a GPU the saved type is right.
        quantization = str(self.record.get("quantization", ""))
        compute = ("int8" if quantization.startswith("int8") else "float32") if (
            self.device == "cpu") else "default"
        try:
            self.model = ctranslate2.Generator(str(path), device=self.device,
                                               compute_type=compute, intra_threads=threads)
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"cannot load the CTranslate2 model in {path}: {e}") from None
        # CTranslate2's own config.json (no model_type) makes transformers suspect a
        # Mistral tokenizer and warn of a wrong regex; the export records the real type.
        mistral = self.record.get("model_type") in _MISTRAL_TYPES
        self.tokenizer = load_tokenizer(str(path), fix_mistral_regex=mistral)
        self.context_window = int(self.record.get("context_window") or 2048)
        eos = self.tokenizer.eos_token_id
        self.stop_ids = [eos] if eos is not None else []
        self.load_s = time.perf_counter() - started

    def _tokens(self, prompt: str, max_new_tokens: int) -> list[str]:
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self.check_window(len(ids), max_new_tokens)
        return self.tokenizer.convert_ids_to_tokens(ids)

    def _sampling(self, options: GenerationOptions) -> dict:
        if options.temperature > 0:
            return {"sampling_topk": 0, "sampling_topp": 0.95,
                    "sampling_temperature": options.temperature}
        return {"sampling_topk": 1}

    def generate(self, prompt: str, options: GenerationOptions = GenerationOptions(), *,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        tokens = self._tokens(prompt, options.max_new_tokens)
        self._cancel.clear()
        started = time.perf_counter()
        first = None
        ids: list[int] = []
        stream = CharacterStream(on_text)
        stopped = False
        steps = self.model.generate_tokens(
            tokens, max_length=options.max_new_tokens, end_token=self.stop_ids or None,
            min_length=options.max_new_tokens if options.fixed_length else 0,
            **self._sampling(options))
        try:
            for step in steps:
                if first is None:
                    first = (time.perf_counter() - started) * 1000
                if step.token_id in self.stop_ids:
                    stopped = True
                    ids.append(step.token_id)
                    break
                ids.append(step.token_id)
                stream.show(self.tokenizer.decode(ids, skip_special_tokens=True))
                if self._cancel.is_set():
                    break
        finally:
            steps.close()            # stops the generation when the reader went away
        text = self.tokenizer.decode([i for i in ids if i not in self.stop_ids],
                                     skip_special_tokens=True)
        stream.finish(text)
        elapsed = time.perf_counter() - started
        n = len(ids)
        return Generation(text, n, first, rate(n, elapsed), stopped,
                          cancelled=self._cancel.is_set())

    def generate_batch(self, prompts: list[str],
                       options: GenerationOptions = GenerationOptions()) -> list[Generation]:
        # Each sequence is timed as a stream of its own (stream_batch): its first token
        # ends the batch's prefill for it, its rate counts its own tokens.
        greedy = GenerationOptions(options.max_new_tokens, fixed_length=options.fixed_length)
        return self.stream_batch(prompts, greedy)

    def stream_batch(self, prompts: list[str], options: GenerationOptions = GenerationOptions(),
                     on_text: Sequence[Callable[[str], None] | None] | None = None,
                     cancelled: Sequence[threading.Event] | None = None) -> list[Generation]:
        """Several prompts decoded together by CTranslate2; its per-step callback streams
        each sequence's tokens, and answering True stops that sequence alone."""
        batch = [self._tokens(p, options.max_new_tokens) for p in prompts]
        streams = [SequenceStream(self.tokenizer, cb) for cb in (on_text or [None] * len(batch))]
        cancelled = list(cancelled or [threading.Event() for _ in prompts])
        limit, fixed = options.max_new_tokens, options.fixed_length
        # CTranslate2 forwards the prompts up to the shortest one's length at once and
        # feeds the rest of each longer prompt through its decoding loop, reporting those
        # tokens as steps (and counting them in max_length): skip them.
        shortest = min(len(b) for b in batch)
        offsets = [len(b) - shortest for b in batch]
        self._cancel.clear()
        # The callback must not hold `self`: CTranslate2 may drop it on one of its own
        # threads, and a last reference to the model dropped there aborts the process.
        stop_ids, cancel_all = list(self.stop_ids), self._cancel

        def step(result) -> bool:
            i = result.batch_id
            if result.step < offsets[i]:
                return False
            going = streams[i].push(result.token_id, stop_ids, fixed,
                                    cancelled[i].is_set() or cancel_all.is_set())
            return not going or len(streams[i].ids) >= limit      # True stops this one

        started = time.perf_counter()
        longest = max(offsets)
        self.model.generate_batch(
            batch, max_length=limit + longest, end_token=self.stop_ids or None,
            include_prompt_in_result=False, callback=step,
            min_length=limit + longest if fixed else 0, **self._sampling(options))
        return [s.result(started) for s in streams]
