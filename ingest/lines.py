"""A line of a document as the splitter reads it: the original text for display and
its NFKC form for matching, with the page it came from."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .japanese import NUMBER, nfkc

_MD_PREFIX = re.compile(rf"^\s*(?:#{{1,6}}\s+|[-*+]\s+(?=第)|[0-9]{{1,3}}\.\s+(?=第\s*(?:{NUMBER})\s*条|[0-9]+\s))")


_MD_MARK = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+(?=第))")


@dataclass
class Line:
    text: str           # original for display (right-stripped; spacing undone)
    norm: str           # NFKC, stripped, list/markdown prefix removed: for matching
    page: int | None

    @property
    def display(self) -> str:
        """The text as passages show it (Markdown heading and list marks dropped)."""
        return _MD_MARK.sub("", self.text.strip()).strip()


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


def join_lines(lines: list[Line]) -> str:
    return "\n".join(ln.display for ln in lines)
