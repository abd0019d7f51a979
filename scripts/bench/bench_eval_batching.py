#!/usr/bin/env python3
"""Throughput of batched versus one-at-a-time generation, as `rag eval` runs it.

    python scripts/bench/bench_eval_batching.py --tiny /tmp/tiny-neox --index /tmp/idx-e5 \\
        --batch-sizes 1,8 [--json]
    # on a GPU, with a random model of OpenCALM-3B's architecture; the prompts are
    # retrieved and packed where the index is (--save-prompts), then carried over:
    python scripts/bench/bench_eval_batching.py --tiny /tmp/tok8k --tiny-vocab 8000 \\
        --index /tmp/idx-e5 --questions 74 --save-prompts prompts.jsonl
    python scripts/bench/bench_eval_batching.py --opencalm-3b /tmp/oc3b --prompts prompts.jsonl \\
        --batch-sizes 1,16 --dtype bf16 --seconds-per-size 30

The same prompts (the sample question set with hybrid retrieval, packed as
`rag ask` packs them) are generated greedily with a fixed number of new tokens, so
the comparison is of batching alone. Reports questions per minute and the ratio.
`--seconds-per-size` time-boxes each batch size (whole batches, at least one): the
rate is taken over the questions it finished.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts" / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_generate import add_model_args, model_from_args  # noqa: E402

from rag.generation.hf import TransformersGenerator  # noqa: E402
from rag.generation.base import GenerationOptions  # noqa: E402
from rag.evaluation.questions import load_questions  # noqa: E402


def packed_prompts(gen: TransformersGenerator, index: str, questions: list[str], max_new_tokens: int):
    """Hybrid retrieval + packing for the generator's window, as `rag eval` does."""
    from rag.answer import Answerer
    from rag.context import Source
    from rag.retrieval.retriever import Retriever
    retriever = Retriever(index)
    answerer = Answerer(gen, retriever, options=GenerationOptions(max_new_tokens))
    hits = retriever.search_many(questions, k=5)
    return [answerer.build(q, [Source(h.passage, h.score) for h in hs])[0]
            for q, hs in zip(questions, hits)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--index", help="retrieve and pack the prompts with this index")
    src.add_argument("--prompts", type=Path, help="JSONL of prompts saved by --save-prompts")
    ap.add_argument("--save-prompts", type=Path,
                    help="write the packed prompts here (JSONL) and stop")
    ap.add_argument("--batch-sizes", default="1,8", help="comma-separated, e.g. 1,8,16")
    ap.add_argument("--max-new-tokens", type=int, default=32,
                    help="tokens generated for every prompt")
    ap.add_argument("--questions", type=int, default=64, help="how many questions to use")
    ap.add_argument("--seconds-per-size", type=float,
                    help="stop each batch size after this long (whole batches)")
    ap.add_argument("--dtype", help="auto, bf16, fp16 or fp32")
    ap.add_argument("--json", action="store_true", help="indented JSON")
    args = ap.parse_args()
    model = model_from_args(args)
    gen = TransformersGenerator(model, dtype=args.dtype)
    if args.prompts:
        prompts = [json.loads(x)["prompt"] for x in
                   args.prompts.read_text("utf-8").splitlines() if x.strip()]
        prompts = prompts[:args.questions]
    else:
        qs = [q.question for q in load_questions(REPO / "corpus/questions.jsonl")]
        prompts = packed_prompts(gen, args.index, qs[:args.questions], args.max_new_tokens)
    if args.save_prompts:
        args.save_prompts.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False)
                                             + "\n" for p in prompts), "utf-8")
        print(f"{len(prompts)} prompts -> {args.save_prompts}", file=sys.stderr)
        return
    lengths = sorted(gen.count_tokens(p) for p in prompts)
    results = {"model": model, "device": gen.device, "dtype": str(gen.dtype),
               "questions": len(prompts), "prompt_tokens_p50": lengths[len(lengths) // 2],
               "prompt_tokens_max": lengths[-1], "max_new_tokens": args.max_new_tokens,
               "runs": {}}
    gen.generate_batch(prompts[:2], GenerationOptions(4))              # warm-up
    for bs in map(int, args.batch_sizes.split(",")):
        started, done = time.perf_counter(), 0
        for i in range(0, len(prompts), bs):
            # Every prompt generates exactly max_new_tokens: batching alone is compared.
            gen.generate_batch(prompts[i:i + bs],
                               GenerationOptions(args.max_new_tokens, fixed_length=True))
            done += len(prompts[i:i + bs])
            if args.seconds_per_size and time.perf_counter() - started > args.seconds_per_size:
                break
        elapsed = time.perf_counter() - started
        results["runs"][bs] = {"questions": done, "seconds": round(elapsed, 2),
                               "questions_per_min": round(done / elapsed * 60, 1),
                               "new_tokens_per_s": round(done * args.max_new_tokens / elapsed, 1)}
        print(f"batch {bs}: {results['runs'][bs]}", file=sys.stderr, flush=True)
    sizes = list(results["runs"])
    if len(sizes) > 1:
        results["speedup"] = round(results["runs"][sizes[-1]]["questions_per_min"]
                                   / results["runs"][sizes[0]]["questions_per_min"], 2)
    print(json.dumps(results, indent=1 if args.json else None))


if __name__ == "__main__":
    main()
