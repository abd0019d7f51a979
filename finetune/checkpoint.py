"""Checkpoints that resume a run at the saved step with the same data order.

OUT/checkpoint/ holds
- adapter_config.json + adapter_model.safetensors: the LoRA weights, a usable adapter;
- state.pt: the step, tokens seen, the first loss, the strategy, and the layout the data
  order depends on (world size, micro-batch, accumulation, examples, seed);
- accelerate/: `Accelerator.save_state` - the optimizer, the loss scaler, every rank's
  random generators (under FSDP also the model's shards, base weights included, one
  file per rank).

Every process writes into checkpoint.tmp/, which then replaces checkpoint/ in two
renames; a crash between them leaves checkpoint.old/, which resume reads instead.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .runtime import TrainError, adapter_weights, save_adapter, sharded


def save(path: Path, acc, model, layout: dict, step: int, tokens_seen: int,
         first_loss: float | None) -> None:
    """Called by every process (FSDP gathers the adapter and saves its shards)."""
    import torch
    tmp = path.with_name(path.name + ".tmp")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    weights = adapter_weights(acc, model)
    acc.save_state(str(tmp / "accelerate"))
    if acc.is_main_process:
        save_adapter(acc, model, weights, tmp)
        torch.save({"step": step, "tokens_seen": tokens_seen, "first_loss": first_loss,
                    "layout": layout, "strategy": "fsdp" if sharded(acc) else "ddp"},
                   tmp / "state.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)


def find(out: Path) -> Path | None:
    """The checkpoint to resume from, if any."""
    for name in ("checkpoint", "checkpoint.old"):     # .old: a crash between two renames
        if (out / name / "state.pt").is_file():
            return out / name
    return None


def read(ckpt: Path, acc, layout: dict) -> dict:
    """state.pt, once it is certain that resuming keeps the data order and can load the
    optimizer state as this run stores it."""
    import torch
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    if state.get("layout", layout) != layout:
        raise TrainError(f"{ckpt} was saved with {state['layout']}, this run has {layout}: "
                         "resuming would change the data order; use the same settings "
                         "or a new --out")
    if not (ckpt / "accelerate").is_dir():
        raise TrainError(f"{ckpt} was written before training moved to accelerate (no "
                         "accelerate/ state in it); finish that run with the version that "
                         "started it, or start a new --out")
    strategy = "fsdp" if sharded(acc) else "ddp"
    if state.get("strategy", strategy) != strategy:
        raise TrainError(f"{ckpt} was saved under strategy {state['strategy']!r}, this run "
                         f"uses {strategy!r}, which stores the optimizer differently; resume "
                         "with the same strategy or start a new --out")
    return state


def load_adapter(model, ckpt: Path) -> None:
    """The saved LoRA weights into the unprepared model (before sharding)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    set_peft_model_state_dict(model, load_file(ckpt / "adapter_model.safetensors"))


def restore(acc, ckpt: Path) -> None:
    """Optimizer, scaler and random generators (and FSDP's shards) into the prepared
    objects; every process."""
    acc.load_state(str(ckpt / "accelerate"))
