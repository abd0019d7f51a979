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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .furniture import drop_and_join, furniture
from .japanese import NUMBER, nfkc, parse_number
from .lines import Line, make_line

if TYPE_CHECKING:
    from .document import LoadedDocument

# Markdown headings and list bullets before 第N条; a web page's ordered-list marker
# before an article or a 項 number (「1. 第17条」, 「2. 2 聴講生を…」).
@dataclass
class Layout:
    lines: list[Line]
    dropped: list[Line] = field(default_factory=list)   # page furniture, for `rag inspect`
    despaced: int = 0                                    # lines whose character spacing was undone
    broken: int = 0                                      # structural breaks inserted in long lines


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
    pages = page_starts if len(doc.pages) > 1 else set()
    kept, dropped = drop_and_join(raw, furniture(raw, pages), pages)
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


# --------------------------------------------------------------------------- structure

_N = rf"(?:{NUMBER})"
_CANDIDATE = re.compile(
    rf"(?P<art>第\s*(?P<an>{_N})\s*条(?:\s*の\s*{_N}(?!\s*部))*)"
    rf"|(?P<chap>第\s*{_N}\s*(?:編|章|節|款))"
    r"|(?P<supp>附\s*則(?:\s*[(][^()]{1,40}[)])?(?:\s*抄)?)"
    rf"|(?P<appx>(?:別表|別記|別紙|様式)(?:\s*第?\s*{_N}\s*号?)?)"
    r"|(?P<item>[(](?P<itemn>[0-9]{1,2})[)])"
    r"|(?P<kitem>(?<![第0-9一二三四五六七八九十])(?P<kitemn>[一二三四五六七八九十]{1,3})(?=\s))"
    r"|(?P<para>(?<![0-9.,])(?P<paran>[0-9]{1,2})(?=\s*[^\s0-9]))")
# What follows a 第N条 that is a reference, not a heading: 第15条の規定, 第9条第2項, ...
# Glued to the number, any of these; after a space only what cannot begin an article's
# text: 「第七十四条　中間申告書」 is a heading, 「第七十四条中「…」を」 a reference. A
# caption-like bracket followed by の/に/中… is a reference too: 「附則第五条（…）の規定」.
_REF_WORDS = (r"の(?!\s*[0-9一二三四五六七八九十])|に|第\s*[0-9一二三四五六七八九十]+\s*[項号]|"
              r"第\s*[0-9]*\s*$|[(][^()]*第\s*[0-9一二三四五六七八九十]+\s*条[^()]*[)]|"
              r"[(][^()]{1,40}[)](?:の|に|中|を|は|が|及び|又は|並びに|若しくは|から|まで|、|,|"
              r"第\s*[0-9一二三四五六七八九十]+\s*[項号])|"
              r"及び|又は|並びに|若しくは|から|まで|を|は|が|、|,|において|により|による|前段|後段|本文")
_REFERENCE_TAIL = re.compile(
    rf"^(?:{_REF_WORDS}|と[^\s]|中|ただし|以下|関係|で|へ|も|[―\-~〜・])|^\s+(?:{_REF_WORDS})"
    r"|^の\s*一\s*部")           # 「第三条の一部を次のように改正する」: not 第3条の1
# After a bracket, what makes the article number before it a reference.
_AFTER_BRACKET = re.compile(r"^(?:の|に|中|を|は|が|及び|又は|並びに|若しくは|から|まで|、|,|"
                            r"第\s*[0-9一二三四五六七八九十]+\s*[項号])")


class _ReferenceTail:
    """`REFERENCE_TAIL.match(after)`: whether what follows a 第N条 makes it a reference.
    Beside the patterns, a bracket with brackets inside, closed and followed by の規定
    and the like: 「第四十三条の二（第三条の規定による…（以下「…」という。）…を含む。）の規定は」."""

    def match(self, after: str):
        m = _REFERENCE_TAIL.match(after)
        if m or not after.startswith("("):
            return m
        depth = 0
        for k, c in enumerate(after[:512]):
            depth += (c == "(") - (c == ")")
            if depth == 0:
                return _AFTER_BRACKET.match(after[k + 1:]) if k > 1 else None
        return None


REFERENCE_TAIL = _ReferenceTail()
# Units after a number that make it a quantity, not a 項 number: 2 年, 3 単位, ...
_QUANTITY = re.compile(r"^\s*(?:年|月|日|単位|条|項|号|人|名|回|週|時間|科目|円|%|か月|箇月|ヵ月|"
                       r"カ月|ケ月|以上|以下|未満|分|歳|才|部|通|件|点|次|期|学期|セメスター)")
_ENDS = "。)」]"
_CAPTION_BEFORE = re.compile(r"[(]([^()。]{1,30})[)]\s*$")
# 「第86条 (削除)」: the body of a deleted article, not the next one's caption.
_NOT_CAPTION = re.compile(r"^\s*(?:削\s*除|省\s*略|略)\s*$")
_LABEL_BEFORE = re.compile(rf"(?:第\s*{_N}\s*条(?:\s*の\s*{_N})?|附\s*則(?:\s*[(][^()]{{1,40}}[)])?)\s*$")
# 「…法律（昭和六十年法律第三十四号）附則」「同法附則」: another law's 附則 is named.
_LAW_BEFORE = re.compile(r"(?:号\s*[)]|法|令|規則|規程|同)$")
_CHAPTER_BEFORE = re.compile(rf"(?:第\s*{_N}\s*(?:編|章|節|款)[^。()]{{0,30}}|削\s*除)$")
# 「…学則 第1章 総則」: a title runs into the first chapter heading.
_TITLE_BEFORE = re.compile(r"(?:学則|規則|規程|細則|要項|要綱|申合せ|内規|基準)$")


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


# How much text on either side of a candidate decides it: a caption, a label or a
# reference tail is far shorter. Looking at a bounded window, not the whole rest of the
# line, keeps a file that is one long line linear (a slice and an `$`-anchored search
# of the whole prefix at every candidate made a 4 MB line take a minute).
_BEFORE, _AFTER = 128, 512


def _context(norm: str, i: int, j: int) -> tuple[str, int, str]:
    """(the text before `i`, right-stripped; where that slice starts; the text from
    `j`), at most `_BEFORE` and `_AFTER` characters unless a blank window hides the
    answer."""
    start = max(0, i - _BEFORE)
    before = norm[start:i].rstrip()
    if not before and start:          # only blanks in the window: look further back
        start, before = 0, norm[:i].rstrip()
    after = norm[j:j + _AFTER]
    if not after.strip() and j + _AFTER < len(norm):
        after = norm[j:]
    return before, start, after


def _cuts(norm: str, st: _State) -> list[int]:
    """Positions in `norm` where a new structural line starts (never 0)."""
    cuts: list[int] = []
    for m in _CANDIDATE.finditer(norm):
        i = m.start()
        before, offset, after = _context(norm, i, m.end())
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
            if REFERENCE_TAIL.match(after) or not (
                    headed or re.match(rf"^第\s*{_N}\s*条", after)
                    or (boundary and (before[-1:] in "。)" or _LABEL_BEFORE.search(before)))):
                continue
            # 「…をいう。）附則第二十六条」: after a 附則 that was not a heading, a reference.
            supp = re.search(r"附\s*則(?:\s*[(][^()]{1,40}[)])?(?:\s*抄)?\s*$", before[-60:])
            at = offset + len(before) - len(before[-60:]) + supp.start() if supp else 0
            if at > 0 and at not in cuts:
                continue
            # 「附則第五十二条」 glued, kanji: a 読替え table's cell naming a 附則 article (a
            # statute's 附則 heading stands apart: 「附　則」 and 「第一条」).
            if before.endswith("附則") and not re.match(r"第\s*[0-9]", m.group("art")):
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
                _add(cuts, offset + cap.start(), norm)   # the caption opens the article...
            st.article, st.paragraph, st.item, st.kitem = number, 1, 0, 0
            st.seen_article = True
            _add(cuts, i, norm)                   # ...on a line of its own
        elif kind == "chap":
            # 「（昭和二十二年法律第六十七号）第二編第十一章に規定する」 is a reference.
            if (boundary or _TITLE_BEFORE.search(before)) and not REFERENCE_TAIL.match(after) and re.match(r"^\s*\S", after) and not (
                    _LAW_BEFORE.search(before[-12:]) or re.match(rf"^第\s*{_N}\s*(?:編|章|節|款|条)", after)):
                _add(cuts, i, norm)
        elif kind == "supp":
            # 「（昭和六十年法律第三十四号）附則第五条（…）の規定による」 names another
            # law's 附則: a heading follows a sentence end and is followed by its text.
            tail = re.sub(rf"^\s*第\s*{_N}\s*条(?:\s*の\s*{_N})*", "", after, count=1)
            # 「…をいう。）附則第二十六条」 (a closing bracket before it, an article number
            # after it) is a reference too; 「(中 略)附 則 この学則は」 is a heading.
            if st.seen_article and boundary and (before[-1:] not in ")」" or tail == after) and not re.match(
                    r"^\s*第\s*[0-9]+\s*項|^\s*の", after) and not _LAW_BEFORE.search(
                    before[-12:]) and (tail == after or not REFERENCE_TAIL.match(tail[:200])):
                _add(cuts, i, norm)
                # The 附則 heading is a line of its own; its text (or 第1条) follows.
                if after.strip() and not re.match(r"^\s*第\s*\S+\s*条", after):
                    _add(cuts, m.end(), norm)
                st.article, st.paragraph = None, 1
        elif kind == "appx":
            if st.seen_article and (not before or before[-1] in "。)") and (
                    re.match(r"^\s*[(]", after) or not after.strip()
                    or re.match(r"^\s+\S", after)) and not REFERENCE_TAIL.match(after):
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
    if kind == "art" and not REFERENCE_TAIL.match(after):
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
    # Text before the first cut (later ones follow it): checked once, not at every cut.
    if 0 < pos < len(norm) and (pos > cuts[-1] if cuts else bool(norm[:pos].strip())):
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
