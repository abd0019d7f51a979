"""Results are articles, not fragments: the passages of one article fused into one hit.

A long article is split at 項 into several passages, and before this every passage was
a result of its own: a top 10 held 7.2 distinct articles on the statute set (issue 19),
the rest repeats of articles already shown, pushing other articles out. Here each
channel's passage ranking becomes an article ranking (an article ranks where its best
passage ranks), the channels are fused by weighted reciprocal rank over articles, and
each article is returned once, represented by its best passage (the one the passage-level
fusion ranks highest; for one channel, its first).

An article is (source, article label). A passage without a label (prose, an unsplit
page) is an article of its own.
"""
from __future__ import annotations

from ingest.passage import Passage

RRF_K = 60


def article_key(p: Passage) -> tuple[str, str]:
    return (p.source, p.article) if p.article else (p.source, "\0" + p.id)


def first_per_article(ranking: list[tuple[int, float]],
                      passages: list[Passage]) -> list[tuple[int, float]]:
    """One channel: keep each article's first (best) passage, in order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for i, score in ranking:
        key = article_key(passages[i])
        if key not in seen:
            seen.add(key)
            out.append((i, score))
    return out


def fuse_articles(rankings: list[list[tuple[int, float]]], weights: list[float],
                  passages: list[Passage], k: int = RRF_K) -> list[tuple[int, float]]:
    """Weighted reciprocal rank fusion over articles: (best passage index, fused score),
    best first. An article's rank in a channel is the rank of its best passage there
    among that channel's articles; its passage is the one with the highest passage-level
    fused score."""
    article_score: dict[tuple[str, str], float] = {}
    passage_score: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        if not weight:
            continue
        seen: set[tuple[str, str]] = set()
        for rank, (i, _) in enumerate(ranking, start=1):
            passage_score[i] = passage_score.get(i, 0.0) + weight / (k + rank)
            key = article_key(passages[i])
            if key not in seen:
                seen.add(key)
                article_score[key] = article_score.get(key, 0.0) + weight / (k + len(seen))
    best: dict[tuple[str, str], int] = {}
    for i, s in passage_score.items():
        key = article_key(passages[i])
        j = best.get(key)
        if j is None or s > passage_score[j] or (s == passage_score[j] and i < j):
            best[key] = i
    return sorted(((best[key], s) for key, s in article_score.items()),
                  key=lambda x: (-x[1], x[0]))
