"""Loading causal language models, for answering, training and merging alike.

Device and dtype are chosen for the machine (CUDA bf16 where supported, fp16 on older
GPUs such as V100, fp16 on Apple MPS, fp32 on CPU); weights load straight onto a GPU;
pickled weights only when allowed; a tokenizer without a pad token pads with its
end-of-text token; a LoRA adapter goes on the base it fits, or the error says why not.
Every failure is a `ModelError` whose message says what to do.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ingest.attention import use_shape_agnostic_attention

from .base import DEFAULT_GENERATOR, ModelError


def load_tokenizer(source: str, *, trust_remote_code: bool = False, what: str = "generator",
                   **kwargs):
    from transformers import AutoTokenizer

    from ingest.hub import offline_source

    # A Hub that cannot be reached: the cached snapshot, or one line that says what to do.
    source = offline_source(source, what) or source
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                  **kwargs)
    except OSError as e:
        raise ModelError(missing_model_message(source, what, e)) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, *, device: str, dtype, trust_remote_code: bool = False,
                   allow_pickle: bool = False, what: str = "generator"):
    """The model's weights in `dtype`, loaded straight onto `device` when it is a GPU (no
    second copy through host memory), with attention that suits varying shapes."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from ingest.hub import offline_source

    hf_logging.disable_progress_bar()
    source = offline_source(name, what) or name        # a Hub that cannot be reached
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            device_map=device if device.startswith("cuda") else None)
    except OSError as e:
        if "safetensors" in str(e) and not allow_pickle:
            raise ModelError(
                f"{name!r} has no safetensors weights, only pickled ones; pass "
                "--allow-pickle (or allow_pickle = true in rag.toml) to load them if "
                "you trust the source") from None
        raise ModelError(missing_model_message(name, what, e)) from None
    except (ValueError, RuntimeError, EOFError, SafetensorError) as e:
        raise ModelError(f"cannot load {what} {name!r}: its files are damaged or "
                         f"not a causal language model ({str(e)[:300]})") from None
    archs = getattr(model.config, "architectures", None) or []
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))
                         for a in archs):
        # A sentence encoder (BertModel) would load as a BERT language-model head and
        # generate noise: refuse it by what its config says it is.
        raise ModelError(f"{name!r} is a {', '.join(archs)}, not a causal language model; "
                         f"give a generator such as {DEFAULT_GENERATOR} (the embedder is set "
                         "with --embedder)")
    use_shape_agnostic_attention(device)
    return model


def pick_device_dtype(device: str | None = None, dtype: str | None = None):
    """(device, torch dtype): bf16 on GPUs that have it, fp16 on V100-class and MPS,
    fp32 on CPU; either may be forced."""
    import torch

    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            # Ampere and newer compute in bf16; V100 (7.0) would only emulate it slowly.
            index = torch.device(device).index
            major, _ = torch.cuda.get_device_capability(index if index is not None else 0)
            resolved = torch.bfloat16 if major >= 8 else torch.float16
        elif device == "mps":
            resolved = torch.float16
        else:
            resolved = torch.float32
    else:
        names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                 "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
        if dtype not in names:
            raise ModelError(f"unknown dtype {dtype!r} (auto, bf16, fp16 or fp32)")
        resolved = names[dtype]
    return device, resolved


def adapter_base_model(adapter: str | Path) -> str | None:
    """The base model an adapter was trained on, from its adapter_config.json (a local
    directory, or a Hub id through PEFT)."""
    cfg = Path(adapter) / "adapter_config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError) as e:
            raise ModelError(f"{cfg}: cannot read the adapter config ({e})") from None
    if Path(adapter).exists():
        raise ModelError(f"{adapter}: not a PEFT adapter (no adapter_config.json)")
    try:
        from peft import PeftConfig
        return PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path
    except Exception as e:  # noqa: BLE001 - not cached / not on the Hub / not an adapter
        raise ModelError(missing_model_message(str(adapter), "adapter", e)) from None


def missing_local_path(name: str) -> bool:
    """A recorded model that was a local path on another machine (not a Hub id)."""
    looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1
    return looks_local and not Path(name).expanduser().exists()


def base_model_for(adapter: str, configured: str | None) -> str:
    """The model to put an adapter on when none is named: the one it was trained on,
    unless that was a local path that does not exist here (trained on another machine)."""
    recorded = adapter_base_model(adapter)
    if not recorded or missing_local_path(recorded):
        return configured or DEFAULT_GENERATOR
    return recorded


def tokenizer_source(adapter: str | None, base: str) -> str:
    """The adapter's tokenizer when it has one (fine-tuning saves the one it trained
    with), else the base model's."""
    return adapter if adapter and Path(adapter, "tokenizer_config.json").is_file() else base


def apply_adapter(model, adapter: str, base: str):
    """`model` with a PEFT adapter on it, or a ModelError that says why it does not fit."""
    from peft import PeftModel
    from safetensors import SafetensorError

    try:
        return PeftModel.from_pretrained(model, adapter)
    except (ValueError, RuntimeError, KeyError) as e:
        trained_on = adapter_base_model(adapter)
        hint = (f" (it was trained on {trained_on!r}, not {base!r})"
                if trained_on and trained_on != base else "")
        raise ModelError(f"adapter {adapter!r} does not fit generator {base!r}"
                             f"{hint}: {str(e).splitlines()[0][:300]}") from None
    except SafetensorError as e:
        raise ModelError(f"adapter {adapter!r} is damaged: its weights cannot be "
                             f"read ({e})") from None
    except OSError as e:
        raise ModelError(missing_model_message(adapter, "adapter", e)) from None


def missing_model_message(name: str, what: str, error: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return (f"cannot load {what} {name!r}: {error}\n"
            + ("This machine is offline (HF_HUB_OFFLINE=1). " if offline else "")
            + "Fetch it where there is internet with `rag models download`, or point to a "
            "local directory (a path instead of the Hugging Face id).")




def download(wanted: list[tuple[str, str | None]], *, kinds: set[str] | None = None,
             allow_pickle: bool, remote_code: bool, log=lambda s: None) -> dict[str, str]:
    """Fetch models into the Hugging Face cache: (kind, name) pairs, kind being model,
    adapter or embedder (only `kinds`, when given); an adapter brings the model it was
    trained on. Returns {name: local path}; local paths are not fetched."""
    from huggingface_hub import snapshot_download

    # Weights as safetensors; pickled .bin only where allowed (OpenCALM ships only those);
    # chat templates; model code only when remote code is trusted.
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja",
                "*/*.json", "*/*.safetensors"]
    patterns += ["*.bin"] if allow_pickle else []
    patterns += ["*.py"] if remote_code else []
    fetched: dict[str, str] = {}
    wanted = list(wanted)
    while wanted:
        kind, name = wanted.pop(0)
        if not name or (kinds and kind not in kinds) or Path(name).exists() or name in fetched:
            continue
        log(f"fetching {kind} {name} …")
        try:
            fetched[name] = snapshot_download(name, allow_patterns=patterns)
        except Exception as e:  # noqa: BLE001 - network, auth and missing-repo errors alike
            raise ModelError(f"cannot fetch {kind} {name!r}: {e}") from None
        if kind == "adapter":        # and the model it was trained on
            base = adapter_base_model(fetched[name])
            if base and not Path(base).exists():
                wanted.append(("model", base))
    return fetched


def merge_adapter(adapter: str, out: str | Path, *, model: str | None = None,
                  dtype: str | None = None, allow_pickle: bool = True) -> Path:
    """A LoRA adapter merged into its base model, saved as safetensors with the
    tokenizer (for serving without PEFT, and before exporting to another engine)."""
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
