#!/usr/bin/env python3
"""Calibrate `generate.min_score`, the abstention threshold, for an index's embedder.

    python scripts/bench/calibrate_abstention.py --index /tmp/idx-e5 \\
        corpus/questions.jsonl [--max-false-abstention 0.05] [--json]

For each question the best dense similarity among the retrieved passages is taken
(what `rag ask` compares with min_score). The suggested threshold is the highest one
that abstains on at most the given share of answerable questions; the report says
how many unanswerable questions it then catches.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rag.evaluation.questions import load_questions  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("questions", nargs="+", type=Path)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--max-false-abstention", type=float, default=0.05,
                    help="largest share of answerable questions allowed to abstain")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    retriever = Retriever(args.index)
    answerable, unanswerable = [], []
    for path in args.questions:
        qs = load_questions(path)
        for q, hits in zip(qs, retriever.search_many([q.question for q in qs], k=args.k)):
            best = max((h.dense_score or 0.0) for h in hits) if hits else 0.0
            (answerable if q.gold else unanswerable).append(best)
    answerable.sort()
    allowed = int(args.max_false_abstention * len(answerable))
    threshold = answerable[allowed] if answerable else 0.0   # abstain strictly below it
    report = {"embedder": retriever.info.name, "min_score": round(threshold, 4),
              "answerable": len(answerable), "unanswerable": len(unanswerable),
              "false_abstention": sum(s < threshold for s in answerable) / max(1, len(answerable)),
              "abstention_on_unanswerable": sum(s < threshold for s in unanswerable)
              / max(1, len(unanswerable))}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print(f"min_score = {report['min_score']}  # {report['embedder']}: abstains on "
              f"{report['abstention_on_unanswerable']:.0%} of {len(unanswerable)} unanswerable "
              f"and {report['false_abstention']:.0%} of {len(answerable)} answerable questions")


if __name__ == "__main__":
    main()
