"""Fine-tuning settings: a TOML file, then `--set key=value`, then flags.

Every key is checked against `TrainConfig`; a key that does not exist is an error
naming it (before any model is loaded or GPU time spent).
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from rag.settings import ConfigError


@dataclass
class TrainConfig:
    # what to train
    model: str = "cyberagent/open-calm-3b"
    data: list[str] = field(default_factory=list)   # HF dataset ids or JSON/JSONL/CSV files
    out: str = "adapters/run"
    eval_fraction: float = 0.02        # held out from each source for the evaluation loss
    max_eval_examples: int = 500
    # LoRA (the seed recipe: r=4 on query_key_value, alpha 16, dropout 0.05)
    lora_r: int = 4
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None         # None: chosen per architecture
    # optimisation
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    micro_batch: int = 4
    grad_accum: int = 8                # effective batch = micro_batch x grad_accum x GPUs
    epochs: float = 1.0
    max_steps: int | None = None       # optimizer steps; overrides epochs
    max_length: int = 1024             # examples longer than this (in tokens) are dropped
    group_by_length: bool = True       # batches of similar length: little padding
    gradient_checkpointing: bool = True
    dtype: str = "auto"                # auto | bf16 | fp16 | fp32
    # several processes (torchrun, srun, accelerate launch): "ddp" keeps a whole model on
    # every GPU; "fsdp" shards it across them, for models that do not fit one GPU
    strategy: str = "ddp"              # ddp | fsdp
    seed: int = 42
    # bookkeeping
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 10
    resume: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = True          # OpenCALM ships only .bin (loaded weights-only)

    def to_dict(self) -> dict:
        return asdict(self)


_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _coerce(key: str, value, where: str):
    kind = str(_TYPES[key])
    try:
        if isinstance(value, str) and "list" in kind:
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, str):
            if "bool" in kind:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if "int" in kind and "None" in kind and value.lower() == "none":
                return None
            if "int" in kind:
                return int(value)
            if "float" in kind:
                return float(value)
        if "bool" in kind and not isinstance(value, bool):
            raise ValueError(value)
        if "float" in kind and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind.startswith("int") and not isinstance(value, int):
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"{where}: {key} = {value!r} is not a valid {kind}") from None
    return value


def load_config(path: str | Path | None = None, sets: list[str] = (), **flags) -> TrainConfig:
    cfg = TrainConfig()
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 (byte {e.start})") from None
        data = {**data.pop("train", {}), **data}       # keys may sit under [train]
        for key, value in data.items():
            _set(cfg, key, value, str(path))
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        _set(cfg, key.strip(), value.strip(), "--set")
    for key, value in flags.items():
        if value is not None and value != ():
            _set(cfg, key, list(value) if isinstance(value, tuple) else value, f"--{key}")
    if not cfg.data:
        raise ConfigError("no training data: give --data PATH_OR_ID (or data = [...] in the "
                          "config)")
    for key in ("micro_batch", "grad_accum", "log_every", "eval_every", "save_every",
                "max_length", "lora_r"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, not {getattr(cfg, key)}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, not {cfg.max_steps}")
    if not 0 <= cfg.eval_fraction < 1 or cfg.epochs <= 0 or cfg.lr <= 0:
        raise ConfigError("eval_fraction must be in [0, 1), epochs and lr above 0")
    if cfg.dtype not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"dtype must be auto, bf16, fp16 or fp32, not {cfg.dtype!r}")
    if cfg.strategy not in ("ddp", "fsdp"):
        raise ConfigError(f"strategy must be ddp or fsdp, not {cfg.strategy!r}")
    return cfg


def _set(cfg: TrainConfig, key: str, value, where: str) -> None:
    if key not in _TYPES:
        known = ", ".join(sorted(_TYPES))
        raise ConfigError(f"{where}: unknown setting {key!r} (known: {known})")
    setattr(cfg, key, _coerce(key, value, where))
