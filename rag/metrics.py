"""Retrieval metrics against gold articles.

A gold article counts as found when a retrieved passage is that article of that
document, or a split part of it (第42条 split at 項 is still 第42条).
"""
from __future__ import annotations

from ingest.passage import Passage

from .questions import Gold


def is_gold(passage: Passage, gold: Gold) -> bool:
    return passage.source == gold.file and passage.article == gold.article


def first_gold_rank(passages: list[Passage], golds: list[Gold]) -> int | None:
    """1-based rank of the first passage that is any gold article, or None."""
    for rank, p in enumerate(passages, start=1):
        if any(is_gold(p, g) for g in golds):
            return rank
    return None


def gold_recall(passages: list[Passage], golds: list[Gold]) -> float:
    """Share of the gold articles found among `passages` (multi-article questions)."""
    if not golds:
        return 0.0
    return sum(any(is_gold(p, g) for p in passages) for g in golds) / len(golds)


def retrieval_summary(results: list[list[Passage]], golds: list[list[Gold]], k: int) -> dict:
    """hit@1, hit@k, MRR (within the k results) and gold recall@k over answerable questions."""
    rows = [(r[:k], g) for r, g in zip(results, golds) if g]
    if not rows:
        return {"questions": 0}
    ranks = [first_gold_rank(r, g) for r, g in rows]
    n = len(rows)
    return {
        "questions": n,
        "hit@1": sum(1 for x in ranks if x == 1) / n,
        f"hit@{k}": sum(1 for x in ranks if x is not None) / n,
        "mrr": sum(1 / x for x in ranks if x) / n,
        f"recall@{k}": sum(gold_recall(r, g) for r, g in rows) / n,
    }


# --------------------------------------------------------------------------- answers
#
# Japanese has no spaces between words, so answer overlap is measured on characters
# after NFKC, with whitespace and punctuation removed (「１６単位。」 == "16単位").

import re as _re  # noqa: E402
import unicodedata as _ud  # noqa: E402

from ingest.japanese import nfkc  # noqa: E402

# Phrases a system uses when the regulations do not cover a question.
ABSTENTION_MARKERS = ("見当たりません", "定めがありません", "定めがなく", "規定はありません",
                      "規程にはありません", "回答できません", "わかりません", "分かりません",
                      "記載がありません", "定められていません")
_CITATION = _re.compile(r"([^\s、。()（）「」]{0,20}?)第(\d+)条(?:の(\d+))?")


def _chars(text: str) -> str:
    """NFKC, without whitespace and punctuation/symbols: what character overlap counts."""
    return "".join(c for c in nfkc(text)
                   if not c.isspace() and not _ud.category(c).startswith(("P", "S")))


def must_include(answer: str, keys: list[str]) -> bool:
    """All key strings present (after NFKC and ignoring spaces/punctuation)."""
    a = _chars(answer)
    return all(_chars(k) in a for k in keys)


def char_f1(answer: str, reference: str) -> float:
    """Character-level F1 over the multiset of characters."""
    from collections import Counter
    a, r = Counter(_chars(answer)), Counter(_chars(reference))
    common = sum((a & r).values())
    if not common:
        return 0.0
    p, rec = common / sum(a.values()), common / sum(r.values())
    return 2 * p * rec / (p + rec)


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure on characters (longest common subsequence)."""
    a, r = _chars(answer), _chars(reference)
    if not a or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for ca in a:
        cur = [0]
        for j, cr in enumerate(r, start=1):
            cur.append(prev[j - 1] + 1 if ca == cr else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    p, rec = lcs / len(a), lcs / len(r)
    return 2 * p * rec / (p + rec)


def cited_articles_in_answer(answer: str) -> list[tuple[str, str]]:
    """(regulation name as written, article label) for each 「学則第42条」 in an answer;
    the name is "" when the answer cites a bare 第42条."""
    out = []
    for m in _CITATION.finditer(nfkc(answer)):
        run = _re.search(r"[\u4e00-\u9fff\u30a0-\u30ff々]+$", m.group(1))
        name = run.group() if run else ""
        label = f"第{int(m.group(2))}条" + (f"の{int(m.group(3))}" if m.group(3) else "")
        if name.endswith("附則"):
            name, label = name[:-2], "附則" + label
        out.append((name, label))
    return out


def citation_correct(answer: str, golds: list[Gold], titles: dict[str, str]) -> bool:
    """The answer cites at least one gold article: same article label, and the named
    regulation (if any) is the gold document's (its title ends with the name or the
    file name starts with it)."""
    for name, label in cited_articles_in_answer(answer):
        for g in golds:
            if label != g.article:
                continue
            title = titles.get(g.file, "")
            if not name or title.endswith(name) or g.file.startswith(name) or name in title:
                return True
    return False


def abstained(answer: str) -> bool:
    a = nfkc(answer)
    return any(nfkc(m) in a for m in ABSTENTION_MARKERS)
