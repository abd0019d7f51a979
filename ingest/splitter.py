"""Split a regulation into passages: one per article (条), long ones at 項.

Structure first: 編/章/節 headings, captions such as 「（除籍）」 on the line before
第42条, branch articles (第15条の2), 削除 articles, 附則, and the numbered items of
申合せ that have no articles. Text that is not a regulation falls back to
paragraphs and sentences. All matching is done on NFKC-normalised lines; the
passages keep the original lines for display.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .japanese import (NUMBER, article_label, has_sentence_end, nfkc, parse_number)
from .layout import Layout, Line
from .lines import make_line
from .layout import REFERENCE_TAIL
from .document import LoadedDocument
from .passage import Passage, content_hash
from .sizing import TokenCounter, unit_passages

SPLITTER_VERSION = 5
_MD_HEADING = re.compile(r"^#{2,6}\s")

_HEADING = re.compile(rf"^第\s*({NUMBER})\s*(編|章|節|款)(?:\s*の\s*(?:{NUMBER}))*(?:\s+|$)(.*)$")
# 第42条　本文 / 第42条（除籍）本文 / 第 3 条 / 第42条 (no text); after the layout pass
# a despaced 「第1条青森…」 too, but never 「第8条に規定する…」 or 「第9条第2項の…」.
_ARTICLE = re.compile(
    rf"^第\s*({NUMBER})\s*条((?:\s*の\s*(?:{NUMBER})(?!\s*部))*)"
    rf"(?:\s*[(]([^()]{{1,30}})[)]\s*(.*)|\s+(.*)|$|(?=[^\s(])(.*))")
# (A law number 「（昭和三十四年政令第百八十四号）」 under a title is not a caption.)
_CAPTION = re.compile(r"^[(](?!\s*(?:削\s*除|省\s*略|略)\s*[)])"
                      r"(?!(?:明治|大正|昭和|平成|令和)[^()]*年[^()]*第[^()]*号[)]$)([^()。]{1,50})[)]$")
# 附則 / 附 則 (令和6年…規則第5号) / 附則 抄; its text may follow on the same line.
_SUPPLEMENT = re.compile(r"^附\s*則(?:\s*[(](.{1,40})[)])?(?:\s*抄)?(?:\s+(.*))?$")
# 別表第1（第2条関係） / 様式第3号 / 別記: tables and forms after the articles.
_APPENDIX = re.compile(
    rf"^(別表|別記|別紙|様式)(?:\s*(第)?\s*({NUMBER})\s*(号)?)?\s*(?:[(]([^()]{{1,40}})[)])?(?:\s|$)")
_PARAGRAPH = re.compile(r"^([0-9]+)\s+\S")
_ITEM_DIGIT = re.compile(r"^([0-9]+)(?:\s+|[.、]\s*)(\S.*)$")
_ITEM_KANJI = re.compile(r"^([一二三四五六七八九十]+)\s+(\S.*)$")
# (「第三条の一部」 is part of 第3条, not 第3条の1.)
_HEAD = re.compile(rf"^第\s*(?:{NUMBER})\s*条(?:\s*の\s*(?:{NUMBER})(?!\s*部))*")
# 「第百三十六条及び第百三十七条　削除」「第十条から第十二条まで　削除」: one heading for
# several deleted articles, labelled as written (第136条及び第137条).
_ONE = rf"第\s*(?:{NUMBER})\s*条(?:\s*の\s*(?:{NUMBER}))*"
_DELETED_RANGE = re.compile(
    rf"^({_ONE}(?:\s*(?:、|,|及び)\s*{_ONE})+|{_ONE}\s*から\s*{_ONE}\s*まで)\s*"
    r"(?:削\s*除|[(]\s*削\s*除\s*[)])$")






@dataclass
class _Unit:
    """An article, 附則, 申合せ item, preamble or prose paragraph being collected."""
    article: str
    caption: str
    heading: str
    lines: list[Line] = field(default_factory=list)
    scope: str = ""                 # Passage.scope: "", "附則", "附則(…法律第九号)", …
    paragraph_starts: list[int] = field(default_factory=lambda: [0])  # line index of each 項

    @property
    def page(self) -> int | None:
        return next((ln.page for ln in self.lines if ln.page is not None), None)


def split_document(doc: LoadedDocument, source: str, *, max_tokens: int | None = None,
                   count_tokens: TokenCounter | None = None) -> list[Passage]:
    """Passages of one loaded document, in document order.

    `max_tokens` bounds each passage's search text (header + text) in the embedder's
    tokens, measured with `count_tokens`; without them passages are not size-limited.
    """
    return analyse_document(doc, source, max_tokens=max_tokens,
                            count_tokens=count_tokens).passages


@dataclass
class Analysis:
    """How a document was read: what `rag inspect` shows and ingest warns about."""
    title: str
    passages: list[Passage]
    layout: Layout
    structure: str                  # regulation | items | prose
    article_share: float            # share of the text inside articles (条, 附則, 別表)
    mentioned: int                  # distinct article numbers written as headings (not references)
    split: int                      # distinct articles split out
    warnings: list[str] = field(default_factory=list)


def analyse_document(doc: LoadedDocument, source: str, *, max_tokens: int | None = None,
                     count_tokens: TokenCounter | None = None) -> Analysis:
    layout = doc.layout()
    lines = layout.lines
    if any(_article(ln.norm) for ln in lines):
        structure, units = "regulation", _regulation_units(lines)
    elif not any(_MD_HEADING.match(ln.text) for ln in lines) and (
            items := _item_pattern(lines)) is not None:
        # (A Markdown guide with sections and a numbered list is prose, not a 申合せ.)
        structure, units = "items", _item_units(lines, items)
    else:
        structure, units = "prose", _prose_units(lines)
    counter = count_tokens or len
    passages: list[Passage] = []
    for unit in units:
        passages.extend(unit_passages(unit, doc.title, source, max_tokens, counter,
                                       prose=not unit.article))
    total = sum(len(ln.norm) for ln in lines) or 1
    inside = sum(len(ln.norm) for u in units if u.article for ln in u.lines)
    mentioned = _mentioned_articles(lines)
    articles = [(u.scope, u.article) for u in units if "条" in u.article]
    split = len(set(articles))
    analysis = Analysis(doc.title, _with_unique_ids(passages), layout, structure,
                        inside / total, mentioned, split)
    repeated = {k: n for k, n in Counter((u.scope, u.article) for u in units
                                         if u.article).items() if n > 1}
    if repeated:
        shown = ", ".join(f"{a}" + (f" of {sc}" if sc and sc != "附則" else "") + f" ×{n}"
                          for (sc, a), n in list(repeated.items())[:5])
        more = f" (+{len(repeated) - 5} more)" if len(repeated) > 5 else ""
        analysis.warnings.append(
            f"{len(repeated)} article labels split more than once: {shown}{more}; a "
            "reference may have been read as a heading: check with `rag inspect`")
    if split > mentioned:
        analysis.warnings.append(
            f"{split} articles split but only {mentioned} article headings in the text: "
            "a reference may have been read as a heading: check with `rag inspect`")
    if mentioned >= 5 and split < mentioned / 3:
        analysis.warnings.append(
            f"{mentioned} article headings in the text but only {split} articles split: "
            "check the layout with `rag inspect`")
    elif structure == "regulation" and inside / total < 0.5:
        analysis.warnings.append(
            f"only {inside / total:.0%} of the text fell inside articles")
    return analysis


def _label_of(head: str) -> str:
    """第七十四条の二の二 -> 第74条の2の2."""
    numbers = [parse_number(n) for n in re.findall(rf"{NUMBER}", nfkc(head))]
    return article_label(*numbers)


def _range_label(text: str) -> str:
    """第百三十六条及び第百三十七条 -> 第136条及び第137条 (the words kept as written)."""
    return re.sub(_ONE, lambda m: _label_of(m.group()), re.sub(r"\s+", "", text))


def _article(norm: str) -> re.Match | None:
    """An article heading at the start of a line, never a reference (「第8条に規定する」)."""
    m = _ARTICLE.match(norm)
    if m is None:
        return None
    head = _HEAD.match(norm)
    return None if REFERENCE_TAIL.match(norm[head.end():]) else m


# A table of contents names article ranges: 「第1章 総則(第1条―第12条)」.
_TOC_RANGE = re.compile(rf"[(]第\s*(?:{NUMBER})\s*条(?:の\s*(?:{NUMBER}))?\s*[-―‐ー~〜・、]"
                        rf"[^()]*?第\s*(?:{NUMBER})\s*条(?:の\s*(?:{NUMBER}))?[)]")


def _mentioned_articles(lines: list[Line]) -> int:
    """Distinct article headings written in the text, table-of-contents ranges and
    references aside: labels in full (第74条の2の2), counted per 附則 and per
    regulation of a booklet (where 第1条 comes again), as the articles split are."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    segment = 0
    for ln in lines:
        if _SUPPLEMENT.match(ln.norm):
            segment += 1
        if _DELETED_RANGE.match(ln.norm):      # 「第4条及び第5条 削除」: one heading
            seen.add((segment, (-1, len(seen))))
            continue
        text = _TOC_RANGE.sub("", ln.norm)
        for m in re.finditer(rf"第\s*({NUMBER})\s*条(?:\s*の\s*(?:{NUMBER}))*", text):
            # 「学則第46条に規定する」「同法第9条第2項」: a reference names another article.
            # (Windows of the text around the match: a 1 MB line stays linear.)
            if (REFERENCE_TAIL.match(text[m.end():m.end() + 200])
                    or re.search(r"(?:法|則|程|令|準|綱|領|内規|同)\s*$",
                                 text[max(0, m.start() - 20):m.start()])):
                continue
            try:
                number = _numbers(m.group())
            except ValueError:
                continue
            if number == (1,) and (segment, number) in seen:
                segment += 1
            seen.add((segment, number))
    return len(seen)


# --------------------------------------------------------------------------- lines

def _is_heading(norm: str) -> re.Match | None:
    m = _HEADING.match(norm)
    # A heading is a short line of its own, not a sentence that starts with 第1章.
    return m if m and not has_sentence_end(norm) and len(norm) <= 40 else None


_LEVELS = ("編", "章", "節", "款")


def _set_heading(levels: dict[str, str], match: re.Match, line: "Line") -> None:
    """A 章 line replaces the current 章 and clears the 節 and 款 under it."""
    kind = match.group(2)
    for lower in _LEVELS[_LEVELS.index(kind):]:
        levels.pop(lower, None)
    levels[kind] = line.display


def _heading_path(levels: dict[str, str]) -> str:
    return " > ".join(levels[k] for k in _LEVELS if levels.get(k))


# --------------------------------------------------------------------------- regulations

def _regulation_units(lines: list[Line]) -> list[_Unit]:
    units: list[_Unit] = []
    levels: dict[str, str] = {}
    supplement: str | None = None   # "附則" or "附則(令和6年…)" once inside 附則
    scope = ""                      # the Passage.scope of the articles being read
    supplements = 0                 # 附則 headings seen (an unnamed later one is 附則[n])
    restarts = 1                    # regulations of a booklet: the second one's scope is [2]
    caption: Line | None = None    # a 「（除籍）」 line waiting for its article
    current = _Unit("", "", "")     # preamble until the first article
    seen_article = False
    last: dict[str, tuple[int, ...]] = {}   # the last article number read, per scope
    lines = _join_deleted_ranges(lines)
    texts = [i for i, ln in enumerate(lines) if ln.norm]
    following = {i: lines[j].norm for i, j in zip(texts, texts[1:])}   # the next line's text
    for index, ln in enumerate(lines):
        norm = ln.norm
        if not norm:
            continue
        if caption is not None and not _article(norm) and not _DELETED_RANGE.match(norm):
            current.lines.append(caption)   # it was a bracketed line of text after all
            caption = None
        if (h := _is_heading(norm)) is not None:
            _set_heading(levels, h, ln)
            continue
        # 附則 opens the supplementary provisions only after the main articles: a 目次
        # that lists 「附則」 must not turn every article into 附則第N条.
        if seen_article and (s := _SUPPLEMENT.match(norm)) is not None:
            supplements += 1
            supplement = "附則" + (f"({s.group(1)})" if s.group(1) else "")
            scope = (re.sub(r"\s+", "", supplement) if s.group(1)
                     else "附則" if supplements == 1 else f"附則[{supplements}]")
            levels = {}
            units.append(current)
            current = _Unit("附則", "", supplement, [ln], scope=scope)
            continue
        if seen_article and (x := _APPENDIX.match(norm)) is not None:
            units.append(current)
            number = x.group(3)
            label = x.group(1) + (f"第{parse_number(number)}" if number else "") + (
                "号" if x.group(4) else "")
            current = _Unit(label, x.group(5) or "", "", [ln])
            continue
        if _CAPTION.match(norm):
            caption = ln
            continue
        if seen_article and (d := _DELETED_RANGE.match(norm)) is not None:
            units.append(current)
            label = ("附則" if supplement else "") + _range_label(d.group(1))
            current = _Unit(label, "", supplement or _heading_path(levels),
                            ([caption] if caption else []) + [ln], scope=scope)
            numbers = re.findall(_ONE, nfkc(d.group(1)))
            last[scope] = _numbers(numbers[-1])
            caption = None
            continue
        if (a := _article(norm)) is not None:
            number = _numbers(_HEAD.match(norm).group())
            booklet = (supplement and number == (1,) and current.article == "附則"
                       and len(current.lines) > 1)
            # Statute numbering goes on: a 第七条 (kanji, as laws number) at or below the
            # article before it in the same provisions, with no caption line, is a line
            # of text that starts with an article number (a table row, a citation). A
            # page that quotes articles out of order (第40条, 第39条, 第35条) keeps them.
            # A bare 「第百一条の二」 line (nothing after the number) far ahead of the
            # main numbering is a table cell (a 読替え table names another law's articles;
            # the 附則 of an excerpt, 抄, skip numbers).
            # Unless the line after it is an article's first sentence (「第二十四条」 then
            # 「新法施行前…をいう。」: articles missing from an excerpt), which a table cell
            # (「二億円以下の罰金刑」, 「第百一条の二」) never is.
            # A kanji number with its text glued to it (「第四百二十三条その他の法令の規定
            # により」, a reference a line break cut from 「民法（…）」) far ahead too: a
            # statute heading is followed by a space, a caption or nothing.
            kanji = not re.match(r"^第\s*[0-9]", norm)
            rest = norm[_HEAD.match(norm).end():]
            bare = not rest.strip()
            glued = bool(rest) and not rest[0].isspace() and not re.match(r"[(][^()]{1,30}[)]", rest)
            if (not booklet and caption is None and scope in last and number != (1,) and kanji
                    and (number <= last[scope] or glued and number[0] > last[scope][0] + 3
                         or bare and not scope and number[0] > last[scope][0] + 3
                         and not _opens_article(following.get(index, "")))):
                caption = _flush(current, caption)
                _append_body(current, ln)
                continue
            if (not booklet and not supplement and number == (1,) and scope in last and bare
                    and not _opens_article(following.get(index, ""))):
                # A bare 「第一条」 after the articles, its next line no sentence (「国家公務員
                # 共済組合法（以下「法」という」): a 読替え table's cell, not a new regulation.
                caption = _flush(current, caption)
                _append_body(current, ln)
                continue
            units.append(current)
            label = _label_of(_HEAD.match(norm).group())
            if booklet or (not supplement and number == (1,) and scope in last):
                # A 附則 of plain paragraphs, then 第1条 again: the next regulation of
                # a booklet begins (a 附則 with articles opens with 第1条 directly). Its
                # articles are a scope of their own: [2] for the second regulation.
                supplement, levels = None, {}
                restarts += 1
                scope = f"[{restarts}]"
            seen_article = True
            last[scope] = number
            cap = a.group(3) or (_CAPTION.match(caption.norm).group(1) if caption else "")
            cap = re.sub(r"(?<=[^\x00-\x7f])\s+(?=[^\x00-\x7f])", "", cap)   # 「(懲 戒)」
            heading = supplement or _heading_path(levels)
            current = _Unit(("附則" if supplement else "") + label, cap.strip(), heading,
                            ([caption] if caption else []) + [ln], scope=scope)
            caption = None
            continue
        _append_body(current, ln)
    if caption is not None:
        current.lines.append(caption)
    units.append(current)
    # A 附則 heading followed by articles leaves an empty "附則" unit: drop it, and
    # drop a preamble that is only the title, dates or a table of contents.
    return [u for u in units if _has_body(u)]


# 「第五十五条から第六十三条まで」 on one line and 「削除」 on the next (japan-law's
# Markdown puts every heading on a line of its own): one deleted range, as if written
# on one line.
_RANGE_ONLY = re.compile(rf"^(?:{_ONE}(?:\s*(?:、|,|及び)\s*{_ONE})+|{_ONE}\s*から\s*{_ONE}\s*まで)$")
_DELETED = re.compile(r"^(?:削\s*除|[(]\s*削\s*除\s*[)])$")


def _join_deleted_ranges(lines: list[Line]) -> list[Line]:
    out: list[Line] = []
    for ln in lines:
        prev = next((i for i in range(len(out) - 1, -1, -1) if out[i].norm), None)
        if (prev is not None and _DELETED.match(ln.norm) and _RANGE_ONLY.match(out[prev].norm)
                and all(not x.norm for x in out[prev + 1:])):
            head = out[prev]
            out[prev] = make_line(f"{head.text.strip()}　{ln.text.strip()}", head.page)
            continue
        out.append(ln)
    return out


def _opens_article(norm: str) -> bool:
    """An article's first sentence: text that ends a sentence outside brackets (not
    「組合員期間（…をいう。以下同じ。）」, a table cell), not a heading or an amount."""
    bare = norm
    while (stripped := re.sub(r"[(][^()]*[)]|「[^「」]*」", "", bare)) != bare:
        bare = stripped
    return (has_sentence_end(bare) and not _HEAD.match(norm)
            and not re.match(r"^[0-9〇一二三四五六七八九十百千万]+(?:分の|円|年|月|日|%)", norm))


def _numbers(head: str) -> tuple[int, ...]:
    """第七十四条の二の二 -> (74, 2, 2): article numbers compare as tuples."""
    return tuple(parse_number(n) for n in re.findall(rf"{NUMBER}", nfkc(head)))


def _flush(unit: _Unit, caption: Line | None) -> None:
    """A caption line that waited for an article whose heading turned out to be body text
    goes into the text where it stood (before that line)."""
    if caption is not None:
        unit.lines.append(caption)
    return None


def _append_body(unit: _Unit, ln: Line) -> None:
    """Add a line to an article; a line 「２　…」 numbered next in sequence opens a 項."""
    m = _PARAGRAPH.match(ln.norm)
    if m and unit.article and int(m.group(1)) == len(unit.paragraph_starts) + 1:
        unit.paragraph_starts.append(len(unit.lines))
    unit.lines.append(ln)


def _has_body(unit: _Unit) -> bool:
    if unit.article and unit.article != "附則":
        return True
    if unit.article == "附則":      # a 附則 with any text (an excerpt may cut its sentence)
        s = _SUPPLEMENT.match(unit.lines[0].norm) if unit.lines else None
        return bool(s and s.group(2)) or len(unit.lines) > 1
    body = [ln.norm for ln in unit.lines]
    if unit.article == "附則" and body:      # 「附 則 この規則は…から施行する。」 on one line
        s = _SUPPLEMENT.match(body[0])
        body[0] = (s.group(2) or "") if s else body[0]
    return any(has_sentence_end(b) for b in body)


# --------------------------------------------------------------------------- 申合せ items

def _item_pattern(lines: list[Line]) -> re.Pattern | None:
    """Numbered top-level items (１　… ２　…) in a document without articles."""
    for pattern in (_ITEM_DIGIT, _ITEM_KANJI):
        numbers = [parse_number(m.group(1)) for ln in lines if (m := pattern.match(ln.norm))]
        if numbers[:2] == [1, 2]:
            return pattern
    return None


def _item_units(lines: list[Line], pattern: re.Pattern) -> list[_Unit]:
    units: list[_Unit] = []
    levels: dict[str, str] = {}
    current = _Unit("", "", "")
    caption: Line | None = None    # 「（卒業研究着手要件）」 waiting for its item
    expected = 1
    for ln in lines:
        if not ln.norm:
            continue
        if (h := _is_heading(ln.norm)) is not None:
            _set_heading(levels, h, ln)
            continue
        m = pattern.match(ln.norm)
        if m and parse_number(m.group(1)) == expected:   # in sequence: not a stray number
            units.append(current)
            cap = _CAPTION.match(caption.norm).group(1) if caption else ""
            current = _Unit(f"第{expected}項", cap, _heading_path(levels),
                            ([caption] if caption else []) + [ln])
            caption = None
            expected += 1
            continue
        if caption is not None:
            current.lines.append(caption)
            caption = None
        if _CAPTION.match(ln.norm):
            caption = ln
            continue
        current.lines.append(ln)
    if caption is not None:
        current.lines.append(caption)
    units.append(current)
    return [u for u in units if _has_body(u)]


# --------------------------------------------------------------------------- prose

def _prose_units(lines: list[Line]) -> list[_Unit]:
    """Paragraphs (blank-line separated) under their Markdown headings."""
    units: list[_Unit] = []
    heading_stack: list[tuple[int, str]] = []
    current = _Unit("", "", "")
    for ln in lines:
        md = re.match(r"^(#{1,6})\s+(.*)$", ln.text.strip())
        if md:
            level = len(md.group(1))
            heading_stack = [h for h in heading_stack if h[0] < level] + [(level, md.group(2))]
            units.append(current)
            # Level 1 is the document title, already in every passage's header.
            current = _Unit("", "", " > ".join(h for lv, h in heading_stack if lv > 1))
            continue
        if not ln.norm:
            units.append(current)
            current = _Unit("", "", current.heading)
            continue
        current.lines.append(ln)
    units.append(current)
    return [u for u in units if u.lines]


def _with_unique_ids(passages: list[Passage]) -> list[Passage]:
    """ids `source#key@hash`: key is the article (+ 項 range), or for prose the section
    heading and the paragraph's number within it, so inserting a paragraph in one
    section does not renumber the rest of the document."""
    seen: dict[str, int] = {}
    for p in passages:
        if p.article:
            key = p.key
            n = seen.get(key, 0) + 1
            if n > 1:        # 附則 of several amendments repeat article numbers
                key = f"{key}~{n}"
            seen[p.key] = n
        else:
            section = p.heading or "本文"
            n = seen.get("\0" + section, 0) + 1
            seen["\0" + section] = n
            key = f"{section} 段落{n}"
        p.id = f"{p.source}#{key}@{content_hash(p.text)}"
    return passages


def change_key(passage_id: str, source: str) -> str:
    """The article-level part of a passage id (第42条, 第42条第2項, 窓口 段落3)."""
    return passage_id[len(source) + 1:passage_id.rindex("@")]
