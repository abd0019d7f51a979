"""Choose the passages a prompt carries, counted in the generator's tokens.

Passages go in rank order while the whole rendered prompt, plus room for the
answer, fits the model's window; a passage is never cut, except that under a
prompt budget (`[generate] context_tokens`) the best one may be shortened to its
first sentences rather than leave the prompt empty. Then the articles they
cite (「第8条に規定する」, 「前条」, 「学則第8条」) are added while they fit, marked in
the prompt and the sources with the article that cited them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from ingest.japanese import NUMBER, article_label, nfkc, parse_number
from ingest.passage import Passage

from .citations import cited_as, citation_json
from .prompt import ContextPassage

_REF = re.compile(rf"(附則)?第({NUMBER})条(?:の({NUMBER}))?")
_NEIGHBOUR = re.compile(r"(前|次)条")
_OWN_HEAD = re.compile(rf"(?m)^\s*第(?:{NUMBER})条(?:の(?:{NUMBER}))?")
# What may stand between two references that share a regulation: 「学則第8条又は第9条」.
_CONNECTOR = re.compile(r"^(?:第[0-9]+(?:項|号)|[、,]|又は|若しくは|及び|並びに|から|まで|ないし)*$")
# 「学則（以下「学則」という。）第22条」: the abbreviation defined just before the reference.
_DEFINED = re.compile(r"以下「([^」]+)」という。?\)$")
# A regulation's name written right before 第N条: a run of kanji/katakana (学則, 履修規程).
_NAME = re.compile(r"([\u4e00-\u9fff\u30a0-\u30ff々]+)$")


class Corpus(Protocol):
    def article(self, source: str, article: str) -> list[Passage]: ...
    def adjacent_article(self, source: str, article: str, offset: int) -> str | None: ...
    def resolve_document(self, name: str, current: str) -> str | None: ...


@dataclass
class Source:
    passage: Passage
    score: float | None = None
    via: str | None = None          # the article that cited it, for cross-references

    def to_json(self) -> dict:
        """The citation (rag.citations; an answer's sources add number, label, text, id)."""
        return citation_json(self)

    def context(self) -> ContextPassage:
        return ContextPassage(self.passage.title, cited_as(self.passage.label, self.via),
                              self.passage.text)


def cited_articles(passage: Passage, corpus: Corpus) -> list[tuple[str, str]]:
    """(source, article) of every article `passage` refers to, in order of mention."""
    # The article's own heading (第42条 at a line start) is not a reference; PDF lines
    # may break inside one (「学則第」/「５条に規定する」), so the rest is joined.
    text = _OWN_HEAD.sub("", nfkc(passage.text)).replace("\n", "")
    out: list[tuple[str, str]] = []
    prev_end, prev_doc = None, None
    for m in _REF.finditer(text):
        before = text[:m.start()]
        name = None if m.group(1) else _regulation_name(before)
        if name:
            doc = corpus.resolve_document(name, passage.source)
        elif prev_end is not None and _CONNECTOR.match(text[prev_end:m.start()]):
            doc = prev_doc                  # 「…第8条又は第9条」: the same regulation
        else:
            doc = passage.source
        prev_end, prev_doc = m.end(), doc
        if doc is None:                      # a law or a regulation not in the index
            continue
        # In 附則, a bare 第N条 means the main provisions; 附則第N条 says so itself.
        label = ("附則" if m.group(1) else "") + article_label(
            parse_number(m.group(2)), parse_number(m.group(3)) if m.group(3) else None)
        target = (doc, label)
        if target != (passage.source, passage.article) and target not in out:
            out.append(target)
    for m in _NEIGHBOUR.finditer(text):
        label = corpus.adjacent_article(passage.source, passage.article,
                                        -1 if m.group(1) == "前" else 1)
        if label and (passage.source, label) not in out:
            out.append((passage.source, label))
    return out


def _regulation_name(before: str) -> str | None:
    if (d := _DEFINED.search(before)) is not None:
        return d.group(1)
    m = _NAME.search(before)
    return m.group(1) if m else None


def pack(candidates: list[Source], fits: Callable[[list[Source]], bool],
         corpus: Corpus | None, follow_references: bool = True) -> list[Source]:
    """Sources in rank order while `fits(sources)`; then cited articles while they fit."""
    chosen: list[Source] = []
    for src in candidates:
        if fits(chosen + [src]):
            chosen.append(src)
    if not follow_references or corpus is None:
        return chosen
    have = {s.passage.id for s in chosen}
    for src in list(chosen):
        p = src.passage
        for source, label in cited_articles(p, corpus):
            parts = [q for q in corpus.article(source, label) if q.id not in have]
            if not parts:
                continue
            via = p.article if source == p.source else f"{p.title}{p.article}"
            extra = [Source(q, None, via) for q in parts]
            if fits(chosen + extra):
                chosen.extend(extra)
                have.update(q.id for q in parts)
    return chosen


_SENTENCE_END = re.compile(r"(?<=[。．\n])")
CUT_MARK = "（以下略）"


def shorten(src: Source, fits: Callable[[list[Source]], bool]) -> Source | None:
    """`src` cut after as many whole sentences (「。」 or line ends) as fit, marked
    （以下略） so neither the model nor the reader takes it for the whole article; None
    when not even the first sentence fits."""
    pieces = [p for p in _SENTENCE_END.split(src.passage.text) if p]
    best, lo, hi = None, 1, len(pieces) - 1
    while lo <= hi:                       # the longest prefix that fits, by bisection
        mid = (lo + hi) // 2
        text = "".join(pieces[:mid]).rstrip() + CUT_MARK
        cut = Source(replace(src.passage, text=text), src.score, src.via)
        if fits([cut]):
            best, lo = cut, mid + 1
        else:
            hi = mid - 1
    return best
