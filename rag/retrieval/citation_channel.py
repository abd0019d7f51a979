"""A ranking channel for articles a question names: 「金融商品取引法第5条第6項により…」.

A question that cites an article by number asks about that article first of all, and
neither BM25 nor a dense model can tell 第5条 from 第50条 reliably (the number is one
token among hundreds). The cited articles come first in this channel, in the order the
question names them; the document is the one whose title the question writes right
before the number (the longest such title: 金融商品取引法施行令 over 金融商品取引法),
else any document whose title the question contains, else every document (a bare
「第8条」). Kanji numerals read as digits (第二十四条の二 = 第24条の2).
"""
from __future__ import annotations

import re

from ingest.japanese import nfkc
from ingest.passage import Passage

_NUM = "0-9〇一二三四五六七八九十百千"
_CITE = re.compile(rf"(附則)?第([{_NUM}]+)条((?:の[{_NUM}]+)*)")
_KANJI = "〇一二三四五六七八九"


def _to_int(s: str) -> int:
    if s.isdigit():
        return int(s)
    total, cur = 0, 0
    for ch in s:
        if ch in "十百千":
            total += (cur or 1) * {"十": 10, "百": 100, "千": 1000}[ch]
            cur = 0
        else:
            cur = cur * 10 + _KANJI.index(ch)
    return total + cur


def cited_articles(query: str, titles: dict[str, str]) -> list[tuple[str | None, str]]:
    """[(source or None for any document, article label)] in the order cited."""
    q = nfkc(query)
    out: list[tuple[str | None, str]] = []
    named = [s for s, t in titles.items() if t and t in q]
    for m in _CITE.finditer(q):
        label = (m.group(1) or "") + f"第{_to_int(m.group(2))}条" + "".join(
            f"の{_to_int(b)}" for b in re.findall(rf"の([{_NUM}]+)", m.group(3)))
        before = q[:m.start()]
        right_before = [s for s, t in titles.items() if t and before.endswith(t)]
        if right_before:
            longest = max(len(titles[s]) for s in right_before)
            sources = [s for s in right_before if len(titles[s]) == longest]
        else:
            sources = named or [None]
        for s in sources:
            if (s, label) not in out:
                out.append((s, label))
    return out


def citation_ranking(query: str, titles: dict[str, str],
                     articles: dict[tuple[str, str], list[int]],
                     passages: list[Passage]) -> list[tuple[int, float]]:
    """(passage index, score) of the cited articles' passages, cited order first.
    `articles`: passage indices by (source, article)."""
    out: list[tuple[int, float]] = []
    seen: set[int] = set()
    cites = cited_articles(query, titles)
    for rank, (source, label) in enumerate(cites):
        keys = [(source, label)] if source else [k for k in articles if k[1] == label]
        for key in keys:
            for i in articles.get(key, []):
                if i not in seen:
                    seen.add(i)
                    out.append((i, float(len(cites) - rank)))
    return out
