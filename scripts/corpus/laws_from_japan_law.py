#!/usr/bin/env python3
"""DaisukeHori/japan-law Markdown (CC0) -> plain law text and its article gold.

    python scripts/corpus/laws_from_japan_law.py LAW.md [...] --out corpus/laws

japan-law writes each article as an anchor and a bold title, then the text, one
sentence group a line, without captions, 項 numbers, 号 numbers or 附則 headings:

    <a id="第十条"></a>
    **第十条**
    <a id="第七条"></a>
    **第七条**に規定する原因が消滅したときは、…

Its anchors are not exact gold: a line of text that begins with a cross-reference gets
an anchor and bold too (「**第七条**に規定する…」, a spurious anchor), a branch of a
branch is anchored by its parent (「<a id="第四条の二">…**第四条の二**の二」), and the
headings of 附則 are dropped, so each amending law's 第一条 follows the last article
with nothing between. The gold written here keeps an anchor only when its bold title is
alone on its line (with any 「の二」 after the bold joined to the label) and opens a block
(a blank line, or a heading, before its anchor): a bold title alone on a line inside a
block is a table cell (a 読替え table's 「第百二十九条の四」, a 両罰規定 table's
「第五十五条」 beside 「二億円以下の罰金刑」), not an article. The text keeps the bold
titles as plain lines (「第十条」) and the spurious ones as the text they are. A deleted
range is bold on its first article only (「**第五十五条**から第六十三条まで」 then 「削除」):
its gold label is the range, as in the XML gold (第55条から第63条まで).
Labels are compared without 附則 or scope, since the file does not say where 附則 begin.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from scripts.corpus.laws_from_xml import label_of  # noqa: E402

_ANCHOR = re.compile(r"^<a id=\"[^\"]*\"></a>$")
_BOLD = re.compile(r"^\*\*(第[^*]+条[^*]*)\*\*(.*)$")
_BRANCH_REST = re.compile(r"^(?:の[〇一二三四五六七八九十百千]+)+$")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
# 「**第五十五条**から第六十三条まで」 then 「削除」: a deleted range, bold on its first article.
_ONE = r"第[〇一二三四五六七八九十百千]+条(?:の[〇一二三四五六七八九十百千]+)*"
_RANGE_REST = re.compile(rf"^(?:(?:の[〇一二三四五六七八九十百千]+)*(?:(?:、|及び){_ONE})+|"
                         rf"(?:の[〇一二三四五六七八九十百千]+)*から{_ONE}まで)$")


def convert_markdown(md: str) -> tuple[str, list[str], int]:
    """(plain text, gold labels in order, spurious anchors seen)."""
    out: list[str] = []
    gold: list[str] = []
    spurious = 0
    opens = True                    # the line read opens a block (after a blank or heading)
    raws = md.splitlines()
    for at, raw in enumerate(raws):
        line = raw.rstrip()
        if line == "---" and gold:
            break                                   # 「この法令を参照している法令」 follows
        if _ANCHOR.match(line):
            continue
        block_start, opens = opens, not line.strip() or line.startswith("#")
        line = _LINK.sub(r"\1", line)
        if line.startswith("# "):
            out.append(line[2:].strip())
            continue
        m = re.match(r"^\*（(.*)）\*$", line)
        if m:
            out.append(f"（{m.group(1)}）")
            continue
        m = _BOLD.match(line)
        if m:
            title, rest = m.group(1), m.group(2)
            after = next((r.strip() for r in raws[at + 1:] if r.strip()), "")
            if block_start and _RANGE_REST.match(rest.strip()) and after == "削除":
                gold.append(label_of(title + rest.strip()))
                out.append(title + rest)
            elif not rest.strip() or _BRANCH_REST.match(rest.strip()):
                title += rest.strip()
                if block_start:
                    gold.append(label_of(title))
                out.append(title)
            else:
                spurious += 1
                out.append(title + rest)
            continue
        if line.strip():
            out.append(line.replace("**", ""))
    return "\n".join(out) + "\n", gold, spurious


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("markdown", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "corpus/laws")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.markdown:
        text, gold, spurious = convert_markdown(path.read_text(encoding="utf-8"))
        name = text.splitlines()[0] + "_japan-law"
        (args.out / f"{name}.txt").write_text(text, encoding="utf-8")
        (args.out / f"{name}.gold.jsonl").write_text(
            "".join(json.dumps({"scope": None, "label": g}, ensure_ascii=False) + "\n"
                    for g in gold), encoding="utf-8")
        print(f"{path.name}: {name}.txt, {len(gold)} gold articles, {spurious} spurious anchors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
