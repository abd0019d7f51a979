#!/usr/bin/env python3
"""How evidence, post-hoc citations and the numeric check behave on a question set, with
the reference answers standing in for the model's (no model runs).

    python scripts/bench/evidence_quality.py corpus/public/questions.jsonl --index DIR

For each answerable question, with the reference answer's own citations removed:
  - evidence@1: the best evidence sentence is from a gold article (hybrid top-k context);
  - post-hoc citation precision/recall of the citations attached from the evidence;
  - grounding false flags: reference answers marked 要確認 although they are right,
    with the retrieved context and with only the gold articles as context (oracle).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingest.japanese import CITATION  # noqa: E402
from rag.evaluation import metrics  # noqa: E402
from rag.evidence import posthoc_citations, select_evidence  # noqa: E402
from rag.grounding import check_numbers  # noqa: E402
from rag.evaluation.questions import load_questions  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402


def strip_citations(answer: str) -> str:
    """The answer without its 「（…規程第4条）」: what a model that cites nothing writes."""
    text = re.sub(r"[（(][^（()）]*第[^（()）]*[条項][^（()）]*[）)]", "", answer)
    return CITATION.sub("", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("questions", type=Path)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("-k", type=int, default=5)
    args = ap.parse_args()
    r = Retriever(args.index)
    titles = {p.source: p.title for p in r.passages}
    qs = [q for q in load_questions(args.questions) if q.gold and q.answer]
    hits = r.search_many([q.question for q in qs], k=args.k)
    n = len(qs)
    ev_gold = prec = rec = flagged = flagged_oracle = 0
    precs = []
    examples = []
    for q, h in zip(qs, hits):
        gold = {(g.file, g.article) for g in q.gold}
        answer = strip_citations(q.answer)
        ev = select_evidence(q.question, answer, h)
        ev_gold += bool(ev) and (ev[0].source, ev[0].article) in gold
        cites = posthoc_citations(answer, ev)
        s = metrics.citation_scores(answer, q.gold, titles,
                                    attached=[(c["source"], c["article"]) for c in cites])
        if s["citation_precision"] is not None:
            precs.append(s["citation_precision"])
        rec += s["citation_recall"] or 0.0
        g = check_numbers(q.answer, h, q.question, ev)
        oracle = [p for g_ in q.gold for p in r.article(g_.file, g_.article)]
        go = check_numbers(q.answer, oracle, q.question)
        flagged += not g.grounded
        flagged_oracle += not go.grounded
        if not go.grounded and len(examples) < 8:
            examples.append({"id": q.id, "unsupported": [c.text for c in go.unsupported]})
    prec = sum(precs) / len(precs) if precs else 0.0
    print(json.dumps({
        "questions": n, "k": args.k,
        "evidence@1_gold": round(ev_gold / n, 3),
        "posthoc_citation_precision": round(prec, 3), "posthoc_cited_share": round(len(precs) / n, 3),
        "posthoc_citation_recall": round(rec / n, 3),
        "grounding_flags_retrieved_context": round(flagged / n, 3),
        "grounding_flags_gold_context": round(flagged_oracle / n, 3),
        "flagged_with_gold_context": examples}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
