#!/usr/bin/env python3
"""CTranslate2 against transformers on the same prompts: load time, prefill (prompt
tokens/s), first token, decode tokens/s and peak memory, each backend in a process of
its own (so peak RSS is its own).

    # a random model of OpenCALM-3B's exact architecture (built if absent), CPU
    python scripts/bench/bench_ct2.py --opencalm-3b /tmp/opencalm-3b-random --json
    # any causal LM
    python scripts/bench/bench_ct2.py --model /tmp/tiny-neox --quantization int8

The CTranslate2 export is made beside the model (MODEL-ct2-QUANTIZATION) if absent.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts/bench"))

WORKER = """
import json, resource, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from rag.generation.base import GenerationOptions
backend, model, prompts_file, new, threads = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
prompts = json.loads(open(prompts_file, encoding="utf-8").read())
if backend == "ctranslate2":
    from rag.generation.ct2 import CT2Generator
    gen = CT2Generator(model, device="cpu", threads=threads)
else:
    import torch
    if threads:
        torch.set_num_threads(threads)
    from rag.generation.hf import TransformersGenerator
    gen = TransformersGenerator(model, device="cpu", dtype="fp32")
gen.generate(prompts[0], GenerationOptions(2))          # warm-up
first, prefill, decode, plen = [], [], [], []
for p in prompts:
    n_prompt = gen.count_tokens(p)
    g = gen.generate(p, GenerationOptions(new, fixed_length=True))
    first.append(g.first_token_ms)
    prefill.append(n_prompt / (g.first_token_ms / 1000))
    decode.append(g.decode_tokens_per_s)
    plen.append(n_prompt)
print(json.dumps({"backend": backend, "load_s": round(gen.load_s, 2),
                  "prompt_tokens_mean": round(statistics.mean(plen)),
                  "first_token_ms_p50": round(statistics.median(first), 1),
                  "prefill_tokens_per_s_p50": round(statistics.median(prefill), 1),
                  "decode_tokens_per_s_p50": round(statistics.median(decode), 2),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))
"""


def prompts(n: int, tokenizer_source: str) -> list[str]:
    """Answering prompts of the sample questions with five passages each (k = 5), rendered as
    `rag ask` renders them for this model (its chat template, if it has one)."""
    from rag.generation.models import load_tokenizer
    from rag.prompt import ContextPassage, render
    from rag.evaluation.questions import load_questions
    from ingest.loaders import load_document
    from ingest.splitter import split_document

    passages = []
    for f in sorted((REPO / "corpus").iterdir()):
        if f.suffix in {".txt", ".md", ".html", ".pdf"}:
            passages += split_document(load_document(f), f.name)
    qs = load_questions(REPO / "corpus/questions.jsonl")[:n]
    tokenizer = load_tokenizer(tokenizer_source)
    return [render(tokenizer, q.question, [ContextPassage(p.title, p.label, p.text)
                                           for p in passages[i * 5:i * 5 + 5]])
            for i, q in enumerate(qs)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a causal LM directory")
    src.add_argument("--opencalm-3b", type=Path, help="build (if absent) a random "
                     "OpenCALM-3B-shaped model here")
    ap.add_argument("--quantization", default="int8", help="CTranslate2 weights (int8)")
    ap.add_argument("--prompts", type=int, default=4, help="prompts measured")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated each")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    if args.opencalm_3b:
        from bench_generate import make_random_opencalm
        model = str(make_random_opencalm(args.opencalm_3b))
    else:
        model = args.model
    export_dir = Path(f"{model.rstrip('/')}-ct2-{args.quantization}")
    if not (export_dir / "model.bin").exists():
        from rag.generation.ct2 import export
        export(model, export_dir, quantization=args.quantization,
               log=lambda s: print(s, file=sys.stderr))
    file = export_dir / "bench-prompts.json"
    file.write_text(json.dumps(prompts(args.prompts, model), ensure_ascii=False), "utf-8")
    runs = []
    for backend, path in (("transformers", model), ("ctranslate2", str(export_dir))):
        out = subprocess.run([sys.executable, "-c", WORKER, str(REPO), backend, path, str(file),
                              str(args.max_new_tokens), str(args.threads)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        runs.append({**json.loads(out.stdout.strip().splitlines()[-1]),
                     **({"quantization": args.quantization} if backend == "ctranslate2" else
                        {"dtype": "fp32"})})
    hf, ct = runs
    ratios = {k: round(ct[k] / hf[k], 2) for k in ("prefill_tokens_per_s_p50",
                                                   "decode_tokens_per_s_p50")}
    ratios["memory"] = round(ct["peak_rss_gb"] / hf["peak_rss_gb"], 2)
    report = {"model": model, "max_new_tokens": args.max_new_tokens, "runs": runs,
              "ct2_over_transformers": ratios}
    print(json.dumps(report, ensure_ascii=False, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
