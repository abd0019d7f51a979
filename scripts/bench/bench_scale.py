#!/usr/bin/env python3
"""Scale run on real statute text: ≥100k articles of japan-law, HNSW (issue 19, item 4).

    python scripts/bench/bench_scale.py --japan-law /work/.mirror/DaisukeHori+japan-law/repo \
        --articles 100000 --work /tmp/scale [--queries 200] [--json]

Writes the 本則 of as many laws as it takes to reach --articles (acts, cabinet orders,
then the rest, in file order) as e-Gov-layout text (scripts/corpus/build_lawqa.py's
conversion), builds a random 2-layer BERT with the real dimension (384, e5-small's;
WordPiece trained on a sample of the text: the timing of a real tokenizer and forward
pass, not its quality), runs `ingest()` with --dense hnsw, and then times hybrid
searches of article phrases in `--queries` style (one search_many call). Reports:
articles, passages, ingest seconds and passages/s, index size on disk, peak RSS, p50/p95
ms per query (each query searched alone) and ms/query of the batch.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts" / "corpus"))
sys.path.insert(0, str(REPO / "tests"))


def write_laws(gitdir: Path, out: Path, want: int) -> tuple[int, list[str]]:
    from build_lawqa import law_text, parse_markdown

    names = subprocess.run(["git", "--git-dir", str(gitdir), "ls-tree", "-r", "--name-only",
                            "HEAD", "data/markdown/"], check=True, capture_output=True,
                           text=True).stdout.split()
    order = {"acts": 0, "cabinet_orders": 1}
    names = sorted((n for n in names if n.endswith(".md")),
                   key=lambda n: (order.get(n.split("/")[2], 2), n))
    out.mkdir(parents=True, exist_ok=True)
    total, phrases = 0, []
    for name in names:
        shown = subprocess.run(["git", "--git-dir", str(gitdir), "show", f"HEAD:{name}"],
                               capture_output=True)
        if shown.returncode:              # the snapshot lists some large files it lacks
            continue
        md = shown.stdout.decode("utf-8", "replace")
        try:
            title, number, articles = parse_markdown(md)
        except StopIteration:
            continue
        if not articles:
            continue
        (out / (Path(name).stem + ".txt")).write_text(law_text(title, number, articles),
                                                      encoding="utf-8")
        total += len(articles)
        for _, body in articles[:3]:
            if body and len(body[0]) > 20:
                phrases.append(body[0][:40])
        if total >= want:
            break
    return total, phrases


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--japan-law", required=True, type=Path)
    ap.add_argument("--articles", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rag-scale"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from ingest.pipeline import IngestSettings, ingest
    from rag.retrieval.retriever import Retriever
    from tiny_models import build_tiny_sentence_transformer

    docs, index, model = args.work / "docs", args.work / "index", args.work / "bert384"
    t0 = time.perf_counter()
    articles, phrases = write_laws(args.japan_law, docs, args.articles)
    texts = [f.read_text(encoding="utf-8") for f in sorted(docs.iterdir())[:200]]
    if not (model / "modules.json").is_file():
        build_tiny_sentence_transformer(model, texts, dim=384, max_seq_length=512)
    prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = ingest([docs], index, IngestSettings(embedder=str(model), dense="hnsw"))
    ingest_s = time.perf_counter() - t0
    r = Retriever(index)
    r.warm("hybrid")
    queries = random.Random(0).sample(phrases, min(args.queries, len(phrases)))
    single = []
    for q in queries:
        t = time.perf_counter()
        r.search(q, k=10, mode="hybrid")
        single.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    r.search_many(queries, k=10, mode="hybrid")
    batch_ms = (time.perf_counter() - t) * 1000 / len(queries)
    out = {"laws": len(list(docs.iterdir())), "articles": articles,
           "passages": report.passages, "prepare_s": round(prep, 1),
           "ingest_s": round(ingest_s, 1), "passages_per_s": round(report.passages / ingest_s, 1),
           "index_mb": round(dir_size(index) / 2**20, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "queries": len(queries), "p50_ms": round(float(np.percentile(single, 50)), 1),
           "p95_ms": round(float(np.percentile(single, 95)), 1),
           "batch_ms_per_query": round(batch_ms, 1)}
    print(json.dumps(out, ensure_ascii=False, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
