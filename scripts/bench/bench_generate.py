#!/usr/bin/env python3
"""Generation speed and `rag ask` overhead.

    # the tiny OpenCALM-layout model on CPU (what this repo's tests use)
    python scripts/bench/bench_generate.py --tiny /tmp/tiny-neox --json
    # a randomly initialised model of OpenCALM-3B's exact architecture, saved as
    # safetensors and loaded from disk (needs ~6 GB of GPU memory in fp16/bf16)
    python scripts/bench/bench_generate.py --opencalm-3b /tmp/opencalm-3b-random \\
        --dtype bf16 --dtype fp16 --lora
    # overhead of `rag ask` outside generation (retrieval + prompt building)
    python scripts/bench/bench_generate.py --model /tmp/tiny-neox --overhead-index /tmp/idx-e5

Reports model load time, first-token latency (p50 over prompts) and tokens/s of a
single stream with greedy decoding, and the retrieval + packing time per question.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from rag.generation.hf import TransformersGenerator  # noqa: E402
from rag.generation.base import GenerationOptions  # noqa: E402
from rag.prompt import build_prompt  # noqa: E402
from rag.evaluation.questions import load_questions  # noqa: E402

OPENCALM_3B = dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                   num_attention_heads=32, vocab_size=52224, max_position_embeddings=2048,
                   rotary_pct=1.0, rotary_emb_base=10000, use_parallel_residual=False,
                   tie_word_embeddings=False, hidden_act="gelu", layer_norm_eps=1e-5,
                   bos_token_id=0, eos_token_id=0, initializer_range=0.02)
# The random models get a tokenizer trained on the sample corpus (OpenCALM's own cannot
# be downloaded here); its ids all fall inside the model's 52,224-entry embedding.
RANDOM_TOKENIZER_VOCAB = 8000


def corpus_texts() -> list[str]:
    from ingest.loaders import load_document
    return [load_document(f).text for f in sorted((REPO / "corpus").iterdir())
            if f.suffix in {".txt", ".md", ".html", ".pdf"}]


# OpenCALM-7B differs from 3B only in width (field notes §D.1).
OPENCALM_SIZES = {"3b": {}, "7b": dict(hidden_size=4096, intermediate_size=16384)}


def make_random_opencalm(out: Path, size: str = "3b") -> Path:
    """Random weights in OpenCALM's exact shape (fp16 safetensors, as the Hub's), with a
    tokenizer trained on the sample corpus."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from tiny_models import build_tiny_gpt_neox
    if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
        return out
    build_tiny_gpt_neox(out / "tok", corpus_texts(), vocab_size=RANDOM_TOKENIZER_VOCAB)
    config = GPTNeoXConfig(pad_token_id=1, **{**OPENCALM_3B, **OPENCALM_SIZES[size]})
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = GPTNeoXForCausalLM(config).half()
    n = sum(p.numel() for p in model.parameters())
    print(f"built random OpenCALM-{size}: {n / 1e9:.3f}B parameters", file=sys.stderr)
    model.save_pretrained(out, safe_serialization=True)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    for f in (out / "tok").iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            f.rename(out / f.name)
    return out


def add_model_args(ap: argparse.ArgumentParser) -> None:
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="an existing causal LM (path or id)")
    src.add_argument("--tiny", type=Path, help="build (if absent) the tiny test model here")
    src.add_argument("--opencalm-3b", type=Path,
                     help="build (if absent) a random OpenCALM-3B-shaped model here")
    ap.add_argument("--tiny-vocab", type=int, default=3000,
                    help=f"vocabulary of the tiny model's tokenizer ({RANDOM_TOKENIZER_VOCAB}"
                    " gives the random OpenCALM models' tokenizer)")


def model_from_args(args) -> str:
    if args.tiny:
        from tiny_models import build_tiny_gpt_neox
        if not (args.tiny / "model.safetensors").exists():
            build_tiny_gpt_neox(args.tiny, corpus_texts(), vocab_size=args.tiny_vocab)
        return str(args.tiny)
    if args.opencalm_3b:
        return str(make_random_opencalm(args.opencalm_3b))
    return args.model


def bench_generation(model: str, dtype: str | None, adapter: str | None, prompts: list[str],
                     max_new_tokens: int, device: str | None) -> dict:
    gen = TransformersGenerator(model, adapter=adapter, dtype=dtype, device=device)
    gen.generate(prompts[0], GenerationOptions(4))                     # warm-up (kernels, caches)
    first, rates, decode, lengths = [], [], [], []
    for p in prompts:
        g = gen.generate(p, GenerationOptions(max_new_tokens))
        lengths.append(g.new_tokens)
        rates.append(g.tokens_per_s or 0)              # whole answer, prompt included
        if g.first_token_ms and g.tokens_per_s and g.new_tokens > 1:
            first.append(g.first_token_ms)
            total_ms = g.new_tokens / g.tokens_per_s * 1000
            decode.append((g.new_tokens - 1) / (total_ms - g.first_token_ms) * 1000)
    out = {"model": model, "adapter": adapter, "device": gen.device, "dtype": str(gen.dtype),
           "load_s": round(gen.load_s, 2), "prompts": len(prompts),
           "new_tokens_mean": round(statistics.mean(lengths), 1),
           "first_token_ms_p50": round(statistics.median(first), 1) if first else None,
           "tokens_per_s_p50": round(statistics.median(rates), 1),
           "decode_tokens_per_s_p50": round(statistics.median(decode), 1) if decode else None}
    try:
        import torch
        if torch.cuda.is_available():
            out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    except Exception:  # noqa: BLE001
        pass
    return out


def bench_overhead(model: str, index: str, questions: list[str]) -> dict:
    """Retrieval + prompt packing per question, models already loaded."""
    from rag.answer import Answerer
    from rag.retrieval.retriever import Retriever
    retriever = Retriever(index)
    retriever.warm()
    answerer = Answerer(TransformersGenerator(model), retriever)
    times, retrieval = [], []
    for q in questions:
        t0 = time.perf_counter()
        hits, ms = answerer.retrieve(q)
        answerer.decide(q, hits)
        times.append((time.perf_counter() - t0) * 1000)
        retrieval.append(ms)
    times.sort()
    return {"questions": len(questions), "overhead_ms_p50": round(statistics.median(times), 1),
            "overhead_ms_p95": round(times[int(0.95 * (len(times) - 1))], 1),
            "retrieval_ms_p50": round(statistics.median(retrieval), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--dtype", action="append", help="dtype(s) to time (auto, bf16, fp16, fp32)")
    ap.add_argument("--lora", action="store_true", help="also time with a random LoRA adapter")
    ap.add_argument("--device", help="cuda, cpu, ... (default: automatic)")
    ap.add_argument("--prompts", type=int, default=8, help="questions to generate for")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--overhead-index", help="also time retrieval + prompt building with "
                    "this index")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    model = model_from_args(args)
    questions = [q.question for q in load_questions(REPO / "corpus" / "questions.jsonl")]
    # Realistic prompts: the question with two articles of context (~600 characters).
    context_text = (REPO / "corpus" / "学則.txt").read_text("utf-8")[2000:2600]
    from rag.prompt import ContextPassage
    prompts = [build_prompt(q, [ContextPassage("東雲大学情報科学部学則", "第42条", context_text)])
               for q in questions[:args.prompts]]
    results = {"generation": []}
    adapters = [None]
    if args.lora:
        from tiny_models import make_lora_adapter
        lora_dir = Path(model + "-lora")
        if not (lora_dir / "adapter_config.json").exists():
            make_lora_adapter(Path(model), lora_dir)
        adapters.append(str(lora_dir))
    for dtype in args.dtype or ["auto"]:
        for adapter in adapters:
            r = bench_generation(model, dtype, adapter, prompts, args.max_new_tokens, args.device)
            results["generation"].append(r)
            print(r, file=sys.stderr, flush=True)
    if args.overhead_index:
        results["ask_overhead"] = bench_overhead(model, args.overhead_index, questions)
        print(results["ask_overhead"], file=sys.stderr)
    print(json.dumps(results, ensure_ascii=False, indent=1 if args.json else None))


if __name__ == "__main__":
    main()
