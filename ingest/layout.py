"""From extracted text to logical lines: what the splitter reads.

Real regulations rarely arrive one article per line. A 学生便覧 PDF extracts a whole
page as one long line (「…届け出なければならない。 (休学期間の延長) 第15条 休学期間を…
2 前項の…」), document-sharing sites space every character (「第 1 条 青 森 中 央」),
booklets repeat running headers and page counters (「キャンパスガイド2016」「156/190」)
on every page, and web pages put list markers in front of articles (「1. 第17条」).
This module drops the page furniture (reporting what it dropped), joins a sentence
that a page break cut, undoes character spacing, and breaks long lines where an
article, its caption, a 項, a 号, 附則 or a 別表 starts, so that the splitter sees one
structural element per line whatever the source layout was.

A 第N条 inside a sentence (「第15条の規定により」「第9条第2項」「学則第46条に規定する」)
is a reference, never a start: a start follows a line start, a sentence end, a
caption, a heading or another article's number, or continues the article numbering,
and is followed by its caption or text, never by の規定/に/第N項.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .japanese import NUMBER, nfkc, parse_number

if TYPE_CHECKING:
    from .loaders import LoadedDocument

# Markdown headings and list bullets before 第N条; a web page's ordered-list marker
# before an article or a 項 number (「1. 第17条」, 「2. 2 聴講生を…」).
_MD_PREFIX = re.compile(rf"^\s*(?:#{{1,6}}\s+|[-*+]\s+(?=第)|[0-9]{{1,3}}\.\s+(?=第\s*(?:{NUMBER})\s*条|[0-9]+\s))")


@dataclass
class Line:
    text: str           # original for display (right-stripped; spacing undone)
    norm: str           # NFKC, stripped, list/markdown prefix removed: for matching
    page: int | None


@dataclass
class Layout:
    lines: list[Line]
    dropped: list[Line] = field(default_factory=list)   # page furniture, for `rag inspect`
    despaced: int = 0                                    # lines whose character spacing was undone
    broken: int = 0                                      # structural breaks inserted in long lines


def make_line(text: str, page: int | None) -> Line:
    text = text.rstrip()
    norm = nfkc(text).strip()
    m = _MD_PREFIX.match(norm)
    if m:
        norm = norm[m.end():].strip()
        if m.group().strip()[-1] == ".":
            # A web list's number is not the regulation's: the display loses it too.
            # (Markdown marks stay in the display text, where prose headings need them.)
            text = _drop_prefix(text, m.group().strip())
    return Line(text, norm, page)


def _drop_prefix(text: str, marker: str) -> str:
    """`text` without the list marker whose NFKC form is `marker` (「１．」 = 「1.」)."""
    s = text.lstrip()
    acc = ""
    for i, c in enumerate(s):
        if nfkc(acc).replace(" ", "") == marker.replace(" ", ""):
            return s[i:].lstrip()
        acc += c
    return s


def read_layout(doc: "LoadedDocument") -> Layout:
    raw: list[Line] = []
    despaced = 0
    page_starts: set[int] = set()
    for page in doc.pages:
        page_starts.add(len(raw))
        for text in page.text.splitlines():
            if text.count("■") >= 5 and text.count("■") * 50 >= len(text):
                text = text.replace("■", " ")     # a viewer's placeholder for spaces
            if _is_spaced(text):
                text = _despace(text)
                despaced += 1
            raw.append(make_line(text, page.number))
    furniture = _furniture(raw, page_starts if len(doc.pages) > 1 else set())
    kept, dropped = _drop_and_join(raw, furniture, page_starts if len(doc.pages) > 1 else set())
    lines, broken = _break_structure(kept)
    return Layout(lines, dropped, despaced, broken)


# --------------------------------------------------------------------------- spacing

def _is_spaced(text: str) -> bool:
    """「第 1 条 青 森 中 央 学 院」: most tokens a single character (PDF-to-HTML sites)."""
    tokens = text.split()
    if len(tokens) < 8:
        return False
    single = sum(1 for t in tokens if len(t) == 1)
    return single / len(tokens) >= 0.7


def _despace(text: str) -> str:
    # Two or more spaces were a real gap; a single one only separated characters.
    parts = re.split(r"\s{2,}|\u3000", text.strip())
    return " ".join(re.sub(r"(?<=\S) (?=\S)", "", p) for p in parts)


# --------------------------------------------------------------------------- furniture

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


def _furniture(lines: list[Line], page_starts: set[int]) -> set[int]:
    """Indexes of lines that are page furniture, not regulation text."""
    out: set[int] = set()
    for i, ln in enumerate(lines):
        n = ln.norm
        if not n:
            continue
        if _PAGE_COUNTER.match(n) or _URL.match(n) or _YEAR.match(n):
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


def _header_like(norm: str) -> bool:
    return (0 < len(norm) <= 40 and "。" not in norm and not _STRUCTURAL.match(norm))


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


def _drop_and_join(lines: list[Line], furniture: set[int],
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
    return not _STRUCTURAL.match(nxt) and not _START_HERE.match(nxt)


# --------------------------------------------------------------------------- structure

_N = rf"(?:{NUMBER})"
_CANDIDATE = re.compile(
    rf"(?P<art>第\s*(?P<an>{_N})\s*条(?:\s*の\s*(?P<ab>{_N}))?)"
    rf"|(?P<chap>第\s*{_N}\s*(?:編|章|節|款))"
    r"|(?P<supp>附\s*則(?:\s*[(][^()]{1,40}[)])?(?:\s*抄)?)"
    rf"|(?P<appx>(?:別表|別記|別紙|様式)(?:\s*第?\s*{_N}\s*号?)?)"
    r"|(?P<item>[(](?P<itemn>[0-9]{1,2})[)])"
    r"|(?P<kitem>(?<![第0-9一二三四五六七八九十])(?P<kitemn>[一二三四五六七八九十]{1,3})(?=\s))"
    r"|(?P<para>(?<![0-9.,])(?P<paran>[0-9]{1,2})(?=\s*[^\s0-9]))")
# What follows a 第N条 that is a reference, not a heading: 第15条の規定, 第9条第2項, ...
_REFERENCE_TAIL = re.compile(
    r"^\s*(?:の(?!\s*[0-9一二三四五六七八九十])|に|第\s*[0-9一二三四五六七八九十]+\s*[項号]|第\s*[0-9]*\s*$|"
    r"[(][^()]*第\s*[0-9一二三四五六七八九十]+\s*条[^()]*[)]|"
    r"及び|又は|並びに|若しくは|から|まで|を|は|が|と[^\s]|中|、|,|ただし|において|により|"
    r"による|で|へ|も|前段|後段|本文|以下|関係|[―\-~〜・])")
# Units after a number that make it a quantity, not a 項 number: 2 年, 3 単位, ...
_QUANTITY = re.compile(r"^\s*(?:年|月|日|単位|条|項|号|人|名|回|週|時間|科目|円|%|か月|箇月|ヵ月|"
                       r"カ月|ケ月|以上|以下|未満|分|歳|才|部|通|件|点|次|期|学期|セメスター)")
_ENDS = "。)」]"
_CAPTION_BEFORE = re.compile(r"[(]([^()。]{1,30})[)]\s*$")
# 「第86条 (削除)」: the body of a deleted article, not the next one's caption.
_NOT_CAPTION = re.compile(r"^\s*(?:削\s*除|省\s*略|略)\s*$")
_LABEL_BEFORE = re.compile(rf"(?:第\s*{_N}\s*条(?:\s*の\s*{_N})?|附\s*則(?:\s*[(][^()]{{1,40}}[)])?)\s*$")
_CHAPTER_BEFORE = re.compile(rf"(?:第\s*{_N}\s*(?:編|章|節|款)[^。()]{{0,30}}|削\s*除)$")
# 「…学則 第1章 総則」: a title runs into the first chapter heading.
_TITLE_BEFORE = re.compile(r"(?:学則|規則|規程|細則|要項|要綱|申合せ|内規|基準)$")
# A line that starts with a structure needs no joining across a page break.
_START_HERE = re.compile(rf"^(?:第\s*{_N}\s*条|[(][^()]{{1,30}}[)]\s*第)")


@dataclass
class _State:
    article: int | None = None     # number of the current article (None before the first)
    paragraph: int = 1             # current 項
    item: int = 0                  # last 号 number in (1) form
    kitem: int = 0                 # last 号 number in 一 form
    seen_article: bool = False


def _break_structure(lines: list[Line]) -> tuple[list[Line], int]:
    state = _State()
    out: list[Line] = []
    broken = 0
    for ln in lines:
        if not ln.norm:
            out.append(ln)
            continue
        cuts = _cuts(ln.norm, state)
        if not cuts:
            out.append(ln)
            continue
        broken += len(cuts)
        out.extend(_split_line(ln, cuts))
    return out, broken


def _cuts(norm: str, st: _State) -> list[int]:
    """Positions in `norm` where a new structural line starts (never 0)."""
    cuts: list[int] = []
    for m in _CANDIDATE.finditer(norm):
        i = m.start()
        before = norm[:i].rstrip()
        after = norm[m.end():]
        boundary = (not before or before[-1] in _ENDS or _LABEL_BEFORE.search(before)
                    or _CHAPTER_BEFORE.search(before) or norm[max(0, i - 2):i] == "  ")
        kind = _kind(m)
        if i == 0:
            _line_start(kind, m, st)
            continue
        if kind == "art":
            # A heading is followed by its caption, a space and text, or nothing; a
            # despaced line (「第1条青森…」) may have lost the space after a clear boundary.
            headed = bool(re.match(r"^\s*[(]", after) or re.match(r"^\s+\S", after)
                          or not after.strip())
            if _REFERENCE_TAIL.match(after) or not (
                    headed or re.match(rf"^第\s*{_N}\s*条", after)
                    or (boundary and (before[-1:] in "。)" or _LABEL_BEFORE.search(before)))):
                continue
            try:
                number = parse_number(m.group("an"))
            except ValueError:
                continue
            # Continuing the numbering (or the first article) with its caption or text
            # after it, even glued to the end of an item: 「…納入しない者第21条 本学の…」.
            in_sequence = headed and (number == 1 and not st.seen_article or (
                st.article is not None and number == st.article + 1))
            if not (boundary or in_sequence):
                continue
            cap = _CAPTION_BEFORE.search(before)
            if cap and not re.search(r"第\s*[0-9]+\s*条", cap.group(1)) and not _NOT_CAPTION.match(
                    cap.group(1)):
                _add(cuts, cap.start(), norm)     # the caption opens the article...
            st.article, st.paragraph, st.item, st.kitem = number, 1, 0, 0
            st.seen_article = True
            _add(cuts, i, norm)                   # ...on a line of its own
        elif kind == "chap":
            if (boundary or _TITLE_BEFORE.search(before)) and not _REFERENCE_TAIL.match(after) and re.match(r"^\s*\S", after):
                _add(cuts, i, norm)
        elif kind == "supp":
            if st.seen_article and boundary and not re.match(
                    r"^\s*第\s*[0-9]+\s*項|^\s*の", after):
                _add(cuts, i, norm)
                # The 附則 heading is a line of its own; its text (or 第1条) follows.
                if after.strip() and not re.match(r"^\s*第\s*\S+\s*条", after):
                    _add(cuts, m.end(), norm)
                st.article, st.paragraph = None, 1
        elif kind == "appx":
            if st.seen_article and (not before or before[-1] in "。)") and (
                    re.match(r"^\s*[(]", after) or not after.strip()
                    or re.match(r"^\s+\S", after)) and not _REFERENCE_TAIL.match(after):
                _add(cuts, i, norm)
                st.article = None
        elif kind == "para":
            n = int(m.group("paran"))
            if st.article is not None and n == st.paragraph + 1 and before and (
                    before[-1] in "。)") and not _QUANTITY.match(after):
                st.paragraph, st.item, st.kitem = n, 0, 0
                _add(cuts, i, norm)
        elif kind == "item":
            n = int(m.group("itemn"))
            if st.article is not None and n == st.item + 1 and before and (
                    (n == 1 and before[-1] in "。:") or (n > 1 and norm[i - 1].isspace())):
                st.item = n
                _add(cuts, i, norm)
        elif kind == "kitem":
            try:
                n = parse_number(m.group("kitemn"))
            except ValueError:
                continue
            if st.article is not None and n == st.kitem + 1 and before and (
                    (n == 1 and before[-1] in "。:") or (n > 1 and norm[i - 1].isspace()
                                                         and st.kitem)):
                st.kitem = n
                _add(cuts, i, norm)
    return cuts


def _line_start(kind: str, m: re.Match, st: _State) -> None:
    """A structure at the start of a line: the numbering state follows it."""
    after = m.string[m.end():]
    if kind == "art" and not _REFERENCE_TAIL.match(after):
        try:
            st.article = parse_number(m.group("an"))
        except ValueError:
            return
        st.paragraph, st.item, st.kitem, st.seen_article = 1, 0, 0, True
    elif kind == "para" and st.article is not None and int(m.group("paran")) == st.paragraph + 1:
        st.paragraph, st.item, st.kitem = int(m.group("paran")), 0, 0
    elif kind == "item" and int(m.group("itemn")) == st.item + 1:
        st.item = int(m.group("itemn"))
    elif kind == "kitem":
        try:
            n = parse_number(m.group("kitemn"))
        except ValueError:
            return
        if n == st.kitem + 1:
            st.kitem = n
    elif kind in ("supp", "appx") and st.seen_article:
        st.article, st.paragraph = None, 1


def _kind(m: re.Match) -> str:
    for k in ("art", "chap", "supp", "appx", "item", "kitem", "para"):
        if m.group(k) is not None:
            return k
    return ""


def _add(cuts: list[int], pos: int, norm: str) -> None:
    if 0 < pos < len(norm) and norm[:pos].strip() and (not cuts or pos > cuts[-1]):
        cuts.append(pos)


def _split_line(ln: Line, cuts: list[int]) -> list[Line]:
    """Cut a line at positions of its NFKC form; the display text is cut at the same
    characters (NFKC keeps the count of each character of Japanese text but a few)."""
    starts = _display_offsets(ln.text.strip(), len(ln.norm), ln.norm)
    pieces = []
    bounds = [0] + cuts + [len(ln.norm)]
    text = ln.text.strip()
    for a, b in zip(bounds, bounds[1:]):
        t = text[starts[a]:starts[b]].strip()
        if t:
            pieces.append(make_line(t, ln.page))
    return pieces


def _display_offsets(text: str, n: int, norm: str) -> list[int]:
    """For each position 0..n of `norm`, the matching offset in `text`."""
    # norm = nfkc(text).strip() minus a list prefix: align by walking both strings.
    full = nfkc(text)
    shift = full.find(norm[:20]) if norm else 0
    shift = max(shift, 0)
    offsets = [len(text)] * (n + 1)
    pos = 0            # position in nfkc(text)
    for i, c in enumerate(text):
        k = pos - shift
        if 0 <= k <= n and offsets[k] == len(text):
            offsets[k] = i
        pos += len(nfkc(c))
    # Positions never reached (inside a multi-character NFKC expansion) take the next.
    for k in range(n - 1, -1, -1):
        if offsets[k] == len(text) and offsets[k + 1] != len(text):
            offsets[k] = offsets[k + 1]
    return offsets
