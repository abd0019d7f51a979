"""Page furniture: what a booklet prints on every page that is not regulation text.

Page counters (`12/96`, `-58-`, `- 7 -`), running headers and footers repeated beside
them or at page edges (also when glued to the first line of a page: 「学則・学生規則141
(退学)…」), a booklet's section marks (`Ⅳ3`), lines that are only a year, URLs. They are
dropped (and reported), and a sentence that a page break cut is joined again.
"""
from __future__ import annotations

import re
from collections import Counter

from .japanese import NUMBER, nfkc
from .lines import Line

_N = rf"(?:{NUMBER})"

_PAGE_COUNTER = re.compile(
    r"^(?:[-‐―ー–—~]\s*)?[0-9]{1,4}(?:\s*[-‐―ー–—~])?$"   # 12, -58-, - 7 -
    r"|^[0-9]{1,4}\s*/\s*[0-9]{1,4}$"                      # 12/96
    r"|^(?:p|P|page|Page)\.?\s*[0-9]{1,4}$"                 # p.3
    r"|^[0-9]{1,4}\s*(?:頁|ページ)$")
_SECTION_MARK = re.compile(r"^(?:[IVX]{1,4}|[0-9]{1,2})\s*[-‐・.]?\s*[0-9]{0,3}$")
_YEAR = re.compile(r"^(?:(?:19|20)[0-9]{2}|(?:令和|平成|昭和)\s*(?:[0-9]{1,2}|元))\s*(?:年度?|年版)?$")
_URL = re.compile(r"^(?:https?://|www\.)\S+$")
_STRUCTURAL = re.compile(
    rf"^(?:第\s*(?:{NUMBER})\s*(?:条|章|節|編|款)|附\s*則|[(]|別表|様式|別記|[0-9]+\s|"
    r"[一二三四五六七八九十]+\s)")


def furniture(lines: list[Line], page_starts: set[int]) -> set[int]:
    """Indexes of lines that are page furniture, not regulation text."""
    out: set[int] = set()
    plain = _plain_page_numbers(lines, page_starts)
    for i, ln in enumerate(lines):
        n = ln.norm
        if not n:
            continue
        if _YEAR.match(n) or _URL.match(n) or (i in plain if n.isdigit() else
                                               _PAGE_COUNTER.match(n)):
            out.add(i)
        elif _SECTION_MARK.match(n) and re.search(r"[\u2160-\u217f]", ln.text):
            out.add(i)          # a booklet's section mark such as 「Ⅳ3」
    # Running headers and footers: short lines that recur next to page counters or at
    # page edges (a PDF's pages), the page number inside them varying.
    edge = _page_edges(lines, page_starts, out)
    shapes = Counter(_shape(lines[i].norm) for i in edge if _header_like(lines[i].norm))
    for i in edge:
        if _header_like(lines[i].norm) and shapes[_shape(lines[i].norm)] >= 2:
            out.add(i)
    return out


def _plain_page_numbers(lines: list[Line], page_starts: set[int]) -> set[int]:
    """Lines that are a bare number and still a page number: at a PDF page's edge, or
    counting up with the others (12, 13, 14). A bare 「2」 of a hard-wrapped 「昭和\n2\n8\n年」
    is text."""
    bare = [i for i, ln in enumerate(lines) if ln.norm.isdigit() and len(ln.norm) <= 4]
    edges = _page_edges(lines, page_starts, set()) if page_starts else set()
    counting = set()
    for a, b in zip(bare, bare[1:]):
        if int(lines[b].norm) == int(lines[a].norm) + 1:
            counting |= {a, b}
    return {i for i in bare if i in edges or i in counting}


def _header_like(norm: str) -> bool:
    # (A bare number is a page number or text, decided by _plain_page_numbers.)
    return (0 < len(norm) <= 40 and "。" not in norm and not _STRUCTURAL.match(norm)
            and not norm.isdigit())


def _shape(norm: str) -> str:
    return re.sub(r"[0-9]+", "#", norm.replace(" ", ""))


def _page_edges(lines: list[Line], page_starts: set[int], counters: set[int]) -> set[int]:
    """Lines within two non-empty lines of a page edge or of a page counter."""
    edges: set[int] = set()
    anchors = sorted(page_starts | {s - 1 for s in page_starts if s > 0} | counters
                     | ({len(lines) - 1} if page_starts else set()))
    for a in anchors:
        for step in (-1, 1):
            i, seen = a, 0
            while 0 <= i < len(lines) and seen < 3:
                if lines[i].norm:
                    edges.add(i)
                    seen += 1
                i += step
    return edges


def _header_prefix(lines: list[Line], anchors: list[int]) -> str | None:
    """A running header glued to the first line of each page: 「学則・学生規則148 (他の…」."""
    starts = [re.sub(r"^[0-9\s]+", "", lines[i].norm) for i in anchors]
    starts = [s for s in starts if len(s) > 40]
    best = None
    for a in range(len(starts)):
        for b in range(a + 1, len(starts)):
            k = 0
            while k < min(len(starts[a]), len(starts[b])) and starts[a][k] == starts[b][k]:
                k += 1
            prefix = re.split(r"[(0-9]|第\s*[0-9]", starts[a][:k])[0].rstrip()
            if 3 <= len(prefix) <= 30 and "。" not in prefix and not _STRUCTURAL.match(prefix):
                if best is None or len(prefix) > len(best):
                    best = prefix
    return best


def drop_and_join(lines: list[Line], furniture: set[int],
                   page_starts: set[int]) -> tuple[list[Line], list[Line]]:
    """Drop furniture; a sentence cut by it (or by a PDF page break) is joined again."""
    after_furniture = sorted({i + 1 for i in furniture} | page_starts)
    # The first real line after a counter may start with a glued running header.
    firsts = []
    for a in after_furniture:
        i = a
        while i < len(lines) and (i in furniture or not lines[i].norm):
            i += 1
        if i < len(lines):
            firsts.append(i)
    prefix = _header_prefix(lines, firsts)
    if prefix and sum(1 for i in firsts if re.match(
            r"^[0-9]{1,4}\s*" + re.escape(prefix) + "|^" + re.escape(prefix) + r"\s*[0-9]{1,4}",
            lines[i].norm)) < 2:
        prefix = None       # without a page number beside it, it is text, not a header
    dropped = [lines[i] for i in sorted(furniture)]
    if prefix:
        # 「学則・学生規則1412 前項の…」 is page 141 and 項 2: page numbers in one booklet
        # have the same width, so take as many digits as the shortest one shows.
        widths = [len(m.group(1)) for i in firsts if (m := re.match(
            r"^[0-9]{0,4}\s*" + re.escape(prefix) + r"\s*([0-9]{1,4})", lines[i].norm))]
        width = min(widths) if widths else 4
        pattern = re.compile(r"^[0-9]{0,4}\s*" + re.escape(prefix) + rf"\s*[0-9]{{0,{width}}}\s*")
        for i in firsts:
            m = pattern.match(lines[i].norm)
            if m:
                dropped.append(Line(m.group().strip(), m.group().strip(), lines[i].page))
                lines[i] = Line(_cut_display(lines[i].text, m.end()),
                                lines[i].norm[m.end():], lines[i].page)
    kept: list[Line] = []
    gap = False                      # furniture or a page break since the last kept line
    for i, ln in enumerate(lines):
        if i in furniture:
            gap = True
            continue
        if i in page_starts and i:
            gap = True
        if not ln.norm:
            kept.append(ln)
            continue
        prev = next((k for k in reversed(kept) if k.norm), None)
        if gap and prev is not None and _continues(prev.norm, ln.norm):
            # Remove blank lines between, then glue the cut sentence back together.
            while kept and not kept[-1].norm:
                kept.pop()
            kept[-1] = Line(prev.text + ln.text.lstrip(), prev.norm + ln.norm, prev.page)
        else:
            kept.append(ln)
        gap = False
    return kept, dropped


def _cut_display(text: str, norm_end: int) -> str:
    """The display text after its first `norm_end` NFKC characters (approximately 1:1)."""
    count = 0
    stripped = text.lstrip()
    for i, c in enumerate(stripped):
        if count >= norm_end:
            return stripped[i:].lstrip()
        count += len(nfkc(c))
    return ""


def _continues(prev: str, nxt: str) -> bool:
    """Whether `nxt` is the rest of a sentence that `prev` left open."""
    if prev[-1] in "。．.)」』:：" or re.search(rf"第\s*(?:{NUMBER})\s*(?:条|章|節)", prev[-12:]):
        return False
    if _TITLE_LINE.match(nxt) or _BOOKLET_END.search(prev):
        return False      # 「2026年度 学生便覧」「12/96」「…休学に関する規程」: a title line
    return not _STRUCTURAL.match(nxt) and not _START_HERE.match(nxt)


# A line that is a regulation's whole name starts something; a booklet's running title
# (「2026年度 学生便覧」) ends nothing that the next page could continue.
_TITLE_LINE = re.compile(r"^[^\s。、]{2,60}?(?:学則|規則|規程|細則|要項|要綱|要領|申合せ|内規|基準)"
                         r"(?:\s*[(](?:案|抄|抜粋)[)])?$")
_BOOKLET_END = re.compile(r"(?:便覧|ハンドブック|ガイド|手引き?|要覧|[Gg]uide|GUIDE)$")


# A line that starts with a structure needs no joining across a page break.
_START_HERE = re.compile(rf"^(?:第\s*{_N}\s*条|[(][^()]{{1,30}}[)]\s*第)")
