"""Question -> passages -> answer: the path `rag ask`, `rag chat` and evaluation share."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest.errors import RagError

from .context import Source, pack, shorten
from .generation.base import Generation, GenerationOptions, Generator
from .prompt import ABSTAIN_ANSWER, Turn, render


class AnswerError(RagError):
    """A question that cannot be answered as asked (too long for the model's window)."""


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]                    # what the prompt carried (or, abstaining, the nearest)
    abstained: bool
    retrieval: bool
    prompt: str = ""
    timings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "question": self.question, "answer": self.text, "abstained": self.abstained,
            "retrieval": self.retrieval,
            "sources": [{"n": i, **s.to_json()} for i, s in enumerate(self.sources, start=1)],
            "timings": {k: round(v, 3) if isinstance(v, float) else v
                        for k, v in self.timings.items()},
        }


class Answerer:
    """Retrieves, packs the context into the generator's window, and generates."""

    def __init__(self, generator: Generator, retriever=None, *, k: int = 5,
                 mode: str = "hybrid", min_score: float | None = None,
                 options: GenerationOptions = GenerationOptions(),
                 follow_references: bool = True, context_tokens: int | None = None):
        self.generator, self.retriever = generator, retriever
        self.k, self.mode, self.min_score = k, mode, min_score
        self.options = options
        self.follow_references = follow_references
        self.context_tokens = context_tokens

    # ------------------------------------------------------------------ prompt

    def budget(self) -> int:
        """Prompt tokens allowed: the window minus room for the answer, or the
        `context_tokens` cap when that is smaller (a CPU's prefill budget)."""
        room = self.generator.context_window - self.options.max_new_tokens
        return min(room, self.context_tokens) if self.context_tokens else room

    def fit_history(self, question: str, history: Sequence[Turn]) -> list[Turn]:
        """Drop the oldest turns until the question and history leave room for context."""
        history = list(history)
        tok = self.generator.tokenizer
        while history and self.generator.count_tokens(
                render(tok, question, [], history)) > self.budget() // 2:
            history.pop(0)
        return history

    def build(self, question: str, sources: list[Source] | None,
              history: Sequence[Turn] = ()) -> tuple[str, list[Source]]:
        """The prompt and the sources it carries, never over the budget."""
        tok = self.generator.tokenizer
        if sources is None:
            return render(tok, question, None, history), []

        def fits(chosen: list[Source]) -> bool:
            prompt = render(tok, question, [s.context() for s in chosen], history)
            return self.generator.count_tokens(prompt) <= self.budget()

        chosen = pack(sources, fits, self.retriever, self.follow_references)
        if not chosen and sources and self.context_tokens:
            # Under a tight budget the best article may not fit whole: its opening
            # sentences beat abstaining for want of room.
            chosen = [s for s in [shorten(sources[0], fits)] if s]
        prompt = render(tok, question, [s.context() for s in chosen], history)
        if self.generator.count_tokens(prompt) > self.budget():
            raise AnswerError(f"the question and conversation alone exceed the prompt budget "
                             f"({self.budget()} tokens)")
        return prompt, chosen

    # ------------------------------------------------------------------ answer

    def retrieve(self, question: str, history: Sequence[Turn] = ()):
        """Hits for the question, and the milliseconds retrieval took. A follow-up is
        searched together with the previous question so 「では休学中は？」 still finds
        the topic of the conversation."""
        query = question if not history else f"{history[-1].question} {question}"
        started = time.perf_counter()
        hits = self.retriever.search(query, k=self.k, mode=self.mode)
        return hits, (time.perf_counter() - started) * 1000

    def is_relevant(self, hits) -> bool:
        """False when nothing was retrieved, or the best dense similarity is under
        `min_score` (in bm25 mode there is no similarity: only "nothing" abstains)."""
        if not hits:
            return False
        scores = [h.dense_score for h in hits if h.dense_score is not None]
        return self.min_score is None or not scores or max(scores) >= self.min_score

    def prepare(self, question: str, hits=None, history: Sequence[Turn] = (), *,
                retrieval: bool = True) -> tuple[str, list[Source], bool]:
        """(prompt, sources, abstained) for a question whose hits are already retrieved:
        the one decision `rag ask`, `rag chat` and batch evaluation share. It abstains
        when nothing relevant was retrieved, or when no passage fits the window (the
        sources are then the nearest passages)."""
        if not retrieval:
            return self.build(question, None, history)[0], [], False
        sources = [Source(h.passage, h.score) for h in hits]
        if not self.is_relevant(hits):
            return "", sources, True
        prompt, chosen = self.build(question, sources, history)
        return (prompt, chosen, False) if chosen else ("", sources, True)

    def ask(self, question: str, history: Sequence[Turn] = (), *, retrieval: bool = True,
            on_text: Callable[[str], None] | None = None) -> Answer:
        if not question.strip():
            raise AnswerError("the question is empty")
        timings: dict = {"model_load_s": self.generator.load_s}
        history = self.fit_history(question, history)
        if retrieval and self.retriever is None:
            raise AnswerError("retrieval needs an index")
        hits = None
        if retrieval:
            hits, timings["retrieval_ms"] = self.retrieve(question, history)
        started = time.perf_counter()
        prompt, sources, abstained = self.prepare(question, hits, history, retrieval=retrieval)
        timings["prompt_ms"] = (time.perf_counter() - started) * 1000
        if abstained:
            if on_text:
                on_text(ABSTAIN_ANSWER)
            return Answer(question, ABSTAIN_ANSWER, sources, True, True, "", timings)
        timings["prompt_tokens"] = self.generator.count_tokens(prompt)
        gen = self.generator.generate(prompt, self.options, on_text=on_text)
        if gen.first_token_ms:
            timings["prefill_tokens_per_s"] = timings["prompt_tokens"] / (gen.first_token_ms / 1000)
        return self._answer(question, gen, sources, retrieval, prompt, timings)

    def answer_batch(self, questions: list[str], hits: list | None = None) -> list[Answer]:
        """Answers for many questions at once (evaluation): the same decision as `ask`
        for each, the prompts generated together. `hits`: each question's retrieved
        passages, or None to answer without retrieval."""
        retrieval = hits is not None
        prepared = [self.prepare(q, h, retrieval=retrieval)
                    for q, h in zip(questions, hits or [None] * len(questions))]
        prompts = [p for p, _, abstain in prepared if not abstain]
        options = GenerationOptions(self.options.max_new_tokens)      # greedy
        generations = iter(self.generator.generate_batch(prompts, options) if prompts else [])
        out = []
        for q, (prompt, sources, abstain) in zip(questions, prepared):
            if abstain:
                out.append(Answer(q, ABSTAIN_ANSWER, sources, True, True, "", {}))
            else:
                timings = {"prompt_tokens": self.generator.count_tokens(prompt)}
                out.append(self._answer(q, next(generations), sources, retrieval, prompt,
                                        timings))
        return out

    @staticmethod
    def _answer(question: str, gen: Generation, sources: list[Source], retrieval: bool,
                prompt: str, timings: dict) -> Answer:
        timings.update(first_token_ms=gen.first_token_ms, tokens_per_s=gen.tokens_per_s,
                       decode_tokens_per_s=gen.decode_tokens_per_s,
                       generated_tokens=gen.new_tokens, stopped_at_eos=gen.stopped_at_eos)
        return Answer(question, gen.text.strip(), sources, False, retrieval, prompt, timings)
