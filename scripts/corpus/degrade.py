#!/usr/bin/env python3
"""Make booklet-PDF-like copies of clean regulation texts, for the splitting benchmark.

    python scripts/corpus/degrade.py [--corpus corpus/public] [--out corpus/public/degraded]

Some public sources (例規集 pages) give clean text, one paragraph a line. What a
department actually holds is often the 学生便覧 PDF of the same rules, whose text
extracts differently. Each copy made here, deterministically:
  * flattens the lines of a "page" (about 700 characters) into one long line;
  * puts a running header (the booklet's name), a page counter (「- 7 -」 or 「7/96」)
    and a section mark (「Ⅳ3」) between pages, so a page break may cut a sentence;
  * writes article numbers with spaces (「第 3 条」) in every other document, and
    full-width digits in the rest.
The gold boundaries of a copy are its source's (boundaries.jsonl lists both).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = 700
_FULL = str.maketrans("0123456789", "０１２３４５６７８９")


def degrade(text: str, n: int, booklet: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    flat = " ".join(lines)
    if n % 2 == 0:
        flat = re.sub(r"第([0-9０-９]+)条", r"第 \1 条", flat)
    else:
        flat = re.sub(r"第([0-9]+)条", lambda m: "第" + m.group(1).translate(_FULL) + "条", flat)
    pages, page_no = [], 40 + 7 * n
    for start in range(0, len(flat), PAGE):
        body = flat[start:start + PAGE]
        counter = f"- {page_no} -" if n % 2 == 0 else f"{page_no}/196"
        pages.append(f"{booklet}\nⅣ{1 + n % 5}\n{body}\n{counter}")
        page_no += 1
    return "\n".join(pages) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(REPO / "corpus/public"),
                    help="the public set (boundaries.jsonl and docs/)")
    ap.add_argument("--out", default=None, help="where the copies go (default CORPUS/degraded)")
    args = ap.parse_args(argv)
    corpus = Path(args.corpus)
    out = Path(args.out) if args.out else corpus / "degraded"
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in (corpus / "boundaries.jsonl").read_text(
        encoding="utf-8").splitlines() if x.strip()]
    clean = [r for r in rows if r.get("layout") == "regulation database page"]
    for n, row in enumerate(clean):
        src = corpus / row["file"]
        dst = out / src.name
        dst.write_text(degrade(src.read_text(encoding="utf-8"), n, "令和6年度 学生便覧"),
                       encoding="utf-8")
        print(dst.relative_to(corpus))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
