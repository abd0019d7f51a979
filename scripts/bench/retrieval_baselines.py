#!/usr/bin/env python3
"""Our retrieval side by side with two whole-article baselines, on question sets.

    rag ingest corpus/laws/lawqa --index /tmp/idx-lawqa --embedder /tmp/e5-small-st
    python scripts/bench/retrieval_baselines.py --index /tmp/idx-lawqa \
        corpus/laws/lawqa/questions.jsonl [--json] [--bigram-weight W] [--bm25-weight W]

Baselines (issue 19), over the index's articles (its passages grouped by document and
article label, so both sides share the splitter's labels; text = title + label + the
article's passages):
  bigram-article  BM25 over character bigrams of whole articles (ingest/bigram.py)
  dense-article   the index's embedder over whole articles (truncated to its window);
                  vectors cached under --cache
Ours: hybrid, bm25, dense as `rag search` runs them (one result per article).

Figures per set: hit@1, hit@5, MRR (first gold article), recall@10 (share of gold
articles in the top 10), articles@10 (distinct articles among the top 10 results).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingest import bigram  # noqa: E402
from ingest.japanese import nfkc  # noqa: E402
from rag.config import BM25_WEIGHT  # noqa: E402
from rag.evaluation.metrics import retrieval_summary  # noqa: E402
from rag.evaluation.questions import load_questions  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402

try:                   # a checkout from before the bigram channel: its "before" figures
    from rag.config import BIGRAM_WEIGHT  # noqa: E402
except ImportError:
    BIGRAM_WEIGHT = None
K = 10


def articles_of(passages):
    """[(representative passage, whole-article text)] in index order."""
    groups: dict[tuple[str, str], list] = {}
    for p in passages:
        key = (p.source, p.article) if p.article else (p.source, "\0" + p.id)
        groups.setdefault(key, []).append(p)
    out = []
    for ps in groups.values():
        first = ps[0]
        text = nfkc(" ".join(x for x in (first.title, first.heading, first.article) if x)
                    + "\n" + "\n".join(p.text for p in ps))
        out.append((first, text))
    return out


def summarise(results, golds) -> dict:
    s5 = retrieval_summary(results, golds, k=5)
    s10 = retrieval_summary(results, golds, k=K)
    distinct = [len({(p.source, p.article or p.id) for p in r[:K]}) for r in results]
    return {"questions": s5["questions"], "hit@1": s5["hit@1"], "hit@5": s5["hit@k"],
            "mrr": s5["mrr"], "recall@10": s10["recall@k"],
            "articles@10": sum(distinct) / max(1, len(distinct))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("questions", nargs="+", type=Path)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--bm25-weight", type=float, default=BM25_WEIGHT)
    ap.add_argument("--bigram-weight", type=float, default=BIGRAM_WEIGHT)
    ap.add_argument("--no-baselines", action="store_true", help="ours only")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/rag-baseline-cache"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    weights = {"bm25_weight": args.bm25_weight}
    if BIGRAM_WEIGHT is not None:
        weights["bigram_weight"] = args.bigram_weight
    r = Retriever(args.index, **weights)
    arts = articles_of(r.passages)
    report = {"index": str(args.index), "embedder": r.info.name, "articles": len(arts),
              "passages": len(r.passages), "bm25_weight": args.bm25_weight,
              "bigram_weight": args.bigram_weight, "sets": {}}
    if not args.no_baselines:
        bg = bigram.build([t for _, t in arts])
        key = hashlib.sha256(("\n\0".join(t for _, t in arts) + r.info.name + r.info.revision)
                             .encode()).hexdigest()[:16]
        cache = args.cache / f"articles-{key}.npy"
        if cache.is_file():
            avecs = np.load(cache)
        else:
            t0 = time.perf_counter()
            avecs = r.embedder.embed_passages([t for _, t in arts])
            print(f"embedded {len(arts)} articles in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
            args.cache.mkdir(parents=True, exist_ok=True)
            np.save(cache, avecs)
    for path in args.questions:
        qs = load_questions(path)
        golds = [q.gold for q in qs]
        texts = [q.question for q in qs]
        rows = {}
        if not args.no_baselines:
            res = [[arts[i][0] for i, _ in bigram.search(bg, nfkc(t), K)] for t in texts]
            rows["bigram-article"] = summarise(res, golds)
            qv = r.embedder.embed_queries([nfkc(t) for t in texts])
            top = np.argsort(-(qv @ avecs.T), axis=1)[:, :K]
            rows["dense-article"] = summarise([[arts[i][0] for i in row] for row in top], golds)
        for mode in ("hybrid", "bm25", "dense"):
            t0 = time.perf_counter()
            hits = r.search_many(texts, k=K, mode=mode)
            ms = (time.perf_counter() - t0) * 1000 / max(1, len(texts))
            rows[mode] = {**summarise([[h.passage for h in hs] for hs in hits], golds),
                          "ms/query": ms}
        report["sets"][str(path)] = rows
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    print(f"index {report['index']}: {report['passages']} passages, {report['articles']} "
          f"articles; embedder {report['embedder']}; weights bm25 {args.bm25_weight}, "
          f"bigram {args.bigram_weight}")
    print(f"{'set':<40} {'method':<15} {'n':>4} {'hit@1':>6} {'hit@5':>6} {'MRR':>6} "
          f"{'rec@10':>6} {'art@10':>6}")
    for name, rows in report["sets"].items():
        for method, s in rows.items():
            print(f"{name[-40:]:<40} {method:<15} {s['questions']:>4} {s['hit@1']:>6.3f} "
                  f"{s['hit@5']:>6.3f} {s['mrr']:>6.3f} {s['recall@10']:>6.3f} "
                  f"{s['articles@10']:>6.1f}")


if __name__ == "__main__":
    main()
