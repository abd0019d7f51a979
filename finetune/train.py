"""LoRA fine-tuning: a plain PyTorch loop over transformers + PEFT.

One process per GPU (torchrun / srun sets RANK, WORLD_SIZE, LOCAL_RANK); the same
command runs on a CPU, one GPU, or many GPUs and nodes through DDP. bf16 where the
GPU has it, fp16 with loss scaling and fp32 norms on V100-class GPUs, fp32 on CPU.
Checkpoints hold the adapter, the optimizer, the schedule and the data cursor, so
`resume` continues at the saved step with the same data order.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

from ingest.errors import RagError

from .config import TrainConfig
from .data import batches, collate, prepare

# LoRA targets per architecture: the attention projections.
TARGET_MODULES = {
    "gpt_neox": ["query_key_value"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


class TrainError(RagError):
    pass


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at step {step}")
        self.step = step


class _StopOnSignal:
    """Remembers SIGUSR1/SIGTERM so the loop can checkpoint at the next step boundary;
    under DDP every rank stops at the same step."""

    def __init__(self):
        import signal
        self.name = None
        self._old = {}
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:          # not the main thread: leave signals alone
                pass

    def _handle(self, signum, frame):
        import signal
        self.name = signal.Signals(signum).name

    def requested(self, world: int) -> bool:
        flag = self.name is not None
        if world > 1:
            import torch
            import torch.distributed as dist
            t = torch.tensor([1.0 if flag else 0.0])
            if dist.get_backend() == "nccl":
                t = t.to(torch.cuda.current_device())
            dist.all_reduce(t)
            flag = t.item() > 0
            if flag and self.name is None:
                self.name = "a signal on another rank"
        return flag

    def restore(self) -> None:
        import signal
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _dist():
    """(rank, world size, local rank), initialising the process group under torchrun."""
    import torch
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)     # NCCL collectives use the current device
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world, local_rank


def _targets(cfg: TrainConfig, model) -> list[str]:
    targets = cfg.target_modules or TARGET_MODULES.get(model.config.model_type)
    if not targets:
        raise TrainError(f"no default LoRA targets for architecture "
                         f"{model.config.model_type!r}; set target_modules")
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise TrainError(f"{cfg.model} has no modules named {', '.join(missing)} to put LoRA "
                         f"on ({model.config.model_type}); set target_modules")
    return targets


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(cfg: TrainConfig, *, progress: bool = True, log=print) -> dict:
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    from rag.models import load_causal_lm, load_tokenizer, pick_device_dtype

    started = time.time()
    rank, world, local_rank = _dist()
    main = rank == 0
    out = Path(cfg.out)
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    _, dtype = pick_device_dtype(device, cfg.dtype)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, what="model")
    # Rank 0 tokenises and caches; the others read its cache (no duplicated work, and no
    # NCCL timeout while one rank preprocesses a large dataset alone).
    cache = out / "cache"
    if main:
        data = prepare(cfg.data, tokenizer, cfg.max_length, cfg.eval_fraction,
                       cfg.max_eval_examples, cfg.seed, cache)
    if world > 1:
        dist.barrier()
    if not main:
        data = prepare(cfg.data, tokenizer, cfg.max_length, cfg.eval_fraction,
                       cfg.max_eval_examples, cfg.seed, cache)

    # Each rank loads straight onto its own GPU: no host copy of the weights per rank.
    model = load_causal_lm(cfg.model, device=device, dtype=dtype, what="model",
                           trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    targets = _targets(cfg, model)
    if dtype == torch.float16:
        # fp16 overflows in layer norms and the head (GPT-NeoX on V100): keep them fp32.
        for p in model.parameters():
            if p.ndim == 1:
                p.data = p.data.float()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=targets, task_type="CAUSAL_LM"))
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    amp = dtype in (torch.float16, torch.bfloat16)
    ddp_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        ddp_model = DistributedDataParallel(model, device_ids=[local_rank] if "cuda" in device
                                            else None)

    per_epoch = len(batches(data.train, cfg.micro_batch, cfg.seed, 0, cfg.group_by_length))
    per_step = cfg.grad_accum * world
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / per_step))
    step, tokens_seen, first_loss = 0, 0, None
    ckpt = out / "checkpoint"
    if cfg.resume and not (ckpt / "state.pt").is_file() and (
            out / "checkpoint.old" / "state.pt").is_file():
        ckpt = out / "checkpoint.old"        # a crash between the two renames of a save
    # What the data order depends on: a resumed run must keep it.
    layout = {"world_size": world, "micro_batch": cfg.micro_batch, "grad_accum": cfg.grad_accum,
              "train_examples": len(data.train), "seed": cfg.seed}
    if cfg.resume and (ckpt / "state.pt").is_file():
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
        if state.get("layout", layout) != layout:
            raise TrainError(f"{ckpt} was saved with {state['layout']}, this run has {layout}: "
                             "resuming would change the data order; use the same settings "
                             "or a new --out")
        set_peft_model_state_dict(model, load_file(ckpt / "adapter_model.safetensors"))
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, tokens_seen, first_loss = state["step"], state["tokens_seen"], state["first_loss"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if main:
            log(f"resuming at step {step} of {total}")
            _drop_metrics_after(out / "metrics.jsonl", step)     # they are redone
        if step >= total and (out / "run.json").is_file():
            if main:
                log(f"{out} is already trained to step {step}")
            if world > 1:
                dist.destroy_process_group()
            return json.loads((out / "run.json").read_text("utf-8")) if main else None
    elif cfg.resume and main:
        log(f"no checkpoint in {ckpt}: starting from step 0")

    epoch_cache: dict[int, list[list[int]]] = {}

    def micro_batches(cursor: int):
        """The micro-batch at a global cursor (epochs concatenated, same order on resume)."""
        epoch, i = divmod(cursor, per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = batches(data.train, cfg.micro_batch, cfg.seed, epoch,
                                         cfg.group_by_length)
        return epoch_cache[epoch][i]

    def evaluate() -> float | None:
        if not data.eval:
            return None
        model.eval()
        total_loss = torch.zeros(2, device=device)
        with torch.no_grad():
            for i in range(rank * cfg.micro_batch, len(data.eval), world * cfg.micro_batch):
                b = {k: v.to(device) for k, v in collate(
                    data.eval[i:i + cfg.micro_batch], tokenizer.pad_token_id).items()}
                with torch.autocast(device.split(":")[0], dtype=dtype, enabled=amp):
                    loss = model(**b).loss
                total_loss += torch.stack([loss.float() * len(b["input_ids"]),
                                           torch.tensor(float(len(b["input_ids"])), device=device)])
        if world > 1:
            dist.all_reduce(total_loss)
        model.train()
        return (total_loss[0] / total_loss[1]).item() if total_loss[1] else None

    metrics_path = out / "metrics.jsonl"
    board = _tensorboard(out / "tensorboard") if main else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        log(f"training {n_trainable:,} LoRA parameters on {targets}; {len(data.train)} examples, "
            f"{total} steps of {cfg.micro_batch}x{cfg.grad_accum}x{world}; {device} {dtype}")
    stop = _StopOnSignal()          # Slurm's warning before the time limit, or scancel
    model.train()
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (progress and main))
    window_loss, window_tokens, window_steps, window_start = 0.0, 0, 0, time.time()
    step_tokens = 0
    last_loss, eval_loss = None, None
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg, total)
        step_loss = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            cursor = (step * cfg.grad_accum + micro) * world + rank
            batch = collate([data.train[j] for j in micro_batches(cursor)],
                            tokenizer.pad_token_id)
            # Counted on the CPU: reading it back from the GPU would wait for every step.
            window_tokens += int(batch["attention_mask"].sum()) * world
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            sync = micro == cfg.grad_accum - 1 or world == 1
            ctx = ddp_model.no_sync() if (world > 1 and not sync) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device.split(":")[0], dtype=dtype, enabled=amp):
                    loss = ddp_model(**batch).loss / cfg.grad_accum
                scaler.scale(loss).backward()
            step_loss += loss.detach().float()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:
            dist.all_reduce(step_loss)
            step_loss /= world
        last_loss = step_loss.item()
        first_loss = last_loss if first_loss is None else first_loss
        window_loss += last_loss
        window_steps += 1
        step += 1
        if main:
            bar.update(1)
        tokens_seen += window_tokens - step_tokens
        step_tokens = window_tokens
        if step % cfg.log_every == 0 or step == total:
            elapsed = time.time() - window_start
            record = {"step": step, "loss": round(window_loss / window_steps, 5),
                      "lr": optimizer.param_groups[0]["lr"], "tokens": tokens_seen,
                      "tokens_per_s": round(window_tokens / elapsed, 1) if elapsed else None}
            window_loss, window_tokens, window_steps, step_tokens = 0.0, 0, 0, 0
            window_start = time.time()
            if main:
                bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=record["tokens_per_s"])
                _append(metrics_path, record, board)
        if step % cfg.eval_every == 0 or step == total:
            eval_loss = evaluate()
            if main and eval_loss is not None:
                _append(metrics_path, {"step": step, "eval_loss": round(eval_loss, 5)}, board)
        if main and (step % cfg.save_every == 0 or step == total):
            _checkpoint(out / "checkpoint", model, optimizer, scaler, step, tokens_seen,
                        first_loss, layout)
        if stop.requested(world) and step < total:
            if main:
                _checkpoint(out / "checkpoint", model, optimizer, scaler, step, tokens_seen,
                        first_loss, layout)
                log(f"stopped by {stop.name} at step {step} of {total}; checkpoint saved, "
                    "continue with --resume")
            bar.close()
            stop.restore()
            if world > 1:
                dist.destroy_process_group()
            raise Interrupted(step)
    bar.close()
    stop.restore()

    card = None
    if main:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        card = {
            "base_model": cfg.model, "base_revision": _revision(cfg.model),
            "data": data.counts, "examples": {"train": len(data.train), "eval": len(data.eval)},
            "dropped_too_long": sum(c["dropped_too_long"] for c in data.counts.values()),
            "settings": cfg.to_dict(), "lora_targets": targets,
            "trainable_parameters": n_trainable, "world_size": world,
            "device": device, "dtype": str(dtype).replace("torch.", ""),
            "steps": step, "tokens_seen": tokens_seen,
            "first_train_loss": first_loss, "final_train_loss": last_loss,
            "final_eval_loss": eval_loss, "wall_time_s": round(time.time() - started, 1),
            "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)
            if torch.cuda.is_available() else None,
        }
        (out / "run.json").write_text(json.dumps(card, ensure_ascii=False, indent=1) + "\n",
                                      "utf-8")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return card


def _checkpoint(path: Path, model, optimizer, scaler, step, tokens_seen, first_loss,
                layout) -> None:
    """Adapter + optimizer + data cursor, replaced atomically (resume also reads the
    previous one if a crash falls between the two renames)."""
    import torch
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "tokens_seen": tokens_seen, "first_loss": first_loss,
                "layout": layout, "python_rng": random.getstate(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
               tmp / "state.pt")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


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

