#!/usr/bin/env python3
"""Choose the hybrid fusion weights on the public sets; check them on held-out ones.

    python scripts/bench/tune_fusion.py \
        --tune /tmp/idx-pub:corpus/public/questions.jsonl \
        --tune /tmp/idx-sample:corpus/questions.jsonl \
        --check /tmp/idx-sample:corpus/heldout.jsonl \
        --check /tmp/idx-lawqa:corpus/laws/lawqa/questions.jsonl

Grid over (bm25_weight, bigram_weight, citation_weight), the dense ranking's weight 1.
The objective is the mean over the tuning sets of strict hit@1 + hit@5 + MRR; the
held-out sets are only reported (never used to choose). Prints the best few settings.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rag.evaluation.metrics import retrieval_summary  # noqa: E402
from rag.evaluation.questions import load_questions  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402

BM25 = (0.5, 1.0, 1.5, 2.0)
BIGRAM = (0.0, 0.5, 1.0, 1.5, 2.0)
CITATION = (0.0, 1.0, 2.0)


def pairs(specs: list[str]):
    for spec in specs:
        index, questions = spec.split(":", 1)
        yield Path(index), Path(questions)


def _memoise_queries(r: Retriever) -> None:
    """The query vectors do not depend on the weights: encode each question once."""
    import numpy as np
    encode, memo = r.query_encoder, {}

    def cached(texts):
        todo = [t for t in texts if t not in memo]
        if todo:
            memo.update(zip(todo, encode(todo)))
        return np.stack([memo[t] for t in texts])
    r._query_encoder = cached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tune", action="append", required=True, help="INDEX:QUESTIONS")
    ap.add_argument("--check", action="append", default=[], help="INDEX:QUESTIONS")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    retrievers: dict[Path, Retriever] = {}
    sets = []
    for role, specs in (("tune", args.tune), ("check", args.check)):
        for index, qpath in pairs(specs):
            if index not in retrievers:
                retrievers[index] = r = Retriever(index)
                _memoise_queries(r)
            r = retrievers[index]
            qs = load_questions(qpath)
            sets.append((role, str(qpath), r, qs))
    rows = []
    for bm25, bigram, cite in itertools.product(BM25, BIGRAM, CITATION):
        scores = {}
        for role, name, r, qs in sets:
            r.bm25_weight, r.bigram_weight, r.citation_weight = bm25, bigram, cite
            hits = r.search_many([q.question for q in qs], k=10, mode="hybrid")
            s5 = retrieval_summary([[h.passage for h in x] for x in hits],
                                   [q.gold for q in qs], k=5)
            s10 = retrieval_summary([[h.passage for h in x] for x in hits],
                                    [q.gold for q in qs], k=10)
            scores[name] = (role, s5["hit@1"], s5["hit@k"], s5["mrr"], s10["recall@k"])
        tune = [v for v in scores.values() if v[0] == "tune"]
        objective = sum(h1 + h5 + mrr for _, h1, h5, mrr, _ in tune) / len(tune)
        rows.append((objective, (bm25, bigram, cite), scores))
        print(f"bm25 {bm25} bigram {bigram} citation {cite}: objective {objective:.3f}",
              file=sys.stderr)
    rows.sort(key=lambda x: -x[0])
    for objective, (bm25, bigram, cite), scores in rows[:args.top]:
        print(f"bm25 {bm25:<4} bigram {bigram:<4} citation {cite:<4} objective {objective:.3f}")
        for name, (role, h1, h5, mrr, r10) in scores.items():
            print(f"    {role:<5} {name[-34:]:<34} hit@1 {h1:.3f} hit@5 {h5:.3f} MRR {mrr:.3f} "
                  f"recall@10 {r10:.3f}")


if __name__ == "__main__":
    main()
