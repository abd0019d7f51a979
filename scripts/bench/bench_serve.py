#!/usr/bin/env python3
"""`rag serve` under concurrent clients (32 by default; `--clients 32 96` for both):
throughput with batching against one at a time (--batch-size 1), latency to the first
token and to the end (p50/p95), requests that ran past the time limit (--timeout), and
the server's own overhead per request, outside retrieval, prompt building, queueing and
generation (wall time seen by the client minus the times the server reports).

    python scripts/bench/bench_serve.py --json                       # tiny models, built
    python scripts/bench/bench_serve.py --model M --index DIR --clients 32 --questions 4
    # before/after: a checkout of the earlier code, its batched server run in turn
    git archive main | tar -x -C /tmp/base
    python scripts/bench/bench_serve.py --clients 32 96 --baseline /tmp/base --json

Each configuration runs a real `rag serve` in a process of its own on a free loopback
port; every client streams its answers (SSE) so the first token is seen when it comes.
Overhead alone is also measured with one client asking one question at a time
(--batch-wait-ms 0), where nothing queues.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

QUESTIONS = ["半年で15単位しか取れませんでした。除籍されますか？", "休学できるのは何年までですか",
             "授業料はいつまでに納めますか", "再入学の手続を教えてください",
             "卒業に必要な単位数は？", "追試験を受けるには", "留学した単位は認められますか",
             "学費を免除してもらえますか"]


def tiny_setup(work: Path) -> tuple[Path, Path]:
    """A tiny GPT-NeoX and an index of corpus/ with a tiny embedder (as the tests build)."""
    from conftest import CORPUS, corpus_texts
    from tiny_models import build_tiny_gpt_neox, build_tiny_sentence_transformer

    from ingest.pipeline import IngestSettings, ingest

    texts = corpus_texts()
    model = build_tiny_gpt_neox(work / "neox", texts)
    embedder = build_tiny_sentence_transformer(work / "st", texts,
                                               prompts={"query": "query: ",
                                                        "document": "passage: "})
    ingest([CORPUS], work / "index", IngestSettings(embedder=str(embedder)))
    return model, work / "index"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, model: Path, index: Path, batch_size: int, wait_ms: float, work: Path,
                 tree: Path = REPO):
    """`rag serve` of the code in `tree` (this checkout, or --baseline's)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads),
           "HF_HUB_OFFLINE": "1", "RAG_CONFIG": str(work / "empty.toml")}
    (work / "empty.toml").write_text("", "utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag", "serve", "--model", str(model), "--index", str(index),
         "--port", str(port), "--max-new-tokens", str(args.max_new_tokens),
         "--batch-size", str(batch_size), "--batch-wait-ms", str(wait_ms),
         "--queue-size", "256", "--rate-per-minute", "0", "--log-level", "warning",
         "--timeout", str(args.timeout), "--feedback-db", str(work / "feedback.sqlite3")],
        env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    until = time.monotonic() + 300
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise SystemExit(f"rag serve exited: {proc.stderr.read()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("rag serve did not get ready")


def ask(port: int, question: str, max_new_tokens: int) -> dict:
    """One streamed question: client-side times and the server's own timings."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/api/ask", json.dumps({"question": question, "stream": True,
                                                 "max_new_tokens": max_new_tokens}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        return {"error": response.status, "timeout": response.status == 504}
    # Read raw chunks (the client shares the CPU with the server: parse only the end).
    first, seen = None, b""
    while chunk := response.read1(65536):
        if first is None and b"event: token" in chunk:
            first = time.perf_counter()
        seen += chunk
        if b"event: done" in seen[-70000:] and seen.endswith(b"\n\n"):
            break
        if b"event: error" in chunk:
            break
    end = time.perf_counter()
    conn.close()
    if b"event: done" not in seen:
        tail = seen[-300:].decode(errors="replace")
        return {"error": tail, "timeout": "time limit" in tail}
    done = json.loads(seen[seen.rindex(b"event: done"):].split(b"data: ", 1)[1])
    t = done["timings"]
    inside = (t.get("retrieval_wait_ms", 0) + t.get("retrieval_ms", 0) + t.get("prompt_ms", 0)
              + t.get("queue_ms", 0) + t.get("generation_ms", 0) + t.get("checks_ms", 0))
    return {"first_ms": ((first or end) - started) * 1000, "end_ms": (end - started) * 1000,
            "overhead_ms": (end - started) * 1000 - inside, "queue_ms": t.get("queue_ms", 0),
            "retrieval_wait_ms": t.get("retrieval_wait_ms", 0),
            "retrieval_ms": t.get("retrieval_ms", 0), "tokens": t.get("generated_tokens", 0)}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def load(port: int, clients: int, per_client: int, max_new_tokens: int) -> dict:
    def client(n: int) -> list[dict]:
        return [ask(port, QUESTIONS[(n + i) % len(QUESTIONS)], max_new_tokens)
                for i in range(per_client)]

    ask(port, QUESTIONS[0], max_new_tokens)                         # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    ok = [r for r in results if "error" not in r]
    return {"requests": len(results), "errors": len(results) - len(ok),
            "timeouts": sum(bool(r.get("timeout")) for r in results),
            "wall_s": round(wall, 2), "requests_per_s": round(len(ok) / wall, 2),
            "tokens_per_s": round(sum(r["tokens"] for r in ok) / wall, 1),
            "first_token_ms_p50": pct([r["first_ms"] for r in ok], 0.5),
            "first_token_ms_p95": pct([r["first_ms"] for r in ok], 0.95),
            "end_ms_p50": pct([r["end_ms"] for r in ok], 0.5),
            "end_ms_p95": pct([r["end_ms"] for r in ok], 0.95),
            "queue_ms_p50": pct([r["queue_ms"] for r in ok], 0.5),
            "retrieval_wait_ms_p50": pct([r["retrieval_wait_ms"] for r in ok], 0.5),
            "overhead_ms_p50": pct([r["overhead_ms"] for r in ok], 0.5),
            "overhead_ms_p95": pct([r["overhead_ms"] for r in ok], 0.95)}


def sequential(port: int, n: int, max_new_tokens: int) -> dict:
    ask(port, QUESTIONS[0], max_new_tokens)
    results = [ask(port, QUESTIONS[i % len(QUESTIONS)], max_new_tokens) for i in range(n)]
    return {"requests": n, "overhead_ms_p50": pct([r["overhead_ms"] for r in results], 0.5),
            "overhead_ms_p95": pct([r["overhead_ms"] for r in results], 0.95),
            "retrieval_ms_p50": pct([r["retrieval_ms"] for r in results], 0.5),
            "end_ms_p50": pct([r["end_ms"] for r in results], 0.5)}


def engine_only(model: Path, index: Path, batch_size: int, max_new_tokens: int,
                threads: int) -> dict:
    """The generator alone, in this process: `stream_batch` of `batch_size` answer
    prompts at once against the same prompts one at a time (what batching can give
    before HTTP, retrieval and the event loop take their share of the CPU)."""
    import torch

    from rag.answer import Answerer
    from rag.generation.hf import TransformersGenerator
    from rag.generation.base import GenerationOptions
    from rag.retrieval.retriever import Retriever

    torch.set_num_threads(threads)
    generator = TransformersGenerator(str(model))
    answerer = Answerer(generator, Retriever(index), options=GenerationOptions(max_new_tokens))
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(batch_size)]
    prompts = [answerer.prepare(q).prompt for q in questions]
    options = GenerationOptions(max_new_tokens)
    generator.stream_batch(prompts, options)      # warm-up: the first batch allocates
    started = time.perf_counter()
    batched = generator.stream_batch(prompts, options)
    batch_s = time.perf_counter() - started
    started = time.perf_counter()
    single = [generator.stream_batch([p], options)[0] for p in prompts]
    single_s = time.perf_counter() - started
    assert [g.text for g in batched] == [g.text for g in single]
    return {"prompts": batch_size, "prompt_tokens_mean": round(sum(
                generator.count_tokens(p) for p in prompts) / len(prompts)),
            "tokens": sum(g.new_tokens for g in batched),
            "batched_s": round(batch_s, 2), "one_at_a_time_s": round(single_s, 2),
            "speedup": round(single_s / batch_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="generator (default: a tiny GPT-NeoX built here)")
    ap.add_argument("--index", help="index (default: corpus/ with a tiny embedder)")
    ap.add_argument("--clients", type=int, nargs="+", default=[32])
    ap.add_argument("--questions", type=int, default=4, help="per client")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16, help="the batched configuration")
    ap.add_argument("--batch-wait-ms", type=float, default=20)
    ap.add_argument("--timeout", type=float, default=120, help="the server's time limit (s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each configuration")
    ap.add_argument("--baseline", type=Path,
                    help="a checkout of earlier code: its batched server runs in turn with "
                         "this one's (before/after on the same machine)")
    ap.add_argument("--no-one-at-a-time", action="store_true",
                    help="skip the --batch-size 1 runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    configs = [] if args.no_one_at_a_time else [("one_at_a_time", 1, 0.0, REPO)]
    if args.baseline:
        configs.append(("baseline_batched", args.batch_size, args.batch_wait_ms,
                        args.baseline.resolve()))
    configs.append(("batched", args.batch_size, args.batch_wait_ms, REPO))
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        if args.model and args.index:
            model, index = Path(args.model), Path(args.index)
        else:
            model, index = tiny_setup(work)
        out = {"clients": args.clients, "questions_per_client": args.questions,
               "max_new_tokens": args.max_new_tokens, "threads": args.threads,
               "timeout_s": args.timeout,
               "engine_only": engine_only(model, index, args.batch_size, args.max_new_tokens,
                                          args.threads)}
        runs: dict[tuple, list[dict]] = {}
        for _ in range(args.repeat):          # alternated: the machine's load drifts
            for clients in args.clients:
                for name, size, wait, tree in configs:
                    proc, port = start_server(args, model, index, size, wait, work, tree)
                    try:
                        runs.setdefault((clients, name), []).append(
                            {"batch_size": size, "batch_wait_ms": wait,
                             **load(port, clients, args.questions, args.max_new_tokens)})
                        if name == "one_at_a_time" and "single_client" not in out:
                            out["single_client"] = sequential(port, 40, args.max_new_tokens)
                    finally:
                        proc.terminate()
                        proc.wait(10)
        by_clients: dict[int, dict] = {}
        for (clients, name), results in runs.items():     # the run of median throughput
            median = sorted(results, key=lambda r: r["requests_per_s"])[len(results) // 2]
            median["requests_per_s_all"] = [r["requests_per_s"] for r in results]
            by_clients.setdefault(clients, {})[name] = median
        for clients, named in by_clients.items():
            if "one_at_a_time" in named:
                named["speedup"] = round(named["batched"]["requests_per_s"]
                                         / named["one_at_a_time"]["requests_per_s"], 2)
            if "baseline_batched" in named:
                named["speedup_over_baseline"] = round(
                    named["batched"]["requests_per_s"]
                    / named["baseline_batched"]["requests_per_s"], 2)
        out["runs"] = {str(c): named for c, named in by_clients.items()}
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return
    for clients, named in out["runs"].items():
        print(f"{clients} clients:")
        for name, _, _, _ in configs:
            r = named[name]
            print(f"  {name:16s} batch {r['batch_size']:2d}: {r['requests_per_s']:6.2f} req/s "
                  f"{r['requests_per_s_all']}, {r['tokens_per_s']:7.1f} tok/s, first token "
                  f"p50/p95 {r['first_token_ms_p50']}/{r['first_token_ms_p95']} ms, end "
                  f"p50/p95 {r['end_ms_p50']}/{r['end_ms_p95']} ms, overhead p50 "
                  f"{r['overhead_ms_p50']} ms, errors {r['errors']} (timeouts {r['timeouts']})")
        for key in ("speedup", "speedup_over_baseline"):
            if key in named:
                print(f"  {key}: {named[key]}x")
    if "single_client" in out:
        s = out["single_client"]
        print(f"single client: overhead p50 {s['overhead_ms_p50']} ms, "
              f"p95 {s['overhead_ms_p95']} ms")
    print(f"the generator alone: {out['engine_only']['speedup']}x")


if __name__ == "__main__":
    main()
