"""Question -> passages -> answer: the one path `rag ask`, `rag chat`, `rag eval` and
`rag serve` take.

    prepared = answerer.prepare(question, history)   # history fitted, retrieval, packing,
                                                     # the abstention decision, the prompt
    generation = <any engine, now or later, here or in the server's worker>
    answer = answerer.finish(prepared, generation)   # the Answer: text, sources, timings,
                                                     # then each of answerer.finishers

`ask` does both around `Generator.generate`, `answer_batch` around `generate_batch`, and
the server (rag/serve/answering.py) around its model worker. An abstaining answer
(nothing relevant retrieved, nothing fits) needs no generation: `finish(prepared, None)`.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest.errors import RagError

from .citations import sources_json
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
    # What rag.trust's finisher adds (left empty by an Answerer without it):
    evidence: list = field(default_factory=list)          # rag.evidence.Evidence, best first
    rests_on: set[str] | None = None         # passage ids the answer cites or quotes
    citations_attached: list[dict] = field(default_factory=list)   # post-hoc (in `text` too)
    grounding: object | None = None          # rag.grounding.Grounding
    needs_check: bool = False                # 要確認: a number of the text is in no passage
    abstention: dict | None = None           # the calibrated decision, when the index has one
    strict_replaced: bool = False            # --strict-grounding replaced the text by a quote

    def to_json(self) -> dict:
        sources = sources_json(self.sources)
        for s in sources:
            s["rests_on"] = self.rests_on is not None and s["id"] in self.rests_on
        return {
            "question": self.question, "answer": self.text, "abstained": self.abstained,
            "retrieval": self.retrieval,
            "sources": sources,
            "evidence": [e.to_json() for e in self.evidence],
            "citations_attached": self.citations_attached,
            "grounding": self.grounding.to_json() if self.grounding is not None else None,
            "needs_check": self.needs_check,
            "abstention": self.abstention,
            "strict_replaced": self.strict_replaced,
            "timings": {k: round(v, 3) if isinstance(v, float) else v
                        for k, v in self.timings.items()},
        }


# The fields an answer's JSON carries beyond text and sources (rag.trust): the server
# adds them to /v1 responses as its "rag" object.
TRUST_FIELDS = ("evidence", "citations_attached", "grounding", "needs_check", "abstention",
                "strict_replaced")


def unstreamed(streamed: str, final: str) -> str:
    """What a reader who was streamed `streamed` still needs of the finished `final`:
    the rest when it continues the streamed text (an appended citation note), all of it
    after a blank line when it replaced it, "" when it is the same."""
    core = streamed.strip()
    return final[len(core):] if final.startswith(core) else "\n\n" + final


@dataclass
class Prepared:
    """A question ready to generate (`Answerer.prepare`): the prompt and the sources it
    carries, or the decision to abstain (then `sources` are the nearest passages and
    there is nothing to generate), how to decode, and what was timed so far."""
    question: str
    prompt: str
    sources: list[Source]
    abstained: bool
    retrieval: bool
    options: GenerationOptions
    timings: dict = field(default_factory=dict)
    history: list[Turn] = field(default_factory=list)
    check: object | None = None    # rag.trust.PreCheck: signals and decision before generation

    @property
    def hold(self) -> bool:
        """The text may be replaced when it is finished (--strict-grounding, or a decision
        failed grounding could tip): stream it only whole, at the end."""
        return bool(getattr(self.check, "hold", False))


# A step of `Answerer.finish` after the Answer is built: (answer, prepared) -> answer.
Finisher = Callable[[Answer, Prepared], Answer]


class Answerer:
    """Retrieves, packs the context into the generator's window, and generates.

    `finishers`: steps run in order on every finished Answer, abstentions included (the
    place for evidence, citation and number checks): each takes (answer, prepared) and
    returns the answer, changed or not. `precheck(question, hits, retriever)`: run after
    retrieval, before the prompt is built (rag.trust.Trust.before); a PreCheck whose
    decision abstains means nothing is generated.

    `system`: text added to the prompt's instruction (a /v1 system message; set on a
    copy, `using`), None for the project's prompt unchanged."""
    system: str | None = None

    def __init__(self, generator: Generator, retriever=None, *, k: int = 5,
                 mode: str = "hybrid", min_score: float | None = None,
                 options: GenerationOptions = GenerationOptions(),
                 follow_references: bool = True, context_tokens: int | None = None,
                 finishers: Sequence[Finisher] = (), precheck: Callable | None = None):
        self.generator, self.retriever = generator, retriever
        self.k, self.mode, self.min_score = k, mode, min_score
        self.options = options
        self.follow_references = follow_references
        self.context_tokens = context_tokens
        self.finishers = list(finishers)
        self.precheck = precheck

    def using(self, retriever) -> "Answerer":
        """The same answerer over another retriever (the server's live index)."""
        other = copy.copy(self)
        other.retriever = retriever
        return other

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
                render(tok, question, [], history, self.system)) > self.budget() // 2:
            history.pop(0)
        return history

    def build(self, question: str, sources: list[Source] | None,
              history: Sequence[Turn] = ()) -> tuple[str, list[Source]]:
        """The prompt and the sources it carries, never over the budget."""
        tok = self.generator.tokenizer
        if sources is None:
            return render(tok, question, None, history, self.system), []

        def fits(chosen: list[Source]) -> bool:
            prompt = render(tok, question, [s.context() for s in chosen], history, self.system)
            return self.generator.count_tokens(prompt) <= self.budget()

        chosen = pack(sources, fits, self.retriever, self.follow_references)
        if not chosen and sources and self.context_tokens:
            # Under a tight budget the best article may not fit whole: its opening
            # sentences beat abstaining for want of room.
            chosen = [s for s in [shorten(sources[0], fits)] if s]
        prompt = render(tok, question, [s.context() for s in chosen], history, self.system)
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

    def decide(self, question: str, hits=None, history: Sequence[Turn] = (), *,
               retrieval: bool = True) -> tuple[str, list[Source], bool]:
        """(prompt, sources, abstained) for a question whose hits are already retrieved:
        the one abstention decision. It abstains when nothing relevant was retrieved, or
        when no passage fits the window (the sources are then the nearest passages)."""
        if not retrieval:
            return self.build(question, None, history)[0], [], False
        sources = [Source(h.passage, h.score) for h in hits]
        if not self.is_relevant(hits):
            return "", sources, True
        prompt, chosen = self.build(question, sources, history)
        return (prompt, chosen, False) if chosen else ("", sources, True)

    def prepare(self, question: str, history: Sequence[Turn] = (), *, retrieval: bool = True,
                hits=None, max_new_tokens: int | None = None,
                timings: dict | None = None, judge: bool = True) -> Prepared:
        """History fitted to the window, retrieval (unless `hits` are given: a batch
        retrieved together), packing, the abstention decision and the prompt.
        `max_new_tokens` caps this answer below the configured length (a server
        request's); `timings` are what the caller measured before (the server's wait).
        `judge=False` skips the calibrated decision (evaluation's oracle context)."""
        if not question.strip():
            raise AnswerError("the question is empty")
        timings = {"model_load_s": self.generator.load_s, **(timings or {})}
        history = self.fit_history(question, history)
        if retrieval and hits is None:
            if self.retriever is None:
                raise AnswerError("retrieval needs an index")
            hits, timings["retrieval_ms"] = self.retrieve(question, history)
        started = time.perf_counter()
        check = self.precheck(question, hits if retrieval else None, self.retriever) \
            if self.precheck and judge else None
        if retrieval and getattr(getattr(check, "decision", None), "abstain", False):
            prompt, sources, abstained = "", [Source(h.passage, h.score) for h in hits], True
        else:
            prompt, sources, abstained = self.decide(question, hits, history,
                                                     retrieval=retrieval)
        timings["prompt_ms"] = (time.perf_counter() - started) * 1000
        if not abstained:
            timings["prompt_tokens"] = self.generator.count_tokens(prompt)
        options = self.options
        if max_new_tokens is not None and max_new_tokens != options.max_new_tokens:
            options = GenerationOptions(max_new_tokens, options.temperature)
        return Prepared(question, prompt, sources, abstained, retrieval, options, timings,
                        history, check)

    def finish(self, prepared: Prepared, gen: Generation | None, **timings) -> Answer:
        """The Answer of a prepared question and its generation (None when it abstained):
        the text, its sources, the timings (`timings`: the caller's own, such as the
        server's queue time), then each of `self.finishers` in order."""
        t = dict(prepared.timings)
        if prepared.abstained or gen is None:
            t.update(timings)
            answer = Answer(prepared.question, ABSTAIN_ANSWER, prepared.sources, True, True,
                            "", t)
        else:
            if gen.first_token_ms and t.get("prompt_tokens"):
                t["prefill_tokens_per_s"] = t["prompt_tokens"] / (gen.first_token_ms / 1000)
            t.update(first_token_ms=gen.first_token_ms, tokens_per_s=gen.tokens_per_s,
                     decode_tokens_per_s=gen.decode_tokens_per_s,
                     generated_tokens=gen.new_tokens, stopped_at_eos=gen.stopped_at_eos,
                     **timings)
            answer = Answer(prepared.question, gen.text.strip(), prepared.sources, False,
                            prepared.retrieval, prepared.prompt, t)
        started = time.perf_counter()
        for step in self.finishers:
            answer = step(answer, prepared)
        # The checks' own time (evidence, numbers, citations), reported like the others.
        answer.timings["checks_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return answer

    def ask(self, question: str, history: Sequence[Turn] = (), *, retrieval: bool = True,
            on_text: Callable[[str], None] | None = None) -> Answer:
        """`on_text` is given the text as it is generated, then what the finishers changed
        (`unstreamed`); an answer that may be replaced (`Prepared.hold`) comes whole at
        the end."""
        prepared = self.prepare(question, history, retrieval=retrieval)
        if prepared.abstained:
            if on_text:
                on_text(ABSTAIN_ANSWER)
            answer = self.finish(prepared, None)
            if on_text and (rest := unstreamed(ABSTAIN_ANSWER, answer.text)):
                on_text(rest)
            return answer
        streamed: list[str] = []

        def relay(text: str):
            streamed.append(text)
            return on_text(text)

        sink = relay if on_text and not prepared.hold else None
        gen = self.generator.generate(prepared.prompt, prepared.options, on_text=sink)
        answer = self.finish(prepared, gen)
        if on_text and (rest := unstreamed("".join(streamed), answer.text)):
            on_text(rest)
        return answer

    def answer_batch(self, questions: list[str], hits: list | None = None, *,
                     judge: bool = True) -> list[Answer]:
        """Answers for many questions at once (evaluation): the same decision as `ask`
        for each, the prompts generated together (greedy). `hits`: each question's
        retrieved passages, or None to answer without retrieval; `judge=False`: no
        calibrated abstention decision (the oracle's gold context)."""
        retrieval = hits is not None
        prepared = [self.prepare(q, retrieval=retrieval, hits=h, judge=judge)
                    for q, h in zip(questions, hits or [None] * len(questions))]
        prompts = [p.prompt for p in prepared if not p.abstained]
        options = GenerationOptions(self.options.max_new_tokens)      # greedy
        generations = iter(self.generator.generate_batch(prompts, options) if prompts else [])
        return [self.finish(p, None if p.abstained else next(generations)) for p in prepared]
