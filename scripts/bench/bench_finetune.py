#!/usr/bin/env python3
"""Fine-tuning speed: tokens/s, model-FLOPs utilisation and peak memory.

    # CPU: the tiny test model, to show the loop runs (steps/s)
    python scripts/bench/bench_finetune.py --tiny /tmp/tiny-neox --seq 256 --steps 10
    # GPU: random weights in OpenCALM-3B's (or 7B's) exact architecture, LoRA as in the
    # seed recipe; the seed's settings (fp16, micro-batch 4, batches in random order)
    # against ours (bf16, length-grouped batches, a larger micro-batch)
    python scripts/bench/bench_finetune.py --arch 3b --seq 512 --seq 1024 \\
        --setting fp16:4:nogroup --setting bf16:4 --setting bf16:16 --steps 20 --json
    # the seed data's length distribution (lognormal, mean --mean-tokens, at most --seq)
    python scripts/bench/bench_finetune.py --arch 3b --lengths varied --seq 1024 \\
        --setting fp16:4:nogroup --setting bf16:16
    python scripts/bench/bench_finetune.py --arch 7b --seq 1024 --setting fp16:4 --steps 4

A setting is dtype:micro_batch[:flag...], flags `nogc` (no gradient checkpointing) and
`nogroup` (batches in random order rather than grouped by length). Each trains
`--steps` optimizer steps (grad_accum 1) through finetune.train's own loop (LoRA r=4
on query_key_value); tokens/s is over the second half (warm kernels) and counts real
tokens, not padding. MFU counts the model FLOPs of LoRA training, forward plus the
activation gradients (the frozen base needs no weight gradients), about 2 forward
passes; HFU adds the recompute of gradient checkpointing (field notes §E.2). The
peak for H100 dense bf16/fp16 is 989 TFLOPS (`--peak-tflops`). The projected epoch
is 64k examples of `--mean-tokens` tokens each.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts" / "bench"))

from bench_generate import OPENCALM_SIZES, corpus_texts, make_random_opencalm  # noqa: E402

UNIT = "学則第42条により、修得単位数が基準に満たない者は除籍となります。"
ASK = "次の規程について答えてください。"


def synthetic_data(path: Path, tokenizer, lengths: list[int]) -> Path:
    """Alpaca rows of at most (and about) the given token lengths, template and
    end-of-text included."""
    from rag.prompt import render_instruction

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    per_unit = count(UNIT)
    overhead = count(render_instruction(tokenizer, ASK)) + 1 + 2    # eos, joins
    rows = []
    for n in lengths:
        units = max(2, (n - overhead) // per_unit)
        rows.append({"instruction": ASK + UNIT * (units // 2),
                     "output": UNIT * (units - units // 2)})
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    return path


def lengths_for(kind: str, seq: int, mean: float, n: int, seed: int = 0) -> list[int]:
    if kind == "fixed":
        return [seq] * n
    rng = random.Random(seed)                    # lognormal, like instruction data
    sigma = 0.8
    mu = math.log(mean) - sigma ** 2 / 2
    return [min(seq, max(48, round(rng.lognormvariate(mu, sigma)))) for _ in range(n)]


def flops_per_token(cfg, seq: float) -> tuple[float, float]:
    """(model FLOPs, forward FLOPs) per token for LoRA on a frozen GPT-NeoX."""
    h, L, i, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    matmul = 2 * (L * (4 * h * h + 2 * h * i) + V * h)
    attention = 4 * L * seq * h
    forward = matmul + attention
    return forward + matmul + 2 * attention, forward     # + activation gradients


def run_setting(model: str, data: Path, seq: int, dtype: str, micro: int, steps: int,
                flags: set[str]) -> dict:
    import torch

    from finetune.config import TrainConfig
    from finetune.train import train
    row = {"dtype": dtype, "micro_batch": micro, "seq": seq, "steps": steps,
           "gradient_checkpointing": "nogc" not in flags, "group_by_length": "nogroup" not in flags}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=model, data=[str(data)], out=tmp, max_steps=steps,
                          micro_batch=micro, grad_accum=1, lr=1e-4, warmup_steps=1,
                          eval_fraction=0.0, log_every=max(1, steps // 2), eval_every=10**9,
                          save_every=10**9, max_length=seq, dtype=dtype,
                          group_by_length=row["group_by_length"],
                          gradient_checkpointing=row["gradient_checkpointing"],
                          lora_dropout=0.05)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            card = train(cfg, progress=False, log=lambda s: None)
        except torch.OutOfMemoryError:
            return {**row, "oom": True}
        wall = time.perf_counter() - started
        metrics = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()
                   if "tokens_per_s" in x]
    return {**row, "tokens_per_s": metrics[-1]["tokens_per_s"],      # second half: warm
            "mean_tokens": round(card["tokens_seen"] / (steps * micro), 1),
            "peak_gb": card["peak_gpu_memory_gb"], "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tiny", type=Path, help="the tiny test model (built if absent)")
    src.add_argument("--arch", choices=list(OPENCALM_SIZES),
                     help="random OpenCALM-3B or -7B weights (built under --model-dir)")
    src.add_argument("--model", help="an existing causal LM directory")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/opencalm-random"),
                    help="where --arch builds its model (reused when present)")
    ap.add_argument("--seq", type=int, action="append",
                    help="sequence length(s): every example's length (fixed) or the cap")
    ap.add_argument("--lengths", choices=["fixed", "varied"], default="fixed",
                    help="fixed: every example --seq tokens; varied: lognormal lengths")
    ap.add_argument("--setting", action="append",
                    help="dtype:micro_batch[:nogc][:nogroup], e.g. bf16:8 (repeatable)")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per setting")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the accelerator's dense bf16/fp16 peak (H100 SXM: 989)")
    ap.add_argument("--mean-tokens", type=float, default=300.0,
                    help="mean tokens per example of the seed data (epoch projection, varied)")
    ap.add_argument("--json", action="store_true", help="indented JSON")
    args = ap.parse_args()
    if args.tiny:
        from tiny_models import build_tiny_gpt_neox
        if not (args.tiny / "config.json").exists():
            build_tiny_gpt_neox(args.tiny, corpus_texts())
        model = str(args.tiny)
    elif args.arch:
        model = str(make_random_opencalm(args.model_dir / args.arch, args.arch))
    else:
        model = args.model
    from transformers import AutoConfig, AutoTokenizer
    mcfg, tokenizer = AutoConfig.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    results = {"model": model, "lengths": args.lengths, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seq in args.seq or [512]:
            for setting in args.setting or ["auto:4"]:
                dtype, micro, *flags = setting.split(":")
                micro = int(micro)
                n = max(64, micro * args.steps)
                data = synthetic_data(Path(tmp) / f"d{seq}-{n}.jsonl", tokenizer,
                                      lengths_for(args.lengths, seq, args.mean_tokens, n))
                r = run_setting(model, data, seq, dtype, micro, args.steps, set(flags))
                if r.get("tokens_per_s"):
                    model_flops, forward = flops_per_token(mcfg, r["mean_tokens"])
                    hardware = model_flops + (forward if r["gradient_checkpointing"] else 0)
                    peak = args.peak_tflops * 1e12
                    r["mfu"] = round(r["tokens_per_s"] * model_flops / peak, 4)
                    r["hfu"] = round(r["tokens_per_s"] * hardware / peak, 4)
                    mean = args.mean_tokens if args.lengths == "varied" else r["mean_tokens"]
                    r["epoch_64k_min"] = round(64000 * mean / r["tokens_per_s"] / 60, 1)
                results["runs"].append(r)
                print(r, file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1 if args.json else None))


if __name__ == "__main__":
    main()
