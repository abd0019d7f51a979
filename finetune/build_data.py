"""Training examples for answering from context (RAFT-style), built from the corpus
and question sets.

For each answerable question: the gold article(s) among retrieved distractors, in a
shuffled order, and a target answer that first quotes the deciding clause of the gold
article, then answers, then cites (see `raft_answer`); and one example whose context
lacks the gold articles, answered with the abstaining answer. Unanswerable questions get
their retrieved passages and the abstaining answer.

The prompt (instruction + input) is exactly what `rag ask` builds (rag/prompt.py is the
one prompt module); only the target answer's layout (`ANSWER_LAYOUT`) is this module's,
recorded in every row, so what an adapter learned to write is known apart from what it
is shown.

Questions may also be synthesized per article by a generator (finetune/synthesize.py),
and documents may be split so that no evaluation document is trained on
(`document_split`).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

from ingest.japanese import nfkc
from rag.context import Source
from rag.evaluation.metrics import is_gold
from rag.evaluation.questions import Question, check_gold, load_questions
from rag.evidence import select_evidence, sentence_spans
from rag.prompt import ABSTAIN_ANSWER, INSTRUCTION_WITH_CONTEXT, context_input

# The target answer's layout: 1 = 「条文: 「quote」」 / 「回答: answer」 / 「根拠: 文書名第N条」.
# Bump it when the layout of target answers changes (the prompt's own version is
# rag.prompt.PROMPT_VERSION, which this module does not touch).
ANSWER_LAYOUT = 1
QUOTE_MAX = 160           # longest quoted sentence, in characters (longer: its best clause)

# A citation in parentheses inside a reference answer: 「（試験及び成績評価に関する細則第3条第2項）」.
_CITATION_PAREN = re.compile(r"[（(][^（）()]*第[0-9０-９一二三四五六七八九十百千]+条[^（）()]*[）)]")


def strip_citations(answer: str) -> str:
    """The reference answer without its parenthesised citations (the target cites at its
    end, in one form): 「…発表されます（細則第3条第2項）。」 -> 「…発表されます。」"""
    return re.sub(r"\s+([。、])", r"\1", _CITATION_PAREN.sub("", answer)).strip()


def _clause(sentence: str, wanted: Iterable[str]) -> str:
    """A long sentence cut to the clause (between 、 or ，) that holds a wanted phrase, or
    its start; never mid-word: pieces are whole clauses of the original text."""
    if len(sentence) <= QUOTE_MAX:
        return sentence
    pieces = re.split(r"(?<=[、，,])", sentence)
    for w in wanted:
        w = nfkc(w)
        for i, piece in enumerate(pieces):
            if w and w in nfkc(piece):
                out = piece
                j = i + 1
                while j < len(pieces) and len(out) + len(pieces[j]) <= QUOTE_MAX:
                    out += pieces[j]
                    j += 1
                return out.rstrip("、，,")
    out = ""
    for piece in pieces:
        if len(out) + len(piece) > QUOTE_MAX:
            break
        out += piece
    return (out or sentence[:QUOTE_MAX]).rstrip("、，,")


def deciding_clause(question: Question, answer: str, gold_passages: list) -> tuple[str, object] | None:
    """(quote, passage): the sentence of the gold passages that decides the question, as
    rag/evidence.py's `select_evidence` picks it for the reference answer (one sentence,
    exactly as the regulation writes it; a long one cut to its clause holding a
    must-include phrase). A must-include phrase the chosen sentence lacks but another
    sentence has wins over the bigram score. None when the gold passages have no
    sentence to quote."""
    if not gold_passages:
        return None
    best = select_evidence(question.question, answer, gold_passages, k=3, min_score=0.0)
    by_id = {p.id: p for p in gold_passages}
    must = [nfkc(m) for m in question.must_include if m.strip()]
    if must:                       # prefer a sentence that holds the key facts
        with_fact = [e for e in best if any(m in nfkc(e.quote) for m in must)]
        if not with_fact:
            for p in gold_passages:
                for s, e in sentence_spans(p):
                    if any(m in nfkc(p.text[s:e]) for m in must):
                        return _clause(p.text[s:e], must), p
        best = with_fact or best
    if not best:
        return None
    e = best[0]
    return _clause(e.quote, must), by_id.get(e.passage_id, gold_passages[0])


def citation_text(passages: list) -> str:
    """「東雲大学情報科学部学則第42条、履修規程第9条」: each gold article once, in order."""
    seen: list[str] = []
    for p in passages:
        c = f"{p.title}{p.article}"
        if p.article and c not in seen:
            seen.append(c)
    return "、".join(seen)


def raft_answer(question: Question, gold_passages: list) -> str:
    """The target answer: the deciding clause quoted, the answer, the citation.

        条文: 「学生が次の各号のいずれかに該当するときは、学長は除籍する。」
        回答: 一学年度の修得単位が16単位に満たない場合です。…
        根拠: 東雲大学情報科学部学則第42条
    """
    body = strip_citations(question.answer)
    lines = []
    clauses = []
    for g in question.gold:     # one quote per gold article (multi-article questions)
        ps = [p for p in gold_passages if is_gold(p, g)]
        found = deciding_clause(question, body, ps)
        if found and found[0] not in clauses:
            clauses.append(found[0])
    if clauses:
        lines.append("条文: " + "".join(f"「{c}」" for c in clauses[:2]))
    lines.append(f"回答: {body}")
    cite = citation_text(gold_passages)
    if cite:
        lines.append(f"根拠: {cite}")
    return "\n".join(lines)


# ---------------------------------------------------------------- document split

def document_group(passage) -> str:
    """What a document split keeps together: editions of one regulation share a title
    (富山大学学則 2016/2019/2023), so they go to the same side; untitled: the file."""
    return passage.title or passage.source


def _side(key: str, seed: int, eval_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
    return "eval" if h / 2 ** 64 < eval_fraction else "train"


def document_split(passages, *, eval_fraction: float = 0.0, seed: int = 0,
                   exclude: Iterable[str] = ()) -> tuple[set[str], set[str]]:
    """(train sources, eval sources): every document of the index on one side, by a
    stable hash of its group (`document_group`) so that editions stay together; a group
    with a document in `exclude` (the documents of evaluation question sets) is eval."""
    exclude = set(exclude)
    groups: dict[str, set[str]] = {}
    for p in passages:
        groups.setdefault(document_group(p), set()).add(p.source)
    train, held = set(), set()
    for key, sources in groups.items():
        if sources & exclude or _side(key, seed, eval_fraction) == "eval":
            held |= sources
        else:
            train |= sources
    return train, held


def split_questions(questions: list[Question], eval_sources: set[str], *, seed: int = 0,
                    eval_fraction: float = 0.0) -> tuple[list[Question], list[Question]]:
    """(train, eval) questions: a question goes to eval when any of its gold documents is
    an eval document; a question without gold (unanswerable) by a stable hash of its id."""
    train, held = [], []
    for q in questions:
        if q.gold:
            side = "eval" if any(g.file in eval_sources for g in q.gold) else "train"
        else:
            side = _side("q:" + q.id, seed, eval_fraction)
        (held if side == "eval" else train).append(q)
    return train, held


def question_documents(paths: Iterable[Path]) -> set[str]:
    """The gold documents of question sets (to keep them out of training)."""
    return {g.file for path in paths for q in load_questions(path) for g in q.gold}


# ---------------------------------------------------------------- examples

def build(retriever, questions_path: Path | None = None, *, k: int = 4, seed: int = 0,
          negatives: float = 1.0, questions: list[Question] | None = None,
          raft: bool = True, sources: set[str] | None = None) -> list[dict]:
    """Rows for the questions of `questions_path` (or `questions`, already loaded and
    checked). `negatives`: the share of answerable questions that also get a row whose
    context lacks the answer (target: abstain), chosen at random with `seed`.
    `raft=False` keeps the reference answer as it is written (the layout before RAFT
    targets). `sources`: the training documents of a split; no passage of another
    document is shown, not even as a distractor."""
    rng = random.Random(seed)
    rows = []
    if questions is None:
        questions = load_questions(questions_path)
        check_gold(questions, retriever.passages, questions_path)
    if not questions:
        return rows
    hits = retriever.search_many([q.question for q in questions],
                                 k=k + 4 if sources is None else k + 12)
    for q, hs in zip(questions, hits):
        retrieved = [h.passage for h in hs if sources is None or h.passage.source in sources]
        gold = [p for g in q.gold for p in retriever.article(g.file, g.article)]
        distractors = [p for p in retrieved if not any(is_gold(p, g) for g in q.gold)]
        if q.gold:
            if q.answer.strip():
                context = gold + distractors[:max(0, k - len(gold))]
                rng.shuffle(context)
                output = raft_answer(q, gold) if raft else q.answer
                rows.append(_row(q, context, output, "answer"))
            if distractors and rng.random() < negatives:
                rows.append(_row(q, distractors[:k], ABSTAIN_ANSWER, "abstain"))
        else:
            rows.append(_row(q, retrieved[:k], ABSTAIN_ANSWER, "unanswerable"))
    return rows


def _row(q, passages, output: str, kind: str) -> dict:
    return {"instruction": INSTRUCTION_WITH_CONTEXT,
            "input": context_input(q.question, [Source(p).context() for p in passages]),
            "output": output, "id": q.id, "kind": kind, "answer_layout": ANSWER_LAYOUT,
            "context": [f"{p.source}#{p.article}" for p in passages]}


def write(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_questions(questions: list[Question], out: Path) -> None:
    """A question set in the project's schema (what `rag eval` reads)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for q in questions:
            fh.write(json.dumps({"id": q.id, "question": q.question, "answer": q.answer,
                                 "must_include": q.must_include,
                                 "gold": [{"file": g.file, "article": g.article} for g in q.gold],
                                 "type": q.type}, ensure_ascii=False) + "\n")
