"""Passages within the embedder's window: an article longer than `max_tokens` is
split at 項, then at sentence ends (。！？ outside brackets), a sentence over the budget
at 、 and, as a last resort, by characters; each part is labelled with its 項 range."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import RagError
from .japanese import nfkc, split_sentences
from .lines import join_lines
from .passage import Passage

if TYPE_CHECKING:
    from .splitter import _Unit

TokenCounter = Callable[[str], int]
_CAPTION = re.compile(r"^[(]([^()]{1,30})[)]$")


class SplitError(RagError):
    """A setting that makes splitting impossible (max_tokens below the passage header)."""


def unit_passages(unit: "_Unit", title: str, source: str, max_tokens: int | None,
                   count: TokenCounter, prose: bool) -> list[Passage]:
    def make(text: str, paragraph: str = "") -> Passage:
        return Passage(id="", source=source, title=title, heading=unit.heading,
                       article=unit.article, caption=unit.caption, paragraph=paragraph,
                       page=unit.page, text=text, scope=unit.scope)

    whole = make(join_lines(unit.lines))
    if max_tokens is None or count(whole.search_text()) <= max_tokens:
        return [whole]
    # Room for the header, including the longest 項 label a part could carry. Each
    # count includes the prefix and special tokens once; pieces are charged without.
    n = len(unit.paragraph_starts)
    budget = max_tokens - count(make("", f"第{n}項〜第{n}項").search_text()) - 2
    if budget < 8:
        raise SplitError(f"{source}: max_tokens={max_tokens} leaves no room for text after "
                         f"the passage header {make('').header()!r}")
    overhead = count("")

    def cost(text: str) -> int:
        return count(nfkc(text)) - overhead

    # Pieces that may end a passage: 項 (for articles), then sentences. PDF line
    # breaks are layout, not sentence ends, so only text files break at newlines.
    pieces: list[tuple[str, int, bool]] = []   # (text, 項 number, opens the 項)
    bounds = unit.paragraph_starts + [len(unit.lines)]
    for number, (a, b) in enumerate(zip(bounds, bounds[1:]), start=1):
        text = join_lines(unit.lines[a:b])
        if cost(text) <= budget:
            pieces.append((text, number, True))
            continue
        sentences = _sentences_within(text, budget, cost, newline_breaks=unit.page is None)
        pieces.extend((s, number, i == 0) for i, s in enumerate(sentences))
    parts: list[list[tuple[str, int, bool]]] = [[]]
    used = 0
    for piece in pieces:
        n = cost(piece[0])
        if parts[-1] and used + n > budget:
            parts.append([])
            used = 0
        parts[-1].append(piece)
        used += n
    out = []
    for part in parts:
        first, last = part[0][1], part[-1][1]
        label = "" if prose else (f"第{first}項" if first == last else f"第{first}項〜第{last}項")
        text = "".join(("\n" if opens and i else "") + t for i, (t, _, opens) in enumerate(part))
        out.append(make(text.strip("\n"), label))
    return out


# No token spans more characters than this: a window this many times the budget holds
# more than one passage's worth of text, whatever the tokenizer.
_CHARS_PER_TOKEN = 16


def _cut_by_characters(clause: str, budget: int, cost: TokenCounter) -> tuple[list[str], str]:
    """(pieces of about `budget` tokens cut off the front of `clause`, the rest that
    fits): no 、 to cut at. Each cut is estimated from a window of the text ahead, about
    twice the last piece, not from the whole rest, so that a line of megabytes without
    、 or 。 is cut in linear time (counting the whole rest at every cut was quadratic)."""
    pieces, at, span = [], 0, 2 * budget
    while True:
        window = clause[at:at + span]
        n = cost(window)
        if n <= budget:
            if at + len(window) == len(clause):
                return pieces, window                # the rest fits
            if span < budget * _CHARS_PER_TOKEN:
                span *= 2                            # denser than thought: look further
                continue
            cut = len(window)
        else:
            cut = max(1, len(window) * budget // n)
        pieces.append(window[:cut])
        at += cut
        span = max(16, 2 * cut)


def _sentences_within(text: str, budget: int, cost: TokenCounter,
                      newline_breaks: bool) -> list[str]:
    """Sentences of `text`; a single sentence over budget is cut at 、 and, as a last
    resort, by characters, since the embedder would otherwise silently truncate it."""
    sentences = split_sentences(text, newline_breaks=newline_breaks)
    # A caption line 「（目的）」 is not a sentence of its own: it stays with the next.
    merged: list[str] = []
    for s in sentences:
        if merged and _CAPTION.match(nfkc(merged[-1]).strip()):
            merged[-1] += s
        else:
            merged.append(s)
    out: list[str] = []
    for sentence in merged:
        if cost(sentence) <= budget:
            out.append(sentence)
            continue
        chunk = ""
        for clause in re.split(r"(?<=[、，,])", sentence):
            if chunk and cost(chunk + clause) > budget:
                out.append(chunk)
                chunk = ""
            pieces, clause = _cut_by_characters(clause, budget, cost)
            out.extend(pieces)
            chunk += clause
        if chunk:
            out.append(chunk)
    return out


