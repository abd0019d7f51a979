#!/usr/bin/env python3
"""Throughput of batched versus one-at-a-time generation, as `rag eval` runs it.

    python scripts/bench/bench_eval_batching.py --tiny /tmp/tiny-neox --index /tmp/idx-e5 \\
        --batch-sizes 1,8 [--json]
    # on a GPU, with a random model of OpenCALM-3B's architecture:
    python scripts/bench/bench_eval_batching.py --opencalm-3b /tmp/oc3b --index /tmp/idx-e5 \\
        --batch-sizes 1,16 --dtype bf16

The same prompts (the sample question set with hybrid retrieval, packed as
`rag ask` packs them) are generated greedily with a fixed number of new tokens, so
the comparison is of batching alone. Reports questions per minute and the ratio.
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

from rag.answer import Answerer  # noqa: E402
from rag.context import Source  # noqa: E402
from rag.generate import Generator  # noqa: E402
from rag.questions import load_questions  # noqa: E402
from rag.retrieve import Retriever  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--index", required=True)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--questions", type=int, default=64, help="how many questions to time")
    ap.add_argument("--dtype")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = model_from_args(args)
    retriever = Retriever(args.index)
    gen = Generator(model, dtype=args.dtype)
    answerer = Answerer(gen, retriever, max_new_tokens=args.max_new_tokens)
    qs = [q.question for q in load_questions(REPO / "corpus/questions.jsonl")][:args.questions]
    hits = retriever.search_many(qs, k=5)
    prompts = [answerer.build(q, [Source(h.passage, h.score) for h in hs])[0]
               for q, hs in zip(qs, hits)]
    results = {"model": model, "device": gen.device, "dtype": str(gen.dtype),
               "questions": len(prompts), "max_new_tokens": args.max_new_tokens, "runs": {}}
    gen.generate_batch(prompts[:2], max_new_tokens=4)              # warm-up
    for bs in map(int, args.batch_sizes.split(",")):
        started = time.perf_counter()
        for i in range(0, len(prompts), bs):
            # Every prompt generates exactly max_new_tokens: batching alone is compared.
            gen.generate_batch(prompts[i:i + bs], max_new_tokens=args.max_new_tokens,
                               fixed_length=True)
        elapsed = time.perf_counter() - started
        results["runs"][bs] = {"seconds": round(elapsed, 2),
                               "questions_per_min": round(len(prompts) / elapsed * 60, 1)}
        print(f"batch {bs}: {results['runs'][bs]}", file=sys.stderr, flush=True)
    sizes = list(results["runs"])
    if len(sizes) > 1:
        results["speedup"] = round(results["runs"][sizes[-1]]["questions_per_min"]
                                   / results["runs"][sizes[0]]["questions_per_min"], 2)
    print(json.dumps(results, indent=1 if args.json else None))


if __name__ == "__main__":
    main()
