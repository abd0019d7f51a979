#!/usr/bin/env python3
"""Cold-start wall time of the CLI: every run is a new process, as when a person types it.

    # an index first (multilingual-e5-small: make it with ../shared/tools/make-e5-small)
    python -m rag ingest corpus/ --index /tmp/idx-client --embedder /tmp/e5-small-st
    python scripts/bench/bench_cold_start.py --index /tmp/idx-client              # local only
    python scripts/bench/bench_cold_start.py --index /tmp/idx-client --server http://127.0.0.1:8000
    python scripts/bench/bench_cold_start.py --index /tmp/idx-client --stand-in   # see below

Measures `rag --help`, `rag search` (questions embedded in numpy, rag/retrieval/query_encoder.py),
`rag search` with RAG_QUERY_ENCODER=sentence-transformers (the path every search took
before: torch, transformers, sentence-transformers, scikit-learn), and with a server
`rag search --server URL` and `rag ask --server URL --json`. `--stand-in` serves
/api/search from this process (tests/http_servers.py's implementation of
docs/serve-api.md over a real Retriever on the index) to measure the client's side when no
`rag serve` runs; `rag ask` is then not measured.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
QUESTION = "半年で15単位しか取れませんでした。除籍されますか？"


def timed(cmd: list[str], env: dict, runs: int) -> dict:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "runs": runs}


@contextlib.contextmanager
def stand_in(index: str):
    from types import SimpleNamespace

    from http_servers import contract_server
    from rag.retrieval.retriever import Retriever

    retriever = Retriever(index)
    retriever.warm("hybrid")
    with contract_server(SimpleNamespace(retriever=retriever)) as (url, _):
        yield url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--server", help="a running `rag serve`")
    ap.add_argument("--stand-in", action="store_true",
                    help="serve /api/search from this process (no rag serve needed)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAG_SERVER", None)
    env.pop("RAG_QUERY_ENCODER", None)
    rag = [sys.executable, "-m", "rag"]
    rows = {
        "rag --help": timed([*rag, "--help"], env, args.runs),
        "rag search (numpy question encoder)": timed(
            [*rag, "search", QUESTION, "--index", args.index], env, args.runs),
        "rag search (sentence-transformers, as before)": timed(
            [*rag, "search", QUESTION, "--index", args.index],
            {**env, "RAG_QUERY_ENCODER": "sentence-transformers"}, args.runs),
    }
    with (stand_in(args.index) if args.stand_in else contextlib.nullcontext(args.server)) as url:
        if url:
            label = "stand-in server" if args.stand_in else "rag serve"
            rows[f"rag search --server ({label})"] = timed(
                [*rag, "search", QUESTION, "--server", url], env, args.runs)
            if not args.stand_in:
                rows["rag ask --server --json (rag serve)"] = timed(
                    [*rag, "ask", QUESTION, "--server", url, "--json"], env, args.runs)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    print("| command | median wall s | min s |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| `{name}` | {r['median_s']:.2f} | {r['min_s']:.2f} |")


if __name__ == "__main__":
    main()
