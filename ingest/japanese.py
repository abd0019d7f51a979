"""Japanese text helpers shared by the splitter, the tokenizer and the CLI.

Matching happens on NFKC-normalised text (第４２条 == 第42条, （ == (); the
original text is always kept for display.
"""
from __future__ import annotations

import re
import unicodedata

_KANJI_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5,
                 "六": 6, "七": 7, "八": 8, "九": 9}
_KANJI_UNITS = {"十": 10, "百": 100, "千": 1000}

# A number as it appears in article labels: ASCII digits (after NFKC) or kanji numerals.
NUMBER = r"[0-9]+|[〇零一二三四五六七八九十百千]+"



def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def parse_number(token: str) -> int:
    """'42', '４２', '四十二', '百二' -> int. Raises ValueError on anything else."""
    token = nfkc(token)
    if token.isdigit():
        return int(token)
    if not token or any(c not in _KANJI_DIGITS and c not in _KANJI_UNITS for c in token):
        raise ValueError(f"not a number: {token!r}")
    if all(c in _KANJI_DIGITS for c in token):  # positional form: 一〇二
        return int("".join(str(_KANJI_DIGITS[c]) for c in token))
    total, digit = 0, None
    for c in token:
        if c in _KANJI_DIGITS:
            digit = _KANJI_DIGITS[c]
        else:
            total += (1 if digit is None else digit) * _KANJI_UNITS[c]
            digit = None
    return total + (digit or 0)


_OPEN, _CLOSE = "（(「『【［[", "）)」』】］]"
_ENDS = "。．！？!?"   # some offices write ，． instead of 、。


def split_sentences(text: str, newline_breaks: bool = True) -> list[str]:
    """Split after 。！？ outside brackets: 「…を除く。）とする。」 is one sentence.

    With `newline_breaks`, a line break also ends a piece (headings, list items);
    without it (PDF text, where breaks are only layout) sentences span lines.
    Joining the pieces gives back `text` exactly.
    """
    out: list[str] = []
    depth, start = 0, 0
    for i, c in enumerate(text):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth = max(0, depth - 1)
        elif c == "\n" and newline_breaks:
            depth = 0                      # an unbalanced bracket never spans lines
        if (c in _ENDS and depth == 0) or (c == "\n" and newline_breaks):
            out.append(text[start:i + 1])
            start = i + 1
    if start < len(text):
        out.append(text[start:])
    # Whitespace-only pieces (a bare newline) belong to the previous sentence.
    merged: list[str] = []
    for piece in out:
        if merged and not piece.strip():
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def has_sentence_end(text: str) -> bool:
    """Whether a line holds a sentence (。 or ．, before or after NFKC) — not a heading."""
    return "。" in text or "．" in text or bool(re.search(r"\.(?!\d)", text))


def article_label(number: int, branch: int | None = None, *more: int) -> str:
    """The canonical article label: 第42条, 第15条の2, 第74条の2の2 (branches of branches)."""
    return f"第{number}条" + "".join(f"の{b}" for b in (branch, *more) if b)


def looks_japanese(text: str) -> float:
    """Share of characters that are kana or CJK ideographs (used to judge decodings)."""
    if not text:
        return 0.0
    jp = sum(1 for c in text if "\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff")
    return jp / len(text)


# An article citation as written in text: 第42条, 第四十二条, 第１５条の２, 附則第2条, and
# the numbered items of a 申合せ (第3項). 第42条第2項 is a citation of 第42条 (its 項 is
# part of the same citation, not a second one), so the pattern swallows it.
_LABEL = rf"(附則)?第\s*({NUMBER})\s*(条|項)((?:\s*の\s*(?:{NUMBER}))*)"
CITATION = re.compile(_LABEL + rf"(?:\s*第\s*(?:{NUMBER})\s*[項号])*")
_BRANCH = re.compile(rf"の\s*({NUMBER})")


def _citation_label(m: re.Match) -> str:
    branches = "".join(f"の{parse_number(b)}" for b in _BRANCH.findall(m.group(4) or ""))
    return (m.group(1) or "") + f"第{parse_number(m.group(2))}{m.group(3)}{branches}"


def citations(text: str) -> list[tuple[int, int, str]]:
    """(start, end, canonical label) of each article citation in `text`, the offsets into
    nfkc(text): 「学則第四十二条第2項」 -> 第42条, 「第１５条の２」 -> 第15条の2."""
    return [(m.start(), m.end(), _citation_label(m)) for m in CITATION.finditer(nfkc(text))]


def canonical_label(label: str) -> str:
    """An article label as the splitter writes it: 第五条 -> 第5条, 第４２条 -> 第42条,
    附則第二条 -> 附則第2条, 第十五条の二 -> 第15条の2. A label of any other shape (附則,
    第42条第2項, prose) comes back NFKC-normalised and without spaces."""
    text = "".join(nfkc(label).split())
    m = re.fullmatch(_LABEL, text)
    return _citation_label(m) if m else text
