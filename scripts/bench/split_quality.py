#!/usr/bin/env python3
"""Article-boundary precision and recall of the splitter against gold boundaries.

    python scripts/bench/split_quality.py [--corpus corpus/public] [--json] [-v]
    python scripts/bench/split_quality.py --laws corpus/laws [-v]
    python scripts/bench/split_quality.py --japan-law DIR/data/markdown [--sample 50]

corpus/public/boundaries.jsonl lists, per document, every article whose heading starts
in the file, in order ({"file", "layout", "articles": ["第9条", ..., "附則"]}). The
splitter's articles (第N条, 第N条のM, 附則第N条, 附則; parts of one split article count
once) are aligned with the gold list in order; a predicted article is right when the
alignment pairs it with the same gold label. Reported per layout and overall.

With --laws, law texts made from e-Gov XML (scripts/corpus/laws_from_xml.py) are scored
against the XML's own articles: the share of gold (scope, label) pairs split right and
the labels split more than once in a scope. With --japan-law, a sample of japan-law
Markdown laws is converted (scripts/corpus/laws_from_japan_law.py) and scored on labels
alone (the Markdown drops 附則 headings, so scopes are unknown).
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


# --------------------------------------------------------------------------- laws

def law_articles(path: Path, source: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The (scope, label) of each article split from a law text, in order (parts of a
    long one once), and the splitter's warnings."""
    analysis = analyse_document(load_document(path), source)
    out: list[tuple[str, str]] = []
    for p in analysis.passages:
        if not p.article:
            continue
        key = (p.scope, p.article)
        if out and out[-1] == key and p.paragraph and not p.paragraph.startswith("第1項"):
            continue
        out.append(key)
    return out, analysis.warnings


def law_score(gold: list[tuple[str | None, str]], pred: list[tuple[str, str]]) -> dict:
    """Labels right: gold articles the alignment pairs with the same (scope, label);
    a gold scope of None (japan-law, which drops 附則 headings) compares the label
    alone, without its 附則. Collisions: (scope, label) split more than once."""
    if gold and gold[0][0] is None:
        g = [lab for _, lab in gold]
        p = [lab[2:] if lab.startswith("附則") else lab for _, lab in pred]
    else:
        g, p = [tuple(x) for x in gold], pred
    sm = difflib.SequenceMatcher(a=g, b=p, autojunk=False)
    right = sum(b.size for b in sm.get_matching_blocks())
    seen: dict = {}
    for key in pred:
        seen[key] = seen.get(key, 0) + 1
    errors = [(op, g[a0:a1][:6], p[b0:b1][:6]) for op, a0, a1, b0, b1 in sm.get_opcodes()
              if op != "equal"]
    return {"gold": len(g), "predicted": len(p), "right": right,
            "accuracy": right / len(g) if g else 1.0,
            "collisions": sum(n - 1 for n in seen.values() if n > 1), "errors": errors}


def law_gold(path: Path) -> list[tuple[str | None, str]]:
    return [(g["scope"], g["label"]) for g in map(json.loads, path.read_text(
        encoding="utf-8").splitlines()) if g]


def laws_main(args) -> int:
    """--laws DIR: every <name>.txt with a <name>.gold.jsonl; --japan-law DIR: a sample of
    japan-law Markdown laws (converted on the fly, nothing written)."""
    rows = []
    if args.laws:
        for gold_path in sorted(Path(args.laws).glob("*.gold.jsonl")):
            text = gold_path.with_name(gold_path.name.replace(".gold.jsonl", ".txt"))
            pred, warnings = law_articles(text, text.name)
            rows.append((text.name, law_score(law_gold(gold_path), pred), warnings))
    if args.japan_law:
        import random
        import tempfile
        from scripts.corpus.laws_from_japan_law import convert_markdown
        files = sorted(Path(args.japan_law).rglob("*.md"))
        random.Random(args.seed).shuffle(files)
        with tempfile.TemporaryDirectory() as tmp:
            for md in files[:args.sample]:
                text, gold, _ = convert_markdown(md.read_text(encoding="utf-8"))
                if not gold:
                    continue
                path = Path(tmp) / "law.txt"
                path.write_text(text, encoding="utf-8")
                pred, warnings = law_articles(path, md.name)
                rows.append((f"japan-law/{md.parent.name}/{md.name}",
                             law_score([(None, g) for g in gold], pred), warnings))
    total = {k: sum(r[1][k] for r in rows) for k in ("gold", "predicted", "right", "collisions")}
    total["accuracy"] = total["right"] / total["gold"] if total["gold"] else 1.0
    if args.json:
        print(json.dumps({"laws": [{"file": n, **{k: v for k, v in s.items() if k != "errors"},
                                    "warnings": w} for n, s, w in rows], "all": total},
                         ensure_ascii=False, indent=1))
        return 0
    print(f"{'law':48} {'gold':>5} {'pred':>5} {'right':>5} {'accuracy':>8} {'collide':>7}")
    for name, s, w in rows + [("all", total, [])]:
        print(f"{name[:48]:48} {s['gold']:>5} {s['predicted']:>5} {s['right']:>5} "
              f"{s['accuracy']:>8.4f} {s['collisions']:>7}")
        if args.verbose and s.get("errors"):
            for e in s["errors"][:8]:
                print(f"    {e}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(REPO / "corpus/public"),
                    help="directory holding boundaries.jsonl and the documents")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="list each document's missed and extra articles")
    ap.add_argument("--laws", help="score law texts against their XML gold: a directory "
                    "of <name>.txt and <name>.gold.jsonl (corpus/laws)")
    ap.add_argument("--japan-law", help="score a sample of DaisukeHori/japan-law Markdown "
                    "laws under this directory (e.g. a checkout's data/markdown)")
    ap.add_argument("--sample", type=int, default=50, help="japan-law laws to sample")
    ap.add_argument("--seed", type=int, default=19)
    args = ap.parse_args(argv)
    if args.laws or args.japan_law:
        return laws_main(args)
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
