"""Merge a LoRA adapter into its base model for serving (safetensors)."""
from __future__ import annotations

from pathlib import Path


def merge(adapter: str, out: str | Path, *, model: str | None = None,
          dtype: str | None = None, allow_pickle: bool = True) -> Path:
    from rag.models import (ModelError, adapter_base_model, apply_adapter, load_causal_lm,
                            load_tokenizer, missing_local_path, pick_device_dtype,
                            tokenizer_source)

    base = model or adapter_base_model(adapter)
    if not base:
        raise ModelError(f"{adapter} records no base model; give it with --model")
    if not model and missing_local_path(base):
        raise ModelError(f"{adapter} was trained on {base}, which is not on this machine; "
                         "give the base model with --model")
    _, torch_dtype = pick_device_dtype("cpu", dtype or "fp32")
    weights = load_causal_lm(base, device="cpu", dtype=torch_dtype, allow_pickle=allow_pickle,
                             what="base model")
    merged = apply_adapter(weights, adapter, base).merge_and_unload()
    out = Path(out)
    merged.save_pretrained(out, safe_serialization=True)
    load_tokenizer(tokenizer_source(adapter, base), what="tokenizer").save_pretrained(out)
    return out
