"""Retrieval metrics against gold articles.

A gold article counts as found when a retrieved passage is that article of that
document, or a split part of it (第42条 split at 項 is still 第42条).
"""
from __future__ import annotations

import re as _re
import unicodedata as _ud

from ingest.japanese import citations, nfkc
from ingest.passage import Passage

from ..prompt import abstained  # noqa: F401  (evaluation counts what the core recognises)
from .questions import Gold


def is_gold(passage: Passage, gold: Gold) -> bool:
    """Strict: the passage is the gold article (what a citation needs)."""
    return passage.source == gold.file and passage.article == gold.article


def contains_gold(passage: Passage, gold: Gold) -> bool:
    """Lenient: the passage is the gold article or a passage of the same document whose
    text holds its heading (an unsplit page or a prose block around it)."""
    if is_gold(passage, gold):
        return True
    if passage.source != gold.file or passage.article:
        return False
    label = gold.article.removeprefix("附則")
    return _re.search(rf"{_re.escape(label)}(?![0-9の])", "".join(nfkc(passage.text).split())) is not None


def first_gold_rank(passages: list[Passage], golds: list[Gold], match=is_gold) -> int | None:
    """1-based rank of the first passage that is any gold article, or None."""
    for rank, p in enumerate(passages, start=1):
        if any(match(p, g) for g in golds):
            return rank
    return None


def gold_recall(passages: list[Passage], golds: list[Gold], match=is_gold) -> float:
    """Share of the gold articles found among `passages` (multi-article questions)."""
    if not golds:
        return 0.0
    return sum(any(match(p, g) for p in passages) for g in golds) / len(golds)


def retrieval_scores(passages: list[Passage], golds: list[Gold], k: int,
                     match=is_gold) -> dict:
    """One answerable question's retrieval scores within the first k passages: hit@1,
    hit@k, reciprocal rank of the first gold article (mrr) and recall@k of all gold
    articles. `match` is is_gold (strict) or contains_gold (lenient)."""
    top = passages[:k]
    rank = first_gold_rank(top, golds, match)
    return {"hit@1": float(rank == 1), "hit@k": float(rank is not None),
            "mrr": 1 / rank if rank else 0.0, "recall@k": gold_recall(top, golds, match)}


def retrieval_summary(results: list[list[Passage]], golds: list[list[Gold]], k: int,
                      match=is_gold) -> dict:
    """retrieval_scores averaged over the answerable questions (those with gold)."""
    rows = [retrieval_scores(r, g, k, match) for r, g in zip(results, golds) if g]
    if not rows:
        return {"questions": 0, "k": k}
    return {"questions": len(rows), "k": k,
            **{key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}}


# --------------------------------------------------------------------------- answers
#
# Japanese has no spaces between words, so answer overlap is measured on characters
# after NFKC, with whitespace and punctuation removed (「１６単位。」 == "16単位").

# Phrases a system uses when the regulations do not cover a question.


def _chars(text: str) -> str:
    """NFKC, without whitespace and punctuation/symbols: what character overlap counts.
    A point or comma between digits stays (1.5 is not 15)."""
    t = nfkc(text)
    out = []
    for i, c in enumerate(t):
        if c in ".," and 0 < i < len(t) - 1 and t[i - 1].isdigit() and t[i + 1].isdigit():
            out.append(c)
        elif not c.isspace() and not _ud.category(c).startswith(("P", "S")):
            out.append(c)
    return "".join(out)


def _contains(text: str, key: str) -> bool:
    """`key` in `text`, where a key starting or ending with a digit must not continue a
    longer number (「24単位」 is not in 「124単位」)."""
    start = text.find(key)
    while start >= 0:
        end = start + len(key)
        before_ok = not (key[0].isdigit() and start > 0 and text[start - 1].isdigit())
        after_ok = not (key[-1].isdigit() and end < len(text) and text[end].isdigit())
        if before_ok and after_ok:
            return True
        start = text.find(key, start + 1)
    return False


def _light(text: str) -> str:
    """NFKC without whitespace; symbols stay, so they still separate numbers."""
    return "".join(c for c in nfkc(text) if not c.isspace())


def must_include(answer: str, keys: list[str]) -> bool:
    """All key strings present (after NFKC, ignoring spaces and the key's surrounding
    punctuation), a number never matching inside a longer one."""
    a = _light(answer)
    return all(_contains(a, _light(k).strip("。、.,!?！？「」()（）")) for k in keys)


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
    """(the text just before, article label) for each citation in an answer:
    「学則第42条」, 「第四十二条」, 「附則第2条」, 「申合せ第3項」 (the numbered items of an
    申合せ are labelled 第N項); 第42条第2項 is one citation of 第42条."""
    text = nfkc(answer)
    return [(text[max(0, start - 40):start], label) for start, _, label in citations(text)]


def _suffix_overlap(before: str, name: str) -> int:
    n = 0
    while n < min(len(before), len(name)) and before[-1 - n] == name[-1 - n]:
        n += 1
    return n


def citation_correct(answer: str, golds: list[Gold], titles: dict[str, str]) -> bool:
    """The answer cites at least one gold article: the same label, and the regulation it
    names right before (if any) is the gold document's — the title (or file name) that
    shares the longest ending with the text before 第N条 (「…に関する規程第9条」 names the
    免除規程, not the 履修規程)."""
    names = {f: {nfkc(t), nfkc(f.rsplit(".", 1)[0])} for f, t in titles.items()}
    for before, label in cited_articles_in_answer(answer):
        scores = {f: max(_suffix_overlap(before, n) for n in ns) for f, ns in names.items()}
        best = max(scores.values(), default=0)
        named = {f for f, v in scores.items() if v == best} if best >= 2 else None
        for g in golds:
            if label == g.article and (named is None or g.file in named):
                return True
    return False


# ----------------------------------------------------------------- citation precision
#
# ALCE-style, but deterministic: a citation is a 第N条 the answer mentions (resolved to
# the regulation it names, if any) or one attached after the fact (which knows its
# document). Precision: the share of citations that are gold articles (or, against the
# context, articles the prompt carried); recall: the share of gold articles cited.

def _citation_files(answer: str, titles: dict[str, str]) -> list[tuple[set[str] | None, str]]:
    """(the files a mention may mean — None for any —, label) per citation of `answer`."""
    names = {f: {nfkc(t), nfkc(f.rsplit(".", 1)[0])} for f, t in titles.items()}
    out = []
    for before, label in cited_articles_in_answer(answer):
        scores = {f: max(_suffix_overlap(before, n) for n in ns) for f, ns in names.items()}
        best = max(scores.values(), default=0)
        out.append(({f for f, v in scores.items() if v == best} if best >= 2 else None, label))
    return out


def citation_scores(answer: str, golds: list[Gold], titles: dict[str, str],
                    attached: list[tuple[str, str]] = (),
                    context: list[tuple[str, str]] = ()) -> dict:
    """Citation precision and recall of one answer.

    `attached`: (file, article) citations the system added (post-hoc attribution);
    `context`: the (file, article) pairs of the packed passages. Returns
    citation_precision (cited that are gold), citation_recall (gold that are cited),
    context_precision (cited that the prompt carried), context_recall (gold articles
    in the context that are cited) and cited (how many distinct); a share
    with nothing to count (no citation, no gold) is None rather than 0 or 1."""
    cites = []
    for c in _citation_files(answer, titles) + [({f}, a) for f, a in attached]:
        # The same article cited twice counts once; so does a bare 第42条 after 学則第42条.
        if c not in cites and not (c[0] is None and any(a == c[1] for _, a in cites)):
            cites.append(c)
    gold = {(g.file, g.article) for g in golds}

    def hits(files: set[str] | None, label: str, pairs: set[tuple[str, str]]) -> set:
        return {(f, a) for f, a in pairs if a == label and (files is None or f in files)}

    ctx = set(context)
    n = len(cites)
    return {
        "cited": n,
        "citation_precision": sum(bool(hits(f, a, gold)) for f, a in cites) / n
        if n and gold else None,
        "citation_recall": len(set().union(*(hits(f, a, gold) for f, a in cites))) / len(gold)
        if gold else None,
        "context_precision": sum(bool(hits(f, a, ctx)) for f, a in cites) / n
        if n and ctx else None,
        # Of the gold articles the prompt did carry, the share cited: a citation miss,
        # apart from a retrieval miss.
        "context_recall": len(set().union(*(hits(f, a, gold & ctx) for f, a in cites)))
        / len(gold & ctx) if gold & ctx else None,
    }
