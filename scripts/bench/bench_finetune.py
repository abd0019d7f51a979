#!/usr/bin/env python3
"""Fine-tuning speed: tokens/s, model-FLOPs utilisation and peak memory.

    # CPU: the tiny test model, to show the loop runs (steps/s)
    python scripts/bench/bench_finetune.py --tiny /tmp/tiny-neox --seq 256 --steps 10
    # GPU: random weights in OpenCALM-3B's (or 7B's) exact architecture, LoRA as in the
    # seed recipe, the seed's settings (fp16, micro-batch 4) against ours (bf16)
    python scripts/bench/bench_finetune.py --arch 3b --seq 512 --seq 1024 \\
        --setting fp16:4 --setting bf16:4 --setting bf16:8 --steps 20 --json
    python scripts/bench/bench_finetune.py --arch 7b --seq 1024 --setting bf16:4 --steps 5

Each setting trains `--steps` optimizer steps (grad_accum 1) on synthetic examples of
exactly `--seq` tokens through finetune.train's own loop (LoRA r=4 on query_key_value,
gradient checkpointing). MFU counts the strict LoRA work: forward + activation
gradients + the checkpointing recompute, about 3 forward passes (field notes §E.2);
the peak for H100 dense bf16/fp16 is 989 TFLOPS (`--peak-tflops` to change it). The
projected epoch is 64k examples of the seed data's mean length (`--mean-tokens`).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts" / "bench"))

ARCH = {"3b": dict(hidden_size=2560, intermediate_size=10240),
        "7b": dict(hidden_size=4096, intermediate_size=16384)}


def build_model(arch: str, out: Path) -> Path:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from bench_generate import OPENCALM_3B, corpus_texts
    from tiny_models import build_tiny_gpt_neox
    if (out / "config.json").exists():
        return out
    build_tiny_gpt_neox(out / "tok", corpus_texts(), vocab_size=8000)
    cfg = GPTNeoXConfig(pad_token_id=1, **{**OPENCALM_3B, **ARCH[arch]})
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = GPTNeoXForCausalLM(cfg).half()
    model.save_pretrained(out, safe_serialization=True)
    for f in (out / "tok").iterdir():
        if f.name.startswith("tokenizer"):
            f.rename(out / f.name)
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def synthetic_data(path: Path, seq: int, n: int) -> Path:
    """Alpaca rows whose prompt + completion tokenise to about `seq` tokens."""
    rows = [{"instruction": "規程について答えてください。" * max(1, seq // 24),
             "output": "学則第42条により除籍となります。" * max(1, seq // 48)} for _ in range(n)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    return path


def lora_flops_per_token(cfg, seq: int) -> float:
    """Strict LoRA + checkpointing: 3 forward passes of matmuls and attention."""
    h, L, i, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    mm = L * (4 * h * h + 2 * h * i)
    forward = 2 * (mm + V * h) + 4 * L * seq * h
    return 3 * forward


def run_setting(model: str, data: Path, seq: int, dtype: str, micro: int, steps: int,
                group: bool) -> dict:
    import torch
    from transformers import AutoConfig

    from finetune.config import TrainConfig
    from finetune.train import train
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=model, data=[str(data)], out=tmp, max_steps=steps,
                          micro_batch=micro, grad_accum=1, lr=1e-4, warmup_steps=1,
                          eval_fraction=0.0, log_every=max(1, steps // 2), eval_every=10**9,
                          save_every=10**9, max_length=seq + 64, dtype=dtype,
                          group_by_length=group, lora_dropout=0.05)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            card = train(cfg, progress=False, log=lambda s: None)
        except torch.OutOfMemoryError:
            return {"dtype": dtype, "micro_batch": micro, "seq": seq, "oom": True}
        wall = time.perf_counter() - started
        metrics = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()
                   if "tokens_per_s" in x]
    tok_s = metrics[-1]["tokens_per_s"]            # second half: warm kernels
    mcfg = AutoConfig.from_pretrained(model)
    return {"dtype": dtype, "micro_batch": micro, "seq": seq, "steps": steps,
            "tokens_per_s": tok_s, "steps_per_s": round(steps / wall, 3),
            "flops_per_token": lora_flops_per_token(mcfg, seq),
            "peak_gb": card["peak_gpu_memory_gb"], "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tiny", type=Path, help="the tiny test model (built if absent)")
    src.add_argument("--arch", choices=list(ARCH), help="random OpenCALM-3B or -7B weights")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/opencalm-random"))
    ap.add_argument("--seq", type=int, action="append", help="sequence length(s)")
    ap.add_argument("--setting", action="append", help="dtype:micro_batch, e.g. bf16:8")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--mean-tokens", type=float, default=300.0,
                    help="mean tokens per example of the seed data, for the epoch projection")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        from bench_generate import corpus_texts
        from tiny_models import build_tiny_gpt_neox
        if not (args.tiny / "config.json").exists():
            build_tiny_gpt_neox(args.tiny, corpus_texts())
        model = str(args.tiny)
    else:
        model = str(build_model(args.arch, args.model_dir / args.arch))
    results = {"model": model, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seq in args.seq or [512]:
            data = synthetic_data(Path(tmp) / f"d{seq}.jsonl", seq, 512)
            for setting in args.setting or ["auto:4"]:
                dtype, micro = setting.split(":")
                r = run_setting(model, data, seq, dtype, int(micro), args.steps,
                                group=dtype != "fp16")
                if r.get("tokens_per_s"):
                    r["mfu"] = round(r["tokens_per_s"] * r["flops_per_token"]
                                     / (args.peak_tflops * 1e12), 4)
                    r["epoch_64k_min"] = round(64000 * args.mean_tokens / r["tokens_per_s"] / 60, 1)
                results["runs"].append(r)
                print(r, file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1 if args.json else None))


if __name__ == "__main__":
    main()
