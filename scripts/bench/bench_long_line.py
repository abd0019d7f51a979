#!/usr/bin/env python3
"""How reading a file that is one long line scales: load, layout and split time per size.

    python scripts/bench/bench_long_line.py [--sizes 0.25,0.5,1,2,4] [--kinds regulation,prose,flat]
        [--limit 120] [--json]

Some PDF extractions and web exports put a whole booklet on one line; the layout step
then breaks it where articles, 項 and 号 start. Each size is a .txt file written to a
temporary directory and read as `rag ingest` reads it (load_document, then
analyse_document without an embedder: passage sizes counted in characters), in a
subprocess of its own so that a size past --limit seconds is reported, not waited for.
Kinds: `regulation` (the sample 学則 with its newlines turned into spaces, repeated),
`prose` (the sample 学生生活ガイド likewise), `flat` (text with no structure and no
sentence end at all). Linear reading doubles the time with the size; quadratic
quadruples it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import sys, time
from pathlib import Path
from ingest.loaders import load_document
from ingest.splitter import analyse_document
t = time.perf_counter()
doc = load_document(Path(sys.argv[1]))
loaded = time.perf_counter()
analysis = analyse_document(doc, "long.txt", max_tokens=512)
done = time.perf_counter()
print(loaded - t, done - loaded, len(analysis.layout.lines), len(analysis.passages))
"""


def one_line(kind: str, size: int) -> str:
    """About `size` bytes of UTF-8 text of `kind`, without a newline."""
    if kind == "flat":
        unit = "学生は所定の手続を経て授業料を納付するものとし"
    else:
        name = "学則.txt" if kind == "regulation" else "学生生活ガイド.md"
        unit = (REPO / "corpus" / name).read_text(encoding="utf-8")
        unit = " ".join(ln.lstrip("#").strip() for ln in unit.split("\n") if ln.strip())
    per_char = len(unit.encode("utf-8")) / len(unit)
    chars = int(size / per_char)
    return (unit * (chars // len(unit) + 1))[:chars]


def measure(kind: str, mb: float, limit: float, work: Path) -> dict:
    path = work / f"{kind}-{mb}.txt"
    path.write_text(one_line(kind, int(mb * 1_000_000)), encoding="utf-8")
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "mb": mb, "seconds": None, "note": f"over {limit:.0f}s"}
    if proc.returncode:
        return {"kind": kind, "mb": mb, "seconds": None,
                "note": proc.stderr.strip().splitlines()[-1][:200]}
    load, split, lines, passages = proc.stdout.split()
    return {"kind": kind, "mb": mb, "load_s": round(float(load), 2),
            "split_s": round(float(split), 2), "seconds": round(float(load) + float(split), 2),
            "lines": int(lines), "passages": int(passages),
            "wall_s": round(time.perf_counter() - started, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="0.25,0.5,1,2,4", help="MB, comma-separated")
    ap.add_argument("--kinds", default="regulation,prose,flat")
    ap.add_argument("--limit", type=float, default=120.0, help="seconds per size")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rag-long-line-") as tmp:
        for kind in args.kinds.split(","):
            for mb in (float(x) for x in args.sizes.split(",")):
                row = measure(kind, mb, args.limit, Path(tmp))
                rows.append(row)
                if not args.json:
                    print(f"{kind:<11} {mb:>5} MB  " + (
                        f"{row['seconds']:>7.2f} s (load {row['load_s']}, layout+split "
                        f"{row['split_s']}; {row['lines']} lines, {row['passages']} passages)"
                        if row["seconds"] is not None else row["note"]), flush=True)
                if row["seconds"] is None:
                    break                      # larger sizes only take longer
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
