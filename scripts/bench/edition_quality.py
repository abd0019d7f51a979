#!/usr/bin/env python3
"""Editions (issue 22): on questions that carry `as_of` / `entry_year`, how often the
governing edition's gold article is at rank 1, and how often a passage of a
non-governing edition of the same regulation is at rank 1 or anywhere in the top k;
with the edition filter (the default) and without it (--all-editions, as before).

    rag --config corpus/public/rag.toml ingest corpus/public --index /tmp/ed-pub \
        --embedder /tmp/e5-small-st
    rag --config corpus/laws/rag.toml ingest corpus/laws --index /tmp/ed-laws \
        --embedder /tmp/e5-small-st
    python scripts/bench/edition_quality.py --index /tmp/ed-pub corpus/public/editions.jsonl
    python scripts/bench/edition_quality.py --index /tmp/ed-laws corpus/laws/editions.jsonl

A question's gold is the governing edition's article; "non-governing" is a passage of
another edition of that regulation (its 附則 included).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rag.evaluation.metrics import is_gold  # noqa: E402
from rag.evaluation.questions import load_questions  # noqa: E402
from rag.retrieval.editions import EditionChoice, question_choice  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402


def score(retriever: Retriever, qs, k: int, mode: str, all_editions: bool) -> dict:
    table = retriever.editions
    choices = [question_choice(q) for q in qs]
    run = [EditionChoice(all_editions=True) for _ in qs] if all_editions else choices
    hits = retriever.search_many([q.question for q in qs], k=k, mode=mode, editions=run)
    top1 = topk = wrong1 = wrongk = 0
    misses = []
    for q, choice, hs in zip(qs, choices, hits):
        gold_sources = {g.file for g in q.gold}
        governing = retriever.governing(choice)
        regs = {table.documents[s].regulation for s in gold_sources if s in table.documents}
        # Passages of this regulation's other editions, as the question's choice sees them.
        def non_governing(p) -> bool:
            rec = table.documents.get(p.source)
            return bool(rec and rec.regulation in regs and not governing.allows(p))
        passages = [h.passage for h in hs]
        first = passages[:1]
        top1 += any(is_gold(p, g) for p in first for g in q.gold)
        topk += any(is_gold(p, g) for p in passages for g in q.gold)
        wrong1 += any(non_governing(p) for p in first)
        wrongk += any(non_governing(p) for p in passages)
        if not any(is_gold(p, g) for p in first for g in q.gold):
            misses.append({"id": q.id, "rank1": f"{first[0].source} {first[0].article}"
                           if first else None})
    n = len(qs)
    return {"n": n, "hit@1": round(top1 / n, 3), f"hit@{k}": round(topk / n, 3),
            "non_governing@1": wrong1, f"non_governing@{k}": wrongk, "misses": misses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("questions", nargs="+", type=Path)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--mode", default="hybrid")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    retriever = Retriever(args.index)
    report = {}
    for path in args.questions:
        qs = load_questions(path)
        report[path.name] = {"editions": score(retriever, qs, args.k, args.mode, False),
                             "all_editions": score(retriever, qs, args.k, args.mode, True)}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    k = args.k
    for name, r in report.items():
        for cond, s in r.items():
            print(f"{name:<24} {cond:<13} n={s['n']:<3} hit@1 {s['hit@1']:.3f}  hit@{k} "
                  f"{s[f'hit@{k}']:.3f}  non-governing at rank 1: {s['non_governing@1']}, "
                  f"in top {k}: {s[f'non_governing@{k}']}")
            for m in s["misses"]:
                print(f"    miss {m['id']}: rank 1 {m['rank1']}")


if __name__ == "__main__":
    main()
