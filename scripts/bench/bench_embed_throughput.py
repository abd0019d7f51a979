#!/usr/bin/env python3
"""Passages/s of ingest's embedding step, before and after (issue 19, item 4).

    python scripts/bench/bench_embed_throughput.py --index /tmp/idx-lawqa \
        --embedder /tmp/e5-small-st [-n 256] [--batch-size 32]

Takes `n` passages of an index (a seeded random sample, their search text as ingest
embeds it) and embeds them the way ingest did before (chunks of 4 x batch in document
order, float32) and the ways it can now (the whole run sorted longest first; bfloat16
autocast on a CPU with AMX). Prints passages/s of each and the worst cosine between
the float32 and bfloat16 vectors.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingest import store  # noqa: E402
from ingest.embedder import Embedder  # noqa: E402


def run(model: Embedder, texts: list[str], batch: int, sort: bool) -> tuple[float, np.ndarray]:
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i])) if sort else list(
        range(len(texts)))
    out = np.zeros((len(texts), model.dimension), dtype=np.float32)
    step = batch * 4
    t0 = time.perf_counter()
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        out[chunk] = model.embed_passages([texts[i] for i in chunk])
    return len(texts) / (time.perf_counter() - t0), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--embedder", required=True)
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    passages = store.load_index(args.index).passages
    sample = sorted(random.Random(0).sample(range(len(passages)), min(args.n, len(passages))))
    texts = [passages[i].search_text() for i in sample]
    fp32 = Embedder(args.embedder, batch_size=args.batch_size, dtype="float32")
    fp32.embed_passages(texts[:4])                       # warm-up
    before, v32 = run(fp32, texts, args.batch_size, sort=False)
    sorted32, _ = run(fp32, texts, args.batch_size, sort=True)
    print(f"{len(texts)} passages, mean {sum(map(len, texts)) / len(texts):.0f} chars")
    print(f"before  (document order, float32):     {before:6.1f} passages/s")
    print(f"sorted  (longest first, float32):      {sorted32:6.1f} passages/s")
    bf16 = Embedder(args.embedder, batch_size=args.batch_size, dtype="auto")
    if bf16.dtype == "bfloat16":
        bf16.embed_passages(texts[:4])
        after, v16 = run(bf16, texts, args.batch_size, sort=True)
        cos = float((v32 * v16).sum(axis=1).min())
        print(f"after   (longest first, bfloat16 AMX): {after:6.1f} passages/s "
              f"({after / before:.1f}x; worst cosine to float32 {cos:.5f})")
    else:
        print("no AMX-bf16 on this CPU: ingest embeds in float32 (sorted)")


if __name__ == "__main__":
    main()
