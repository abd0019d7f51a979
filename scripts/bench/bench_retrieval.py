#!/usr/bin/env python3
"""Retrieval speed on this machine: ingest throughput, search latency per mode at
1k/10k/100k passages, incremental re-ingest cost, and index size on disk.

    python scripts/bench/bench_retrieval.py --embedder /tmp/e5-small-st [--json]

Synthetic corpora are made from the sentences of the shipped corpus, recombined
into regulation-style articles (第N条, captions, 項), so BM25 sees a real Japanese
term distribution. Search latency is timed after the query embedding (which is
timed separately, with the real embedder); for the 10k and 100k indexes the
vectors are random unit vectors of the embedder's dimension, because embedding
100k passages on two CPU cores would take hours and FAISS's exact search costs
the same whatever the vectors hold.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ingest import store  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402
from ingest.japanese import split_sentences  # noqa: E402
from ingest.loaders import load_document  # noqa: E402
from ingest.passage import Passage  # noqa: E402
from ingest.pipeline import IngestSettings, ingest  # noqa: E402
from ingest.tokenizer import JapaneseTokenizer  # noqa: E402
from rag.evaluation.questions import load_questions  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402

CORPUS = REPO / "corpus"
ZEN = str.maketrans("0123456789", "０１２３４５６７８９")


def corpus_sentences() -> list[str]:
    out = []
    for f in sorted(CORPUS.iterdir()):
        if f.suffix in {".txt", ".md", ".html", ".pdf"}:
            text = load_document(f).text
            out += [s.strip() for s in split_sentences(text) if len(s.strip()) > 12]
    return out


def synthetic_document(rng: random.Random, sentences: list[str], n_articles: int,
                       title: str) -> str:
    lines = [title, ""]
    for a in range(1, n_articles + 1):
        if a % 10 == 1:
            lines.append(f"第{a // 10 + 1}章　第{a // 10 + 1}章の規定".translate(ZEN))
        lines.append(f"（{rng.choice(sentences)[:6]}）")
        body = rng.sample(sentences, rng.randint(1, 3))
        lines.append(f"第{a}条　".translate(ZEN) + body[0])
        for n, s in enumerate(body[1:], start=2):
            lines.append(f"{n}　".translate(ZEN) + s)
    return "\n".join(lines) + "\n"


def write_corpus(dst: Path, rng, sentences, docs: int, per_doc: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        (dst / f"規程{d:04d}.txt").write_text(
            synthetic_document(rng, sentences, per_doc, f"東雲大学合成規程第{d}号"), "utf-8")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q))


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_ingest(embedder: str, work: Path, sentences, rng) -> dict:
    """Real ingest (load, split, embed, BM25, write) of ten documents; then change one."""
    src = work / "ten"
    write_corpus(src, rng, sentences, docs=10, per_doc=100)
    index = work / "ten-idx"
    t0 = time.perf_counter()
    full = ingest([src], index, IngestSettings(embedder=embedder))
    full_s = time.perf_counter() - t0
    f = src / "規程0003.txt"
    text = f.read_text("utf-8").splitlines()
    i = next(k for k, ln in enumerate(text) if ln.startswith("第１２条"))
    text[i] = text[i] + "ただし、学長が特に認めた場合は、この限りでない。"
    f.write_text("\n".join(text) + "\n", "utf-8")
    t0 = time.perf_counter()
    again = ingest([src], index, IngestSettings(embedder=embedder))
    re_s = time.perf_counter() - t0
    # A full rebuild from scratch, including the model load, for the same corpus.
    shutil.rmtree(index)
    t0 = time.perf_counter()
    ingest([src], index, IngestSettings(embedder=embedder))
    rebuild_s = time.perf_counter() - t0
    return {"passages": full.passages, "full_s": round(full_s, 2),
            "passages_per_s": round(full.passages / full_s, 1),
            "reingest_one_of_ten_s": round(re_s, 2), "reembedded": again.embedded,
            "rebuild_s": round(rebuild_s, 2), "reingest_ratio": round(re_s / rebuild_s, 3),
            "index_bytes": dir_size(index)}


def build_synthetic_index(path: Path, n: int, dim: int, sentences, sentence_tokens, rng,
                          dense: str = "flat") -> None:
    passages, tokens = [], []
    for i in range(n):
        picks = rng.sample(range(len(sentences)), rng.randint(1, 3))
        text = "\n".join(sentences[j] for j in picks)
        passages.append(Passage(f"s{i // 100}.txt#第{i % 100 + 1}条@{i:08x}", f"s{i // 100}.txt",
                                f"合成規程{i // 100}", "", f"第{i % 100 + 1}条", "", "", None, text))
        tokens.append([t for j in picks for t in sentence_tokens[j]])
    vecs = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    manifest = store.Manifest(embedder=EMBEDDER_INFO, documents={}, passages=n,
                              dense=store.DenseInfo.for_kind(dense))
    store.write_generation(path, manifest, passages, tokens, store.build_dense(vecs, dense),
                           store.build_bm25(tokens))


def bench_search(index: Path, queries: list[str], k: int = 5) -> dict:
    r = Retriever(index)
    r._embedder = SHARED_EMBEDDER           # the real model, loaded once for all sizes
    out = {}
    embed_ms = []
    vecs = []
    for q in queries:
        t0 = time.perf_counter()
        vecs.append(SHARED_EMBEDDER.embed_queries([q]))
        embed_ms.append((time.perf_counter() - t0) * 1000)
    out["query_embedding_ms"] = {"p50": round(pct(embed_ms, 50), 2),
                                 "p95": round(pct(embed_ms, 95), 2)}
    # Retrieval after embedding: feed the precomputed vectors through the same code.
    for mode in ("bm25", "dense", "hybrid"):
        times = []
        for q, v in zip(queries, vecs):
            r.embedder.embed_queries = lambda _qs, v=v: v
            t0 = time.perf_counter()
            r.search(q, k=k, mode=mode)
            times.append((time.perf_counter() - t0) * 1000)
        out[mode] = {"p50_ms": round(pct(times, 50), 2), "p95_ms": round(pct(times, 95), 2)}
    del r.embedder.embed_queries
    whole = []
    for q in queries:
        t0 = time.perf_counter()
        r.search(q, k=k, mode="hybrid")
        whole.append((time.perf_counter() - t0) * 1000)
    out["hybrid_with_embedding"] = {"p50_ms": round(pct(whole, 50), 2),
                                    "p95_ms": round(pct(whole, 95), 2)}
    out["index_bytes"] = dir_size(store.current_generation(index))
    return out


def main() -> None:
    global SHARED_EMBEDDER, EMBEDDER_INFO
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embedder", required=True, help="sentence-transformers model (id or path)")
    ap.add_argument("--sizes", default="1000,10000,100000",
                    help="synthetic index sizes in passages (comma separated)")
    ap.add_argument("--hnsw", action="store_true", help="also time an HNSW index at each size")
    ap.add_argument("--skip-ingest", action="store_true", help="skip the ingest benchmark")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    rng = random.Random(0)
    sentences = corpus_sentences()
    tok = JapaneseTokenizer()
    sentence_tokens = [tok.tokenize(s) for s in sentences]
    SHARED_EMBEDDER = Embedder(args.embedder)
    EMBEDDER_INFO = SHARED_EMBEDDER.info
    queries = [q.question for q in load_questions(CORPUS / "questions.jsonl")]
    results: dict = {"embedder": args.embedder, "machine": _machine()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_ingest:
            results["ingest"] = bench_ingest(args.embedder, work, sentences, rng)
            _log(f"ingest: {results['ingest']}")
        results["search"] = {}
        for n in map(int, args.sizes.split(",")):
            for kind in ("flat", "hnsw") if args.hnsw else ("flat",):
                index = work / f"syn-{n}-{kind}"
                t0 = time.perf_counter()
                build_synthetic_index(index, n, SHARED_EMBEDDER.dimension, sentences,
                                      sentence_tokens, rng, kind)
                res = bench_search(index, queries)
                res["build_s_without_embedding"] = round(time.perf_counter() - t0, 1)
                results["search"][f"{n}-{kind}"] = res
                _log(f"{n} {kind}: {res}")
                shutil.rmtree(index)
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
    else:
        _table(results)


def _table(r: dict) -> None:
    if "ingest" in r:
        i = r["ingest"]
        print(f"ingest: {i['passages']} passages in {i['full_s']}s = {i['passages_per_s']} "
              f"passages/s; re-ingest after changing 1 of 10 documents: {i['reingest_one_of_ten_s']}s "
              f"({i['reembedded']} re-embedded) = {i['reingest_ratio']} x a full rebuild; "
              f"index {i['index_bytes'] / 1e6:.1f} MB")
    print(f"{'passages':>12} {'embed p50':>10} {'bm25 p50/p95':>14} {'dense p50/p95':>14} "
          f"{'hybrid p50/p95':>15} {'whole hybrid p50':>17} {'size MB':>8}")
    for key, s in r["search"].items():
        print(f"{key:>12} {s['query_embedding_ms']['p50']:>10} "
              f"{s['bm25']['p50_ms']:>6}/{s['bm25']['p95_ms']:<7} "
              f"{s['dense']['p50_ms']:>6}/{s['dense']['p95_ms']:<7} "
              f"{s['hybrid']['p50_ms']:>6}/{s['hybrid']['p95_ms']:<8} "
              f"{s['hybrid_with_embedding']['p50_ms']:>17} {s['index_bytes'] / 1e6:>8.1f}")


def _machine() -> str:
    import os
    import platform
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
