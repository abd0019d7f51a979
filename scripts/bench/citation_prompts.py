#!/usr/bin/env python3
"""Does a real model cite? The answering instruction in variants, over answerable sample
questions with hybrid retrieval: citation accuracy, answers citing anything,
must-include and char-F1 per variant (docs/benchmarks.md, "The prompt weakness it
exposed"). The variants change only the instruction, in this process.

    python scripts/bench/citation_prompts.py --model /tmp/qwen-0.5b-ct2-int8 \\
        --index /tmp/idx-main --questions 12 --variants v2,v3,reminder,numbered --json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import rag.prompt as prompt  # noqa: E402

V2_CITE = "根拠にした条文を「（学則第42条）」のように文書名と条番号で示してください。"
V3_CITE = "根拠にした条文を、文書名と条番号（例:「（〇〇規程第〇条）」）で示してください。"
INSTRUCTIONS = {
    "v2": prompt.INSTRUCTION_WITH_CONTEXT.replace(V3_CITE, V2_CITE),
    "v3": prompt.INSTRUCTION_WITH_CONTEXT,
    "reminder": prompt.INSTRUCTION_WITH_CONTEXT.replace(V3_CITE, V2_CITE),
    "numbered": prompt.INSTRUCTION_WITH_CONTEXT.replace(
        V3_CITE, "根拠にした条文の番号を、文末に[1]のように示してください。"),
}
# "reminder" also repeats the request after the question, where small models look last.
REMINDER = "\n\n回答の最後に、根拠にした条文を（学則第N条）のように括弧書きで示してください。"


def numbered_to_citations(text: str, sources) -> str:
    """[n] -> （title 第N条） of the n-th source, as a system would expand it."""
    def sub(m):
        i = int(m.group(1))
        if 1 <= i <= len(sources):
            p = sources[i - 1].passage
            return f"（{p.title}{p.article}）"
        return m.group(0)
    return re.sub(r"\[(\d+)\]", sub, text)


def main() -> int:
    from rag.evaluation import metrics
    from rag.answer import Answerer
    from rag.config import load_config
    from rag.factory import ModelOptions, build_generator
    from rag.generation.base import GenerationOptions
    from rag.evaluation.questions import load_questions
    from rag.retrieval.retriever import Retriever

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="generator (a directory or export)")
    ap.add_argument("--index", required=True, help="index of the sample corpus")
    ap.add_argument("--questions", type=int, default=12, help="first N answerable questions")
    ap.add_argument("--file", default=str(REPO / "corpus/questions.jsonl"))
    ap.add_argument("--variants", default="v2,v3,reminder,numbered")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--json", action="store_true", help="JSON lines only")
    args = ap.parse_args()

    qs = [q for q in load_questions(args.file) if q.gold][:args.questions]
    retriever = Retriever(args.index)
    generator = build_generator(load_config(), ModelOptions(args.model, no_adapter=True),
                                max_new_tokens=args.max_new_tokens)
    titles = retriever.titles()
    hits = retriever.search_many([q.question for q in qs], k=5, mode="hybrid")
    original_input = prompt.context_input
    for variant in args.variants.split(","):
        prompt.INSTRUCTION_WITH_CONTEXT = INSTRUCTIONS[variant]
        prompt.context_input = (
            (lambda q, p, h=(): original_input(q, p, h) + REMINDER) if variant == "reminder"
            else original_input)
        answerer = Answerer(generator, retriever, options=GenerationOptions(args.max_new_tokens))
        started = time.perf_counter()
        answers = [answerer.answer_batch([q.question], [h])[0] for q, h in zip(qs, hits)]
        texts = [numbered_to_citations(a.text, a.sources) if variant == "numbered" else a.text
                 for a in answers]
        n = len(qs)
        row = {"variant": variant, "questions": n,
               "citation": sum(metrics.citation_correct(t, q.gold, titles)
                               for t, q in zip(texts, qs)) / n,
               "cites_any": sum(bool(metrics.cited_articles_in_answer(t)) for t in texts) / n,
               "must_include": sum(metrics.must_include(t, q.must_include)
                                   for t, q in zip(texts, qs)) / n,
               "char_f1": sum(metrics.char_f1(t, q.answer) for t, q in zip(texts, qs)) / n,
               "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in row.items()}, ensure_ascii=False), flush=True)
        if not args.json:
            for t in texts[:6]:
                print("    " + repr(t[:100]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
