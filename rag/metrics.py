"""Retrieval metrics against gold articles.

A gold article counts as found when a retrieved passage is that article of that
document, or a split part of it (第42条 split at 項 is still 第42条).
"""
from __future__ import annotations

from ingest.passage import Passage

from .questions import Gold


def is_gold(passage: Passage, gold: Gold) -> bool:
    return passage.source == gold.file and passage.article == gold.article


def first_gold_rank(passages: list[Passage], golds: list[Gold]) -> int | None:
    """1-based rank of the first passage that is any gold article, or None."""
    for rank, p in enumerate(passages, start=1):
        if any(is_gold(p, g) for g in golds):
            return rank
    return None


def gold_recall(passages: list[Passage], golds: list[Gold]) -> float:
    """Share of the gold articles found among `passages` (multi-article questions)."""
    if not golds:
        return 0.0
    return sum(any(is_gold(p, g) for p in passages) for g in golds) / len(golds)


def retrieval_summary(results: list[list[Passage]], golds: list[list[Gold]], k: int) -> dict:
    """hit@1, hit@k, MRR (within the k results) and gold recall@k over answerable questions."""
    rows = [(r[:k], g) for r, g in zip(results, golds) if g]
    if not rows:
        return {"questions": 0}
    ranks = [first_gold_rank(r, g) for r, g in rows]
    n = len(rows)
    return {
        "questions": n,
        "hit@1": sum(1 for x in ranks if x == 1) / n,
        f"hit@{k}": sum(1 for x in ranks if x is not None) / n,
        "mrr": sum(1 / x for x in ranks if x) / n,
        f"recall@{k}": sum(gold_recall(r, g) for r, g in rows) / n,
    }
