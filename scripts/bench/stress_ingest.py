#!/usr/bin/env python3
"""Nothing lost under stress: readers during re-ingests, and ingests killed at random.

    python scripts/bench/stress_ingest.py --embedder /tmp/e5-small-st \
        [--readers 4 --reingests 20] [--kills 50] [--json]
    python scripts/bench/stress_ingest.py --tiny /tmp/tiny-st      # the tests' tiny model

Works on a copy of corpus/ in a temporary directory (loopback only, nothing else touched):
1. `--readers` processes load the index and search it (BM25 and dense) in a loop while
   the main process edits a regulation and re-ingests `--reingests` times: every failed
   load or search is counted.
2. `--kills` ingests, each after an edit, are killed with SIGKILL at a random moment;
   after each, the index must load and be either the previous generation or the new
   one; at the end, one ingest runs to completion and the half-written generations left
   over are counted (it must remove them all).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

READER = """
import json, sys
from pathlib import Path
from ingest import store
from rag.retrieval.retriever import Retriever
index, stop = Path(sys.argv[1]), Path(sys.argv[2])
r = Retriever(index, thesaurus=None)
r.warm("hybrid")                                      # the embedder, once
searches = errors = 0
first = None
while not stop.exists():
    try:
        r.index = store.load_index(index)             # the live generation, every time
        for query in ("除籍の要件", "休学できる期間"):
            for mode in ("bm25", "dense", "hybrid"):
                assert r.search(query, k=3, mode=mode)
                searches += 1
    except Exception as e:  # noqa: BLE001 - every failure counts
        errors += 1
        first = first or repr(e)[:300]
print(json.dumps({"searches": searches, "errors": errors, "first": first}))
"""

INGEST = """
import sys
from pathlib import Path
from ingest.pipeline import IngestSettings, ingest
ingest([Path(sys.argv[1])], Path(sys.argv[2]), IngestSettings(embedder=sys.argv[3]))
"""


def _edit(corpus: Path, n: int) -> None:
    """Change one article, back and forth, so that every ingest has work to do."""
    f = corpus / "学則.txt"
    old, new = ("（除籍）", "（除籍等）") if n % 2 == 0 else ("（除籍等）", "（除籍）")
    f.write_text(f.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")


def readers_during_reingests(work: Path, embedder: str, readers: int, reingests: int) -> dict:
    from ingest.pipeline import IngestSettings, ingest
    corpus, index, stop = work / "corpus", work / "idx-readers", work / "stop"
    ingest([corpus], index, IngestSettings(embedder=embedder))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", READER, str(index), str(stop)],
                              stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(readers)]
    time.sleep(10)                     # let every reader load its models first
    started = time.perf_counter()
    for n in range(reingests):
        _edit(corpus, n)
        ingest([corpus], index, IngestSettings(embedder=embedder))
    seconds = time.perf_counter() - started
    stop.touch()
    results = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    return {"readers": readers, "reingests": reingests, "seconds": round(seconds, 1),
            "searches": sum(r["searches"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "first_error": next((r["first"] for r in results if r["first"]), None)}


def killed_ingests(work: Path, embedder: str, kills: int, seed: int) -> dict:
    from ingest import store
    from ingest.pipeline import IngestSettings, ingest
    corpus, index = work / "corpus", work / "idx-kills"
    ingest([corpus], index, IngestSettings(embedder=embedder))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(seed)
    # How long a whole ingest takes, to pick kill moments within it.
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", INGEST, str(corpus), str(index), embedder],
                   check=True, env=env)
    full = time.perf_counter() - t0
    bad = killed = finished = 0
    for n in range(kills):
        before = store.current_generation(index)
        _edit(corpus, n)
        proc = subprocess.Popen([sys.executable, "-c", INGEST, str(corpus), str(index), embedder],
                                env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, full))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        else:
            finished += 1
        proc.wait()
        try:     # the previous generation, or the complete new one
            loaded = store.load_index(index).path
            bad += loaded != before and store.current_generation(index) != loaded
        except store.IndexStoreError:
            bad += 1
    partial_before = sum(e.name.endswith(".partial") for e in index.iterdir())
    ingest([corpus], index, IngestSettings(embedder=embedder))
    leftovers = sum(e.name.endswith(".partial") for e in index.iterdir())
    return {"ingests": kills, "killed": killed, "finished_before_the_kill": finished,
            "unloadable_after_a_kill": bad, "half_written_before_the_last_ingest": partial_before,
            "leftovers_after_the_last_ingest": leftovers,
            "generations_kept": sum(e.name.startswith("gen-") for e in index.iterdir())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--embedder", help="sentence-transformers model directory")
    src.add_argument("--tiny", type=Path, help="the tests' tiny random embedder (built if "
                     "absent): fast, and what is measured here does not depend on it")
    ap.add_argument("--readers", type=int, default=4, help="reader processes")
    ap.add_argument("--reingests", type=int, default=20, help="re-ingests while they read")
    ap.add_argument("--kills", type=int, default=50, help="ingests killed at random moments")
    ap.add_argument("--seed", type=int, default=0, help="kill moments")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    if args.tiny:
        sys.path.insert(0, str(REPO / "tests"))
        sys.path.insert(0, str(REPO / "scripts/bench"))
        from bench_generate import corpus_texts
        from tiny_models import build_tiny_sentence_transformer
        if not (args.tiny / "modules.json").exists():
            build_tiny_sentence_transformer(args.tiny, corpus_texts())
        args.embedder = str(args.tiny)
    work = Path(tempfile.mkdtemp(prefix="rag-stress-"))
    try:
        shutil.copytree(REPO / "corpus", work / "corpus",
                        ignore=shutil.ignore_patterns("public", "*.jsonl"))
        out = {"readers_during_reingests": readers_during_reingests(
                   work, args.embedder, args.readers, args.reingests),
               "killed_ingests": killed_ingests(work, args.embedder, args.kills, args.seed)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, ensure_ascii=False, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
