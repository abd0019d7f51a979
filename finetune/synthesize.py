"""Questions and reference answers synthesized per article by a generator, so a
department without a hand-written question set can still train.

Any of rag's generation backends (rag/generation/: the local model through
transformers or CTranslate2, or an OpenAI-compatible teacher with `[generate] backend =
"openai"`) reads one article at a time and writes a question, a short answer and the
answer's key phrase copied from the article. What it writes is kept only when it
passes `check` (the key phrase occurs in the article and in the answer, not in the
question; nothing missing; no repeats): a small model's output mostly does not.

The generation prompt comes from rag/prompt.py's `render_instruction` (the one prompt
module), with the article shown in the same fenced layout as an answering prompt.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ingest.japanese import nfkc
from rag.context import Source
from rag.evaluation.questions import Gold, Question
from rag.prompt import format_context, render_instruction

SYNTH_INSTRUCTION = (
    "あなたは大学の規程に詳しい職員です。入力の条文を読み、学生がこの条文について尋ねそうな"
    "質問を1つ作り、条文だけを根拠に簡潔に答えてください。"
    "次の3行の形式だけで書いてください。\n"
    "質問: （学生の質問）\n"
    "回答: （条文に基づく簡潔な回答）\n"
    "要点: （回答の決め手となる語句。条文からそのまま抜き出す）"
)

_FIELD = re.compile(r"^\s*[#*\-\s]*(質問|回答|要点)\s*[:：]\s*(.*?)\s*$", re.MULTILINE)
_QUOTES = "「」『』\"'“”‘’（）()【】"
MIN_SPAN = 2          # characters of a key phrase, after NFKC and spaces removed


@dataclass
class Draft:
    """One generated item, before it is checked."""
    question: str
    answer: str
    span: str


def parse(text: str) -> Draft | None:
    """The first 質問/回答/要点 lines of a generation (「質問:」 or 「質問：」, markdown bullets
    or bold around them tolerated); None when any of the three is missing or empty."""
    found: dict[str, str] = {}
    for m in _FIELD.finditer(text):
        key, value = m.group(1), m.group(2).strip().strip("*").strip()
        if key not in found and value:
            found[key] = value
    if len(found) < 3:
        return None
    return Draft(found["質問"], found["回答"], found["要点"].strip(_QUOTES + " 　"))


def _squash(text: str) -> str:
    """NFKC without whitespace: the extracted text of a PDF spaces and breaks lines at
    will (「6 月30 日」), a generated phrase does not."""
    return "".join(nfkc(text).split())


def check(draft: Draft | None, article_text: str) -> str | None:
    """Why a draft is rejected, or None when it is kept: its key phrase must occur in
    the article (the filter against invented answers) and in the answer, and must not
    be given away by the question."""
    if draft is None:
        return "unparsed"
    span, article = _squash(draft.span), _squash(article_text)
    if len(span) < MIN_SPAN:
        return "key phrase too short"
    if span not in article:
        return "key phrase not in the article"
    if span not in _squash(draft.answer):
        return "key phrase not in the answer"
    if span in _squash(draft.question):
        return "key phrase in the question"
    if len(_squash(draft.question)) < 5:
        return "question too short"
    return None


def articles(passages, sources: set[str] | None = None) -> list[tuple[str, str, list]]:
    """(source, article, passages) of every numbered article, in index order; only of
    `sources` when given (the training side of a document split)."""
    out: dict[tuple[str, str], list] = {}
    for p in passages:
        if p.article and (sources is None or p.source in sources):
            out.setdefault((p.source, p.article), []).append(p)
    return [(s, a, ps) for (s, a), ps in out.items()]


def synth_prompt(tokenizer, passages: list) -> str:
    """The generation prompt for one article (its passages, fenced as when answering)."""
    return render_instruction(tokenizer, SYNTH_INSTRUCTION,
                              format_context([Source(p).context() for p in passages]))


@dataclass
class SynthReport:
    articles: int = 0
    generated: int = 0
    kept: int = 0
    rejected: dict | None = None
    drafts: list | None = None      # every generation: source, article, text, why rejected

    def line(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted((self.rejected or {}).items(),
                                                      key=lambda t: -t[1]))
        return (f"synthesized {self.generated} drafts from {self.articles} articles: "
                f"kept {self.kept}" + (f"; rejected {why}" if why else ""))


def keep(drafts: list[tuple[str, str, list, str]], report: SynthReport | None = None
         ) -> list[Question]:
    """Questions from generated texts ((source, article, passages, text) each) that pass
    `check`, with the article as gold and the key phrase as must-include; repeated
    questions once."""
    report = report if report is not None else SynthReport()
    report.rejected = report.rejected or {}
    report.drafts = report.drafts if report.drafts is not None else []
    out, seen = [], set()
    for source, article, passages, text in drafts:
        report.generated += 1
        d = parse(text)
        why = check(d, "\n".join(p.text for p in passages))
        if why is None and _squash(d.question) in seen:
            why = "repeated question"
        report.drafts.append({"source": source, "article": article, "text": text,
                              "rejected": why})
        if why:
            report.rejected[why] = report.rejected.get(why, 0) + 1
            continue
        seen.add(_squash(d.question))
        report.kept += 1
        out.append(Question(id=f"syn-{len(out) + 1:04d}", question=d.question,
                            answer=d.answer, must_include=[d.span],
                            gold=[Gold(source, article)], type="lookup"))
    return out


def synthesize(generator, passages, *, sources: set[str] | None = None,
               max_articles: int | None = None, max_new_tokens: int = 160,
               batch_size: int = 4, max_prompt_tokens: int = 1024,
               report: SynthReport | None = None,
               log: Callable[[str], None] = lambda s: None) -> list[Question]:
    """Synthesized questions for the articles of `sources` (all when None), at most
    `max_articles` (an article whose prompt exceeds `max_prompt_tokens` is left out),
    generated `batch_size` at a time, greedy."""
    from rag.generation.base import GenerationOptions

    report = report if report is not None else SynthReport()
    limit = min(max_prompt_tokens, generator.context_window - max_new_tokens)
    todo = []
    for s, a, ps in articles(passages, sources):
        if max_articles is not None and len(todo) >= max_articles:
            break
        prompt = synth_prompt(generator.tokenizer, ps)
        if generator.count_tokens(prompt) <= limit:    # a long article: left out
            todo.append((s, a, ps, prompt))
    report.articles = len(todo)
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    drafts = []
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        prompts = [prompt for *_, prompt in chunk]
        gens = generator.generate_batch(prompts, options)
        drafts += [(s, a, ps, g.text) for (s, a, ps, _), g in zip(chunk, gens)]
        log(f"synthesize: {min(i + batch_size, len(todo))}/{len(todo)} articles")
    return keep(drafts, report)
