#!/usr/bin/env python3
"""e-Gov law XML -> the law as e-Gov displays it (plain text) and the splitter gold.

    python scripts/corpus/laws_from_xml.py LAW.xml [LAW.xml ...] --out corpus/laws

For each XML file (法令標準XMLスキーマ: LawBody/MainProvision/Chapter/Section/Article/
ArticleCaption/ArticleTitle/Paragraph/Item/Subitem1…, SupplProvision with AmendLawNum,
AppdxTable) it writes

- `<name>.txt`: the text laid out as e-Gov's viewer shows it — the title and law number,
  the 目次, 「第一章　総則」, the caption line 「（目的等）」, 「第一条　本文」, 項 as
  「２　…」, 号 as 「一　…」, イロハ, 附則 headings 「附　則　（平成一一年一二月八日法律第一五一号）　抄」,
  tables one row a line, 別表 with their 「（第二条関係）」;
- `<name>.gold.jsonl`: one object per article in document order — `scope` ("" for the
  main provisions, "附則" for an unnamed first 附則, "附則(<AmendLawNum>)" for an
  amending law's, "附則[n]" for a later unnamed one), `label` (第74条の2の2, 附則第1条,
  第136条及び第137条, 附則 for a 附則 without articles, 別表第1), `caption`, `heading`
  (章/節 path) and `start` (the first characters of its text).

The gold comes from the XML's own structure (Article Num/ArticleTitle), never from the
splitter: it is what `tests/test_law_gold.py` and `scripts/bench/split_quality.py
--laws` score the splitter against.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ingest.japanese import article_label, parse_number  # noqa: E402

_SENTENCE_PARENTS = {"ParagraphSentence", "ItemSentence"} | {
    f"Subitem{i}Sentence" for i in range(1, 11)}
_ITEMS = ["Item"] + [f"Subitem{i}" for i in range(1, 11)]
_LEVELS = [("Part", "PartTitle"), ("Chapter", "ChapterTitle"), ("Section", "SectionTitle"),
           ("Subsection", "SubsectionTitle"), ("Division", "DivisionTitle")]


def text_of(el: ET.Element | None) -> str:
    """The visible text of an element: Ruby keeps its base text, Rt is dropped."""
    if el is None:
        return ""
    out = [el.text or ""]
    for child in el:
        if child.tag != "Rt":
            out.append(text_of(child))
        out.append(child.tail or "")
    return "".join(out).strip()


def sentences(el: ET.Element) -> str:
    """A ParagraphSentence/ItemSentence: sentences run on; columns are set apart by a
    full-width space (「一　法令　法律…をいう。」)."""
    columns = el.findall("Column")
    if columns:
        return "　".join(sentences(c) for c in columns)
    return "".join(text_of(s) for s in el.findall("Sentence")) or text_of(el)


def nfkc(s: str) -> str:
    return unicodedata.normalize("NFKC", s)


def label_of(title: str) -> str:
    """第七十四条の二の二 -> 第74条の2の2; 第百三十六条及び第百三十七条 -> 第136条及び第137条."""
    def one(m: re.Match) -> str:
        numbers = [parse_number(n) for n in re.findall(r"[0-9]+|[〇一二三四五六七八九十百千]+",
                                                       m.group())]
        return article_label(*numbers)
    return re.sub(r"第[〇一二三四五六七八九十百千0-9]+条(?:の[〇一二三四五六七八九十百千0-9]+)*",
                  one, re.sub(r"\s+", "", nfkc(title)))


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.gold: list[dict] = []
        self.levels: dict[str, str] = {}
        self.scope = ""
        self.in_suppl = False

    # ------------------------------------------------------------------ structure
    def law(self, root: ET.Element) -> None:
        body = root.find("LawBody")
        self.lines.append(text_of(body.find("LawTitle")))
        self.lines.append(f"（{text_of(root.find('LawNum'))}）")
        for child in body:
            tag = child.tag
            if tag == "TOC":
                self.toc(child)
            elif tag in ("EnactStatement", "Preamble"):
                self.block(child)
            elif tag == "MainProvision":
                self.container(child)
            elif tag == "SupplProvision":
                self.suppl(child, body)
            elif tag.startswith("Appdx"):
                self.appendix(child)

    def toc(self, el: ET.Element) -> None:
        self.lines.append(text_of(el.find("TOCLabel")) or "目次")
        for item in el.iter():
            if item.tag.startswith("TOC") and item.tag not in ("TOC", "TOCLabel"):
                title = next((text_of(c) for c in item if c.tag.endswith("Title")
                              or c.tag == "SupplProvisionLabel"), "")
                rng = text_of(item.find("ArticleRange"))
                if title:
                    self.lines.append("　" + title + rng)

    def container(self, el: ET.Element, depth: int = 0) -> None:
        for child in el:
            level = next((i for i, (t, _) in enumerate(_LEVELS) if t == child.tag), None)
            if level is not None:
                title = text_of(child.find(_LEVELS[level][1]))
                for lower, _ in _LEVELS[level:]:
                    self.levels.pop(lower, None)
                self.levels[child.tag] = title
                self.lines.append("　" * (level + 1) + title)
                self.container(child, depth + 1)
                self.levels.pop(child.tag, None)
            elif child.tag == "Article":
                self.article(child)
            elif child.tag == "Paragraph":
                self.paragraph(child, first_line=None)
            elif child.tag.startswith("SupplProvisionAppdx") or child.tag.startswith("Appdx"):
                self.appendix(child)

    def suppl(self, el: ET.Element, body: ET.Element) -> None:
        n = sum(1 for s in body.findall("SupplProvision")
                if list(body).index(s) <= list(body).index(el))
        amend = el.get("AmendLawNum")
        label = text_of(el.find("SupplProvisionLabel")) or "附則"
        head = label + (f"　（{amend}）" if amend else "") + ("　抄" if el.get("Extract") == "true"
                                                              else "")
        self.lines.append("　　　" + head)
        name = re.sub(r"\s+", "", nfkc(amend or ""))
        self.scope = (f"附則({name})" if amend
                      else "附則" if n == 1 else f"附則[{n}]")
        self.in_suppl, self.levels = True, {}
        if el.find("Article") is None:
            first = next((c for c in el if c.tag == "Paragraph"), None)
            self.gold.append({"scope": self.scope, "label": "附則", "caption": "",
                              "heading": "", "start": self._start(first)})
        self.container(el)

    def article(self, el: ET.Element) -> None:
        caption = text_of(el.find("ArticleCaption"))
        title = text_of(el.find("ArticleTitle"))
        if caption:
            self.lines.append(caption)
        paragraphs = el.findall("Paragraph")
        label = ("附則" if self.in_suppl else "") + label_of(title)
        self.gold.append({"scope": self.scope, "label": label,
                          "caption": caption.strip("（）()"),
                          "heading": " > ".join(v for v in self.levels.values() if v),
                          "start": self._start(paragraphs[0] if paragraphs else None)})
        for i, p in enumerate(paragraphs):
            self.paragraph(p, first_line=title if i == 0 else None)
        if not paragraphs:
            self.lines.append(title)

    def paragraph(self, el: ET.Element, first_line: str | None) -> None:
        caption = text_of(el.find("ParagraphCaption"))
        if caption and first_line is None:
            self.lines.append(caption)
        num = text_of(el.find("ParagraphNum"))
        sent = el.find("ParagraphSentence")
        text = sentences(sent) if sent is not None else ""
        head = first_line if first_line is not None else num
        self.lines.append(f"{head}　{text}" if head else text)
        for child in el:
            if child.tag in _ITEMS:
                self.item(child)
            elif child.tag in ("TableStruct", "List", "Sublist", "FigStruct", "StyleStruct",
                               "AmendProvision", "Class"):
                self.block(child)

    def item(self, el: ET.Element) -> None:
        title = text_of(el.find(f"{el.tag}Title"))
        sent = el.find(f"{el.tag}Sentence")
        text = sentences(sent) if sent is not None else ""
        self.lines.append(f"{title}　{text}" if title else text)
        for child in el:
            if child.tag in _ITEMS:
                self.item(child)
            elif child.tag in ("TableStruct", "List", "Sublist", "FigStruct", "StyleStruct"):
                self.block(child)

    def appendix(self, el: ET.Element) -> None:
        title_el = next((c for c in el if c.tag.endswith("Title")), None)
        title = text_of(title_el)
        related = text_of(el.find("RelatedArticleNum"))
        self.lines.append(title + related)
        if el.tag in ("AppdxTable", "SupplProvisionAppdxTable") and title.startswith(
                ("別表", "附則別表")):
            m = re.match(r"(附則)?別表(第[〇一二三四五六七八九十百千]+)?", title)
            number = f"第{parse_number(m.group(2)[1:])}" if m.group(2) else ""
            self.gold.append({"scope": self.scope if el.tag.startswith("Suppl") else "",
                              "label": (m.group(1) or "") + "別表" + number,
                              "caption": related.strip("（）()"), "heading": "",
                              "start": ""})
        for child in el:
            if child is not title_el and child.tag != "RelatedArticleNum":
                self.block(child)

    def block(self, el: ET.Element) -> None:
        """Tables one row a line, everything else one sentence group a line."""
        if el.tag == "TableRow":
            self.lines.append("　".join(text_of(c) for c in el if c.tag == "TableColumn"))
            return
        if el.tag in _SENTENCE_PARENTS or el.tag in ("Sentence", "Column"):
            self.lines.append(sentences(el) if el.tag != "Sentence" else text_of(el))
            return
        if el.tag == "Paragraph":
            self.paragraph(el, first_line=None)
            return
        if el.tag == "Article":
            self.article(el)
            return
        if el.tag in _ITEMS:
            self.item(el)
            return
        kids = list(el)
        if not kids:
            t = text_of(el)
            if t:
                self.lines.append(t)
            return
        for child in kids:
            if child.tag.endswith("Title") or child.tag == "Sentence":
                t = text_of(child)
                if t:
                    self.lines.append(t)
            else:
                self.block(child)

    def _start(self, paragraph: ET.Element | None) -> str:
        if paragraph is None:
            return ""
        sent = paragraph.find("ParagraphSentence")
        return (sentences(sent) if sent is not None else "")[:30]


def convert(xml_path: Path) -> tuple[str, list[dict], str]:
    root = ET.parse(xml_path).getroot()
    w = Writer()
    w.law(root)
    title = text_of(root.find("LawBody/LawTitle"))
    return "\n".join(w.lines) + "\n", w.gold, title


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("xml", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "corpus/laws")
    ap.add_argument("--name", action="append", default=[],
                    help="output name for each XML in order (default: the law title and "
                         "the date in the file name)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(args.xml):
        text, gold, title = convert(path)
        date = next(iter(re.findall(r"_(\d{8})_", path.name)), "")
        name = args.name[i] if i < len(args.name) else title + (f"_{date}" if date else "")
        (args.out / f"{name}.txt").write_text(text, encoding="utf-8")
        (args.out / f"{name}.gold.jsonl").write_text(
            "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in gold), encoding="utf-8")
        print(f"{path.name}: {name}.txt ({len(text)} chars), {len(gold)} gold articles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
