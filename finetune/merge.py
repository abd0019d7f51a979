"""Merge a LoRA adapter into its base model for serving (safetensors)."""
from __future__ import annotations

from pathlib import Path


def merge(adapter: str, out: str | Path, *, model: str | None = None,
          dtype: str | None = None, allow_pickle: bool = True) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rag.generate import GeneratorError, adapter_base_model, pick_device_dtype

    base = model or adapter_base_model(adapter)
    if not base:
        raise GeneratorError(f"{adapter} records no base model; give it with --model")
    if not model and base.startswith(("/", ".", "~")) and not Path(base).expanduser().exists():
        raise GeneratorError(f"{adapter} was trained on {base}, which is not on this machine; "
                             "give the base model with --model")
    _, torch_dtype = pick_device_dtype("cpu", dtype or "fp32")
    weights = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch_dtype, use_safetensors=None if allow_pickle else True)
    merged = PeftModel.from_pretrained(weights, adapter).merge_and_unload()
    out = Path(out)
    merged.save_pretrained(out, safe_serialization=True)
    tok_source = adapter if Path(adapter, "tokenizer_config.json").is_file() else base
    AutoTokenizer.from_pretrained(tok_source).save_pretrained(out)
    return out
