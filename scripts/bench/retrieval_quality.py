#!/usr/bin/env python3
"""Retrieval quality per mode on a question set: hit@1, hit@k, MRR, gold recall@k.

    rag ingest corpus --index /tmp/idx-e5 --embedder /tmp/e5-small-st
    python scripts/bench/retrieval_quality.py --index /tmp/idx-e5 \
        corpus/questions.jsonl corpus/heldout.jsonl [--no-expand] [--json]

    rag --config corpus/public/rag.toml ingest corpus/public --index /tmp/idx-pub \
        --embedder /tmp/e5-small-st
    python scripts/bench/retrieval_quality.py --index /tmp/idx-pub corpus/public/questions.jsonl

Strict: the passage is the gold article (what a citation needs); lenient: the passage
merely contains it (an unsplit page).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rag.config import BM25_WEIGHT, MODES  # noqa: E402
from rag.evaluation.metrics import contains_gold, is_gold, retrieval_summary  # noqa: E402
from rag.evaluation.questions import load_questions  # noqa: E402
from rag.retrieval.editions import EditionChoice, question_choice  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("questions", nargs="+", type=Path, help="question set(s), JSONL")
    ap.add_argument("--index", required=True, type=Path, help="index directory")
    ap.add_argument("-k", type=int, default=5, help="cut-off for hit@k and recall@k")
    ap.add_argument("--no-expand", action="store_true", help="no thesaurus query expansion")
    ap.add_argument("--bm25-weight", type=float, default=BM25_WEIGHT,
                    help=f"BM25's vote in hybrid fusion (default {BM25_WEIGHT})")
    ap.add_argument("--all-editions", action="store_true", help="search every edition (as "
                    "before editions); by default each question's as_of/entry_year, else today")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    retriever = Retriever(args.index, thesaurus=None if args.no_expand else "default",
                          bm25_weight=args.bm25_weight)
    report = {"index": str(args.index), "embedder": retriever.info.name, "k": args.k,
              "expand": not args.no_expand, "bm25_weight": args.bm25_weight, "sets": {}}
    for path in args.questions:
        qs = load_questions(path)
        report["sets"][path.name] = {}
        for mode in MODES:
            editions = [EditionChoice(all_editions=True) if args.all_editions
                        else question_choice(q) for q in qs]
            hits = retriever.search_many([q.question for q in qs], k=args.k, mode=mode,
                                         editions=editions)
            passages = [[h.passage for h in r] for r in hits]
            golds = [q.gold for q in qs]
            report["sets"][path.name][mode] = {
                **retrieval_summary(passages, golds, k=args.k, match=is_gold),
                "lenient": retrieval_summary(passages, golds, k=args.k, match=contains_gold)}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    k = args.k
    print(f"embedder {report['embedder']}, expansion {'on' if report['expand'] else 'off'}")
    print(f"{'set':<18} {'mode':<7} {'n':>3} {'hit@1':>6} {f'hit@{k}':>6} {'MRR':>6} "
          f"{f'recall@{k}':>9} | lenient {'hit@1':>6} {f'hit@{k}':>6}")
    for name, modes in report["sets"].items():
        for mode, s in modes.items():
            le = s["lenient"]
            print(f"{name:<18} {mode:<7} {s['questions']:>3} {s['hit@1']:>6.3f} "
                  f"{s['hit@k']:>6.3f} {s['mrr']:>6.3f} {s['recall@k']:>9.3f} | "
                  f"        {le['hit@1']:>6.3f} {le['hit@k']:>6.3f}")


if __name__ == "__main__":
    main()
