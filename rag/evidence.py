"""Evidence: the sentences of the packed articles that an answer rests on.

A student should see the one to three sentences that decide the question, quoted exactly
as the regulation writes them (with offsets into the passage text, so a page can
highlight them), not the eight passages the prompt carried. Sentences are scored by
character-bigram overlap (after NFKC; no morphological analyser needed) with the answer
and with the question's key terms, by the answer's numbers they contain, and by whether
the answer cites their article. Deterministic: the same inputs give the same evidence.

Also here: which sources the answer rests on (cited or supporting) versus the other
candidates, and citations attached after the fact when the model cited nothing.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ingest.japanese import citations, nfkc, split_sentences
from ingest.passage import Passage

# Words of almost every question that say nothing about which article answers it.
# Removed before bigrams are taken, so 「学生が休学する場合について」 keys on 休学.
STOP_WORDS = ("について", "に関して", "教えてください", "教えて", "ください", "どのような",
              "どのくらい", "どれくらい", "どうすれば", "どうなり", "いつから", "いつまで",
              "できますか", "ありますか", "ですか", "ますか", "でしょうか", "とは",
              "学生", "規程", "規則", "学則", "細則", "大学", "場合", "必要", "何", "いつ",
              "いくら", "本学")

_WORD = re.compile(r"[^\W_]+")          # runs of letters and digits (kana, kanji, ASCII)
_HIRAGANA = re.compile(r"^[\u3040-\u309f]+$")
_HAS_KANA_OR_DIGIT = re.compile(r"[\u3040-\u309f0-9]")


def bigrams(text: str) -> set[str]:
    """Character bigrams of the NFKC text, within runs of word characters (a bigram
    never spans punctuation or a space)."""
    out: set[str] = set()
    for run in _WORD.findall(nfkc(text)):
        out.update(run[i:i + 2] for i in range(len(run) - 1))
    return out


def key_terms(question: str) -> set[str]:
    """The question's content bigrams: stop words removed, and none with hiragana (the
    particles and endings around words: 「で1」「か取」「ます」) or digits (a question's
    numbers describe the student's case, 「15単位しか」; numbers are compared apart)."""
    text = nfkc(question)
    for w in STOP_WORDS:
        text = text.replace(nfkc(w), " ")
    return {b for b in bigrams(text) if not _HAS_KANA_OR_DIGIT.search(b)}


def content_bigrams(text: str) -> set[str]:
    """Bigrams without the hiragana-only ones (「ます」「され」), which every sentence has."""
    return {b for b in bigrams(text) if not _HIRAGANA.match(b)}


def cited_labels(answer: str) -> list[str]:
    """The article labels an answer cites, canonical and in order, each once:
    「学則第四十二条第２項」 -> 第42条."""
    out: list[str] = []
    for _, _, label in citations(answer):
        if label not in out:
            out.append(label)
    return out


@dataclass(frozen=True)
class Evidence:
    passage_id: str
    source: str
    title: str
    article: str        # 第42条 (what a citation names)
    label: str          # 第42条（除籍）第2項 (what a reader is shown)
    quote: str          # exactly passage.text[start:end]
    start: int
    end: int
    score: float

    def to_json(self) -> dict:
        return {**asdict(self), "score": round(self.score, 4)}

    @property
    def citation(self) -> str:
        return f"{self.title}{self.article}"


def _passage(src) -> Passage:
    """A Source (rag/context.py), a Hit (rag/retrieve.py) or a Passage."""
    return getattr(src, "passage", src)


def sentence_spans(passage: Passage) -> list[tuple[int, int]]:
    """(start, end) of each sentence of the passage text, surrounding whitespace left
    out. PDF text breaks lines for layout only, so there a line break ends nothing."""
    spans, pos = [], 0
    for piece in split_sentences(passage.text, newline_breaks=passage.page is None):
        lead = len(piece) - len(piece.lstrip())
        body = piece.strip()
        # A caption line 「（除籍）」 or a bare item number is no evidence of anything.
        if len("".join(_WORD.findall(nfkc(body)))) >= 4:
            spans.append((pos + lead, pos + lead + len(body)))
        pos += len(piece)
    return spans


def _coverage(wanted: set[str], have: set[str]) -> float:
    return len(wanted & have) / len(wanted) if wanted else 0.0


def _fbeta(wanted: set[str], have: set[str], beta: float = 2.0) -> float:
    """Recall-weighted F of `wanted` (the answer's bigrams) in `have` (a sentence's): a
    sentence that contains the answer matters most, a long one is only mildly penalised."""
    common = len(wanted & have)
    if not common:
        return 0.0
    p, r = common / len(have), common / len(wanted)
    return (1 + beta ** 2) * p * r / (beta ** 2 * p + r)


def score_sentences(question: str, answer: str, sources: Sequence) -> list[Evidence]:
    """Every sentence of the sources, scored; best first (ties: source order, then
    position), one copy of a sentence that several editions share."""
    from .grounding import numbers_in           # grounding builds on this module

    a_grams, k_terms = content_bigrams(answer), key_terms(question)
    a_numbers = numbers_in(answer) - numbers_in(question)
    cited = set(cited_labels(answer))
    # Without an answer (retrieval only, or an abstention) the question alone decides.
    w_answer, w_terms = (1.0, 0.5) if a_grams else (0.0, 1.0)
    scored, seen = [], set()
    for rank, src in enumerate(sources):
        p = _passage(src)
        # A sentence is read in its article: an item 「四 …１６単位に満たない者」 says
        # nothing of 除籍 itself, its article (title, caption, lead sentence) does.
        in_article = 0.3 * _coverage(k_terms, bigrams(p.search_text()))
        for pos, (start, end) in enumerate(sentence_spans(p)):
            quote = p.text[start:end]
            key = "".join(nfkc(quote).split())
            if key in seen:
                continue
            seen.add(key)
            s_grams = content_bigrams(quote)
            score = (w_answer * _fbeta(a_grams, s_grams) + w_terms * _coverage(k_terms, s_grams)
                     + in_article)
            if a_numbers:
                score += 0.5 * len(a_numbers & numbers_in(quote)) / len(a_numbers)
            if p.article and p.article in cited:
                score += 0.2
            scored.append((-score, rank, pos, Evidence(p.id, p.source, p.title, p.article,
                                                       p.label, quote, start, end, score)))
    scored.sort(key=lambda t: t[:3])
    return [e for *_, e in scored]


def select_evidence(question: str, answer: str, sources: Sequence, k: int = 3,
                    min_score: float = 0.15, relative: float = 0.6) -> list[Evidence]:
    """The 1–`k` sentences that best support the answer: the best one, and the next
    ones that score at least `relative` of it; none that scores under `min_score`."""
    ranked = score_sentences(question, answer, sources)
    if not ranked or ranked[0].score < min_score:
        return []
    floor = max(min_score, relative * ranked[0].score)
    return [e for e in ranked[:k] if e.score >= floor]


def _named(before: str, titles: set[str]) -> set[str]:
    """The titles that the text right before a citation names (「履修規程第9条」): those
    sharing the longest ending with it, at least two characters; empty when none does."""
    def tail(t: str) -> int:
        n = 0
        while n < min(len(before), len(t)) and before[-1 - n] == t[-1 - n]:
            n += 1
        return n
    scores = {t: tail(nfkc(t)) for t in titles}
    best = max(scores.values(), default=0)
    return {t for t, v in scores.items() if v == best} if best >= 2 else set()


# Text before 第N条 that names a regulation (「…履修規程」「…学則」「大学設置基準」).
_REGULATION = re.compile(r"(規程|規則|学則|細則|申合せ|要項|要綱|内規|基準|法|令)$")


def cited_passages(answer: str, sources: Sequence) -> set[str]:
    """Ids of the sources whose article the answer cites; a citation that names a
    regulation (「履修規程第9条」) counts only for that regulation's passages."""
    text, out = nfkc(answer), set()
    passages = [_passage(s) for s in sources]
    titles = {p.title for p in passages if p.title}
    for start, _, label in citations(text):
        before = text[max(0, start - 40):start]
        named = _named(before, titles)
        if not named and _REGULATION.search(before):
            continue            # 「履修規程第9条」 of a regulation none of the sources is
        out.update(p.id for p in passages
                   if p.article == label and (not named or p.title in named))
    return out


def split_sources(answer: str, sources: Sequence, evidence: Sequence[Evidence]):
    """(rests_on, others): the sources the answer cites or quotes as evidence, and the
    other candidates (その他の候補), each in the order given."""
    used = cited_passages(answer, sources) | {e.passage_id for e in evidence}
    rests = [s for s in sources if _passage(s).id in used]
    return rests, [s for s in sources if _passage(s).id not in used]


def posthoc_citations(answer: str, evidence: Sequence[Evidence],
                      relative: float = 0.85) -> list[dict]:
    """Citations to attach when the answer cites no article: one per article of the
    evidence that scores at least `relative` of the best (a weaker supporting sentence
    is shown, not cited), in evidence order ({"source", "title", "article", "text":
    学則第42条}). Empty when the answer cites something itself, or no evidence has an
    article."""
    if citations(answer) or not evidence:
        return []
    out, seen = [], set()
    best = max(e.score for e in evidence)
    for e in evidence:
        if e.article and e.score >= relative * best and (e.source, e.article) not in seen:
            seen.add((e.source, e.article))
            out.append({"source": e.source, "title": e.title, "article": e.article,
                        "text": e.citation})
    return out


def citation_note(cites: Sequence[dict]) -> str:
    """What the caller appends to an answer: 「（根拠: 学則第42条、履修規程第9条）」."""
    return f"（根拠: {'、'.join(c['text'] for c in cites)}）" if cites else ""
