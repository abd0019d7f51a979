#!/usr/bin/env python3
"""Article-boundary precision and recall of the splitter against gold boundaries.

    python scripts/bench/split_quality.py [--corpus corpus/public] [--json] [-v]

corpus/public/boundaries.jsonl lists, per document, every article whose heading starts
in the file, in order ({"file", "layout", "articles": ["第9条", ..., "附則"]}). The
splitter's articles (第N条, 第N条のM, 附則第N条, 附則; parts of one split article count
once) are aligned with the gold list in order; a predicted article is right when the
alignment pairs it with the same gold label. Reported per layout and overall.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ingest.inspect import article_sequence  # noqa: E402
from ingest.loaders import load_document  # noqa: E402
from ingest.splitter import analyse_document  # noqa: E402


def predicted_articles(path: Path, source: str) -> list[str]:
    return article_sequence(analyse_document(load_document(path), source).passages)


def score(gold: list[str], pred: list[str]) -> tuple[int, int, int]:
    sm = difflib.SequenceMatcher(a=gold, b=pred, autojunk=False)
    matched = sum(b.size for b in sm.get_matching_blocks())
    return matched, len(pred), len(gold)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(REPO / "corpus/public"),
                    help="directory holding boundaries.jsonl and the documents")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="list each document's missed and extra articles")
    args = ap.parse_args(argv)
    corpus = Path(args.corpus)
    rows = [json.loads(line) for line in (corpus / "boundaries.jsonl").read_text(
        encoding="utf-8").splitlines() if line.strip()]
    per_layout: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    details = []
    for row in rows:
        pred = predicted_articles(corpus / row["file"], row["file"])
        m, p, g = score(row["articles"], pred)
        for key in (row.get("layout", "other"), "all"):
            acc = per_layout[key]
            acc[0] += m
            acc[1] += p
            acc[2] += g
            acc[3] += 1
        if m < max(p, g):
            sm = difflib.SequenceMatcher(a=row["articles"], b=pred, autojunk=False)
            missed, extra = [], []
            for op, a0, a1, b0, b1 in sm.get_opcodes():
                if op != "equal":
                    missed += row["articles"][a0:a1]
                    extra += pred[b0:b1]
            details.append({"file": row["file"], "missed": missed, "extra": extra})
    table = {k: {"documents": v[3], "gold": v[2], "predicted": v[1],
                 "precision": round(v[0] / v[1], 4) if v[1] else 0.0,
                 "recall": round(v[0] / v[2], 4) if v[2] else 0.0}
             for k, v in sorted(per_layout.items(), key=lambda kv: (kv[0] == "all", kv[0]))}
    if args.json:
        print(json.dumps({"layouts": table, "errors": details}, ensure_ascii=False, indent=1))
        return 0
    print(f"{'layout':34} {'docs':>4} {'gold':>5} {'pred':>5} {'precision':>9} {'recall':>7}")
    for k, v in table.items():
        print(f"{k:34} {v['documents']:>4} {v['gold']:>5} {v['predicted']:>5} "
              f"{v['precision']:>9.3f} {v['recall']:>7.3f}")
    if args.verbose:
        for d in details:
            print(f"{d['file']}: missed {d['missed']} extra {d['extra']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
