"""Choose the passages a prompt carries, counted in the generator's tokens.

Passages go in rank order while the whole rendered prompt, plus room for the
answer, fits the model's window; a passage is never cut. Then articles the packed
ones cite in the same document (「第8条に規定する」, 「前条」) are added while they fit,
marked with the article that cited them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ingest.japanese import NUMBER, article_label, nfkc, parse_number
from ingest.passage import Passage

from .prompt import ContextPassage

# 第8条 / 第15条の2, unless it names another regulation (学則第8条, 規程第3条 …).
_REF = re.compile(rf"(?<![則程法令律せ])第({NUMBER})条(?:の({NUMBER}))?")
_PREV_NEXT = re.compile(r"(前|次)条")
_LABEL = re.compile(r"^(附則)?第(\d+)条(?:の(\d+))?$")


@dataclass
class Source:
    passage: Passage
    score: float | None = None
    via: str | None = None          # the article that cited it, for cross-references

    def context(self) -> ContextPassage:
        return ContextPassage(self.passage.title, self.passage.label, self.passage.text)


def cited_articles(passage: Passage) -> list[str]:
    """Labels of the articles of the same document that `passage` refers to."""
    text = nfkc(passage.text)
    own = _LABEL.match(passage.article)
    prefix = "附則" if passage.article.startswith("附則") else ""
    out: list[str] = []
    for m in _REF.finditer(text):
        label = prefix + article_label(parse_number(m.group(1)),
                                       parse_number(m.group(2)) if m.group(2) else None)
        if label != passage.article and label not in out:
            out.append(label)
    if own and not own.group(3):           # 前条/次条 of a plain 第N条
        n = int(own.group(2))
        for m in _PREV_NEXT.finditer(text):
            label = prefix + article_label(n - 1 if m.group(1) == "前" else n + 1)
            if n - 1 >= 1 and label not in out:
                out.append(label)
    return out


def pack(candidates: list[Source], fits: Callable[[list[Source]], bool],
         lookup: Callable[[str, str], list[Passage]], follow_references: bool = True
         ) -> list[Source]:
    """Sources in rank order while `fits(sources)`; then cited articles while they fit."""
    chosen: list[Source] = []
    for src in candidates:
        if fits(chosen + [src]):
            chosen.append(src)
    if not follow_references:
        return chosen
    have = {s.passage.id for s in chosen}
    for src in list(chosen):
        for label in cited_articles(src.passage):
            parts = [p for p in lookup(src.passage.source, label) if p.id not in have]
            if not parts:
                continue
            extra = [Source(p, None, src.passage.article) for p in parts]
            if fits(chosen + extra):
                chosen.extend(extra)
                have.update(p.id for p in parts)
    return chosen
