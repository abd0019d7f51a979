"""LoRA fine-tuning: transformers + PEFT on accelerate, in four phases.

    setup     tokenizer, data, the schedule's length; with `resume`, the checkpoint's
              step, checked against this run's data layout; then the model, the
              optimizer, both prepared by the Accelerator, and the saved state
    fit       optimizer steps over length-grouped micro-batches (loss on the response
              only), warmup + cosine learning rate, metrics, checkpoints, and a
              checkpoint-and-stop on SIGUSR1/SIGTERM
    validate  the evaluation loss, every `eval_every` steps and at the end
    save      adapter, tokenizer and the run card run.json

The same command runs on a CPU, one GPU, or many GPUs and nodes (finetune/runtime.py:
the Accelerator, DDP or FSDP). Micro-batch i of an epoch is a function of (seed, epoch),
and rank r of w takes the global micro-batches r, r + w, ...; the learning rate is a
function of the step. So a resumed run (finetune/checkpoint.py) continues with the same
data and schedule, and needs no sampler or scheduler state.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from rag.prompt import PROMPT_RECORD, prompt_record

from . import checkpoint
from .config import TrainConfig
from .data import Prepared, batches, collate, length_skew, prepare
from .runtime import (
    TrainError,  # noqa: F401 - rag.cli catches it from here
    _StopOnSignal,
    accelerator_for,
    adapter_weights,
    build_model,
    device_name,
    save_adapter,
    strategy_name,
)

# Every process saves through this name (tests wrap it to simulate a preemption).
_checkpoint = checkpoint.save


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at step {step}")
        self.step = step


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class _Run:
    """What the phases share."""
    cfg: TrainConfig
    acc: object                      # accelerate.Accelerator
    dtype: object                    # torch dtype of the base weights
    tokenizer: object
    data: Prepared
    total: int                       # optimizer steps
    per_epoch: int                   # micro-batches in one epoch
    layout: dict                     # what the data order depends on
    resume_from: Path | None = None
    step: int = 0
    tokens_seen: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    eval_loss: float | None = None
    model: object = None
    optimizer: object = None
    targets: list[str] = field(default_factory=list)
    n_trainable: int = 0
    _epoch: dict = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    def micro_batch(self, cursor: int) -> list[int]:
        """Example indices of the micro-batch at a global cursor (epochs concatenated)."""
        epoch, i = divmod(cursor, self.per_epoch)
        if epoch not in self._epoch:
            self._epoch.clear()
            self._epoch[epoch] = batches(self.data.train, self.cfg.micro_batch, self.cfg.seed,
                                         epoch, self.cfg.group_by_length)
        return self._epoch[epoch][i]


def train(cfg: TrainConfig, *, progress: bool = True, log=print) -> dict | None:
    """Train, save, and return the run card (None on the processes other than the main
    one); raises Interrupted after a signal's checkpoint."""
    started = time.time()
    with accelerator_for(cfg) as (acc, dtype):
        run = _setup(cfg, acc, dtype, log)
        if run.step >= run.total and (run.out / "run.json").is_file():
            if run.main:
                log(f"{run.out} is already trained to step {run.step}")
            return json.loads((run.out / "run.json").read_text("utf-8")) if run.main else None
        _setup_model(run, log)
        _fit(run, progress, log)
        return _save(run, started)


# ------------------------------------------------------------------------------ setup
def _setup(cfg: TrainConfig, acc, dtype, log) -> _Run:
    import torch

    from rag.generation.models import load_tokenizer
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, what="model")
    # The main process tokenises and caches; the others then read its cache (no duplicated
    # work, and no collective timing out while one process preprocesses alone).
    with acc.main_process_first():
        data = prepare(cfg.data, tokenizer, cfg.max_length, cfg.eval_fraction,
                       cfg.max_eval_examples, cfg.seed, Path(cfg.out) / "cache")
    world = acc.num_processes
    per_epoch = len(batches(data.train, cfg.micro_batch, cfg.seed, 0, cfg.group_by_length))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / (cfg.grad_accum * world)))
    layout = {"world_size": world, "micro_batch": cfg.micro_batch, "grad_accum": cfg.grad_accum,
              "train_examples": len(data.train), "seed": cfg.seed}
    run = _Run(cfg, acc, dtype, tokenizer, data, total, per_epoch, layout)
    ckpt = checkpoint.find(run.out) if cfg.resume else None
    if ckpt is not None:
        state = checkpoint.read(ckpt, acc, layout)
        run.resume_from = ckpt
        run.step, run.tokens_seen, run.first_loss = (state["step"], state["tokens_seen"],
                                                     state["first_loss"])
        if run.main:
            log(f"resuming at step {run.step} of {total}")
            _drop_metrics_after(run.out / "metrics.jsonl", run.step)     # they are redone
    elif cfg.resume and run.main:
        log(f"no checkpoint in {run.out / 'checkpoint'}: starting from step 0")
    return run


def _setup_model(run: _Run, log) -> None:
    """The LoRA model and its optimizer, prepared (placed, wrapped for DDP or sharded);
    on resume, the checkpoint's adapter, optimizer, scaler and random generators."""
    import torch
    cfg, acc = run.cfg, run.acc
    model, run.targets = build_model(cfg, acc, run.dtype)
    if run.resume_from is not None:
        checkpoint.load_adapter(model, run.resume_from)
    trainable = [p for p in model.parameters() if p.requires_grad]
    run.n_trainable = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    run.model, run.optimizer = acc.prepare(model, optimizer)
    if run.resume_from is not None:
        checkpoint.restore(acc, run.resume_from)
    if run.main:
        run.out.mkdir(parents=True, exist_ok=True)
        log(f"training {run.n_trainable:,} LoRA parameters on {run.targets}; "
            f"{len(run.data.train)} examples, {run.total} steps of "
            f"{cfg.micro_batch}x{cfg.grad_accum}x{acc.num_processes} "
            f"({strategy_name(acc)}); {device_name(acc)} {run.dtype}")
        if skew := length_skew(run.data.counts, cfg.max_length):
            log(f"warning: {skew}")


# -------------------------------------------------------------------------------- fit
def _fit(run: _Run, progress: bool, log) -> None:
    from tqdm.auto import tqdm
    cfg, acc = run.cfg, run.acc
    metrics = run.out / "metrics.jsonl"
    board = _tensorboard(run.out / "tensorboard") if run.main else None
    stop = _StopOnSignal()          # Slurm's warning before the time limit, or scancel
    bar = tqdm(total=run.total, initial=run.step, desc="train", unit="step",
               disable=not (progress and run.main))
    window_loss, window_tokens, window_steps, window_start = 0.0, 0, 0, time.time()
    run.model.train()
    try:
        while run.step < run.total:
            loss, tokens = _optimizer_step(run)
            run.step += 1
            run.last_loss = loss
            run.first_loss = loss if run.first_loss is None else run.first_loss
            run.tokens_seen += tokens
            window_loss, window_tokens, window_steps = (window_loss + loss,
                                                        window_tokens + tokens, window_steps + 1)
            bar.update(1)
            last = run.step == run.total
            if run.step % cfg.log_every == 0 or last:
                elapsed = time.time() - window_start
                record = {"step": run.step, "loss": round(window_loss / window_steps, 5),
                          "lr": run.optimizer.param_groups[0]["lr"], "tokens": run.tokens_seen,
                          "tokens_per_s": round(window_tokens / elapsed, 1) if elapsed else None}
                window_loss, window_tokens, window_steps = 0.0, 0, 0
                window_start = time.time()
                if run.main:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=record["tokens_per_s"])
                    _append(metrics, record, board)
            if run.step % cfg.eval_every == 0 or last:
                run.eval_loss = _validate(run)
                if run.main and run.eval_loss is not None:
                    _append(metrics, {"step": run.step, "eval_loss": round(run.eval_loss, 5)},
                            board)
            if run.step % cfg.save_every == 0 or last:
                _checkpoint(run.out / "checkpoint", acc, run.model, run.layout, run.step,
                            run.tokens_seen, run.first_loss)
            if stop.requested(acc) and not last:
                if run.step % cfg.save_every:
                    _checkpoint(run.out / "checkpoint", acc, run.model, run.layout, run.step,
                                run.tokens_seen, run.first_loss)
                if run.main:
                    log(f"stopped by {stop.name} at step {run.step} of {run.total}; "
                        "checkpoint saved, continue with --resume")
                raise Interrupted(run.step)
    finally:
        bar.close()
        stop.restore()


def _optimizer_step(run: _Run) -> tuple[float, int]:
    """One optimizer step over grad_accum micro-batches on every process: (mean loss
    over all processes, tokens over all processes, estimated from this one's)."""
    import torch
    cfg, acc, model, optimizer = run.cfg, run.acc, run.model, run.optimizer
    world, rank = acc.num_processes, acc.process_index
    for group in optimizer.param_groups:
        group["lr"] = lr_at(run.step, cfg, run.total)
    step_loss = torch.zeros((), device=acc.device)
    tokens = 0
    for micro in range(cfg.grad_accum):
        cursor = (run.step * cfg.grad_accum + micro) * world + rank
        batch = collate([run.data.train[j] for j in run.micro_batch(cursor)],
                        run.tokenizer.pad_token_id)
        # Counted on the CPU: reading it back from the GPU would wait for every step.
        tokens += int(batch["attention_mask"].sum()) * world
        batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
        # Gradients are synchronised (DDP all-reduce, FSDP reduce-scatter) on the last
        # micro-batch only; backward divides the loss by grad_accum and scales it for fp16.
        with acc.accumulate(model):
            loss = model(**batch).loss
            acc.backward(loss)
        step_loss += loss.detach().float() / cfg.grad_accum
    if not acc.sync_gradients:
        raise RuntimeError("gradient accumulation out of step with the optimizer")
    acc.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()                 # skipped by the scaler when fp16 gradients overflowed
    optimizer.zero_grad(set_to_none=True)
    return acc.reduce(step_loss, "mean").item(), tokens


# --------------------------------------------------------------------------- validate
def _validate(run: _Run) -> float | None:
    """Mean evaluation loss over the held-out examples, shared out among the processes."""
    import torch
    cfg, acc, data = run.cfg, run.acc, run.data
    if not data.eval:
        return None
    world, rank, size = acc.num_processes, acc.process_index, cfg.micro_batch
    run.model.eval()
    sums = torch.zeros(2, device=acc.device)
    with torch.no_grad():
        for r in range(math.ceil(len(data.eval) / (world * size))):
            start = (r * world + rank) * size
            rows = data.eval[start:start + size]
            # Every process runs every round (FSDP gathers each layer's weights with all
            # of them): one past the end reruns the first batch and counts nothing.
            batch = collate(rows or data.eval[:size], run.tokenizer.pad_token_id)
            loss = run.model(**{k: v.to(acc.device) for k, v in batch.items()}).loss
            sums += torch.stack([loss.float() * len(rows),
                                 torch.tensor(float(len(rows)), device=acc.device)])
    sums = acc.reduce(sums, "sum")
    run.model.train()
    return (sums[0] / sums[1]).item() if sums[1] else None


# ------------------------------------------------------------------------------- save
def _save(run: _Run, started: float) -> dict | None:
    """Adapter + tokenizer in OUT, and run.json (main process; every process gathers)."""
    import torch
    cfg, acc = run.cfg, run.acc
    weights = adapter_weights(acc, run.model)
    if not run.main:
        acc.wait_for_everyone()
        return None
    save_adapter(acc, run.model, weights, run.out)
    run.tokenizer.save_pretrained(run.out)
    # The prompt layout the adapter learned, checked when it answers (rag.prompt).
    (run.out / PROMPT_RECORD).write_text(json.dumps(prompt_record(run.tokenizer)) + "\n",
                                         "utf-8")
    data = run.data
    card = {
        "base_model": cfg.model, "base_revision": _revision(cfg.model),
        "data": data.counts, "examples": {"train": len(data.train), "eval": len(data.eval)},
        "dropped_too_long": sum(c["dropped_too_long"] for c in data.counts.values()),
        "settings": cfg.to_dict(), "lora_targets": run.targets,
        "trainable_parameters": run.n_trainable, "world_size": acc.num_processes,
        "strategy": strategy_name(acc),
        "device": device_name(acc), "dtype": str(run.dtype).replace("torch.", ""),
        "prompt": prompt_record(run.tokenizer),
        "steps": run.step, "tokens_seen": run.tokens_seen,
        "first_train_loss": run.first_loss, "final_train_loss": run.last_loss,
        "final_eval_loss": run.eval_loss, "wall_time_s": round(time.time() - started, 1),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)
        if torch.cuda.is_available() else None,
    }
    (run.out / "run.json").write_text(json.dumps(card, ensure_ascii=False, indent=1) + "\n",
                                      "utf-8")
    acc.wait_for_everyone()
    return card


# --------------------------------------------------------------------------- metrics
def _drop_metrics_after(path: Path, step: int) -> None:
    """Metrics logged after the checkpoint are logged again by the resumed run."""
    if path.is_file():
        keep = [ln for ln in path.read_text("utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        path.write_text("".join(ln + "\n" for ln in keep), "utf-8")


def _append(path: Path, record: dict, board=None) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    if board is not None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                board.add_scalar(key, value, record["step"])
        board.flush()


def _tensorboard(path: Path):
    """A TensorBoard writer when tensorboard is installed; metrics.jsonl either way."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def _revision(model: str) -> str | None:
    from ingest.embedder import resolve_revision
    return resolve_revision(model)
