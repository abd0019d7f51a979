"""Training examples for answering from context, built from the corpus and questions.

For each answerable question: the retrieved passages with every gold article
included, plus distractors, in a shuffled order, and the reference answer citing
the article; and one example whose context lacks the gold articles, answered with
the abstaining answer. Unanswerable questions get their retrieved passages and the
abstaining answer. The prompt is exactly what `rag ask` builds (one prompt module).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from rag.context import Source
from rag.evaluation.metrics import is_gold
from rag.prompt import ABSTAIN_ANSWER, INSTRUCTION_WITH_CONTEXT, context_input
from rag.evaluation.questions import check_gold, load_questions


def build(retriever, questions_path: Path, *, k: int = 4, seed: int = 0,
          negatives: bool = True) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    qs = load_questions(questions_path)
    check_gold(qs, retriever.passages, questions_path)
    hits = retriever.search_many([q.question for q in qs], k=k + 4)
    for q, hs in zip(qs, hits):
        retrieved = [h.passage for h in hs]
        gold = [p for g in q.gold for p in retriever.article(g.file, g.article)]
        distractors = [p for p in retrieved if not any(is_gold(p, g) for g in q.gold)]
        if q.gold:
            context = gold + distractors[:max(0, k - len(gold))]
            rng.shuffle(context)
            rows.append(_row(q, context, q.answer, "answer"))
            if negatives and distractors:
                rows.append(_row(q, distractors[:k], ABSTAIN_ANSWER, "abstain"))
        else:
            rows.append(_row(q, retrieved[:k], ABSTAIN_ANSWER, "unanswerable"))
    return rows


def _row(q, passages, output: str, kind: str) -> dict:
    return {"instruction": INSTRUCTION_WITH_CONTEXT,
            "input": context_input(q.question, [Source(p).context() for p in passages]),
            "output": output, "id": q.id, "kind": kind,
            "context": [f"{p.source}#{p.article}" for p in passages]}


def write(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
