"""Fine-tuning settings: a TOML file, then `--set key=value`, then flags.

Every setting is a field of `TrainConfig` with its type, default and help, loaded by
the project's one settings loader (rag.settings), as rag.toml is; a key that does not
exist or a value of the wrong type is an error naming it (before any model is loaded
or GPU time spent).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rag.generation.base import DEFAULT_GENERATOR
from rag.settings import ConfigError, apply_file, apply_sets, read_toml, set_value, setting

__all__ = ["TrainConfig", "ConfigError", "load_config"]


@dataclass
class TrainConfig:
    # what to train
    model: str = setting(DEFAULT_GENERATOR,
                         help="Base model: a Hugging Face id or a local directory.")
    data: list[str] = setting(factory=list, help=(
        "Training data: Hugging Face dataset ids or JSON/JSONL/CSV files of Alpaca "
        "(instruction/input/output) or chat (messages) rows."))
    out: str = setting("adapters/run", help="Output directory: adapter, tokenizer, run card.")
    eval_fraction: float = setting(0.02, help="Held out from each source for the eval loss.")
    max_eval_examples: int = setting(500, help="At most this many held-out examples.")
    # LoRA (the seed recipe: r=4 on query_key_value, alpha 16, dropout 0.05)
    lora_r: int = setting(4, help="LoRA rank.")
    lora_alpha: int = setting(16, help="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = setting(0.05, help="Dropout on the LoRA input.")
    target_modules: list[str] | None = setting(None, help=(
        "Modules that get LoRA (default: chosen per architecture, query_key_value for "
        "GPT-NeoX)."))
    # optimisation
    lr: float = setting(3e-4, help="Peak learning rate (linear warmup, cosine decay).")
    warmup_steps: int = setting(100, help="Optimizer steps of linear warmup.")
    weight_decay: float = setting(0.0, help="AdamW weight decay.")
    micro_batch: int = setting(4, help="Examples per forward pass on each GPU.")
    grad_accum: int = setting(8, help=(
        "Micro-batches per optimizer step: effective batch = micro_batch x grad_accum x GPUs."))
    epochs: float = setting(1.0, help="Passes over the data.")
    max_steps: int | None = setting(None, help="Optimizer steps; overrides epochs.")
    max_length: int = setting(1024, help="Examples longer than this (in tokens) are dropped.")
    group_by_length: bool = setting(True, help="Batches of similar length: little padding.")
    gradient_checkpointing: bool = setting(True, help="Recompute activations: less memory.")
    dtype: str = setting("auto", help="auto | bf16 | fp16 | fp32 (auto: bf16 on Ampere+, "
                                      "fp16 on V100, fp32 on CPU).")
    strategy: str = setting("ddp", help=(
        "Several processes (torchrun, srun, accelerate launch): ddp keeps a whole model on "
        "every GPU; fsdp shards it across them, for models that do not fit one GPU."))
    seed: int = setting(42, help="Data order and initialisation.")
    # bookkeeping
    eval_every: int = setting(200, help="Optimizer steps between eval-loss measurements.")
    save_every: int = setting(200, help="Optimizer steps between checkpoints.")
    log_every: int = setting(10, help="Optimizer steps between log lines.")
    resume: bool = setting(False, help="Continue from OUT/checkpoint, same data order.")
    trust_remote_code: bool = setting(False, help="Run the model repository's own code.")
    allow_pickle: bool = setting(True, help=(
        "Load pickled .bin weights (weights only): OpenCALM ships only those."))

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path: str | Path | None = None, sets: list[str] = (), **flags) -> TrainConfig:
    """A TOML file (keys at the top level or under [train]), then `--set key=value`,
    then the command's flags (those given)."""
    cfg = TrainConfig()
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        data = read_toml(path)
        apply_file(cfg, {**data.pop("train", {}), **data}, str(path))
    apply_sets(cfg, list(sets))
    for key, value in flags.items():
        if value is not None and value != ():
            set_value(cfg, key, list(value) if isinstance(value, tuple) else value, f"--{key}")
    _validate(cfg)
    return cfg


def _validate(cfg: TrainConfig) -> None:
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
