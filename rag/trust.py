"""What makes an answer one a student can trust, run on every answer (rag ask/chat, rag
eval, /api/ask, /v1): the evidence it rests on, citations attached when the model gave
none, its numbers checked against the context, and the calibrated abstention decision.

`Trust` is both halves of that:
  - `before(question, hits, retriever)` (Answerer.prepare, before generation): the
    index's calibrated abstention model (INDEX/abstention.json, `rag calibrate`) decides
    on the retrieval signals alone; when it abstains nothing is generated. Without a
    calibrated model this is a no-op and `[generate] min_score` decides as before.
  - `__call__(answer, prepared)` (an Answerer finisher): evidence (rag.evidence),
    the numeric check (rag.grounding), the decision again with what generation added
    (the model's own 「定めが見当たりません」, failed grounding), --strict-grounding's
    quotation, post-hoc citations (appended to the text as 「（根拠: 学則第42条）」), and
    which sources the answer rests on.

Text the finisher changes after it was streamed: an appended citation note is streamed
as a last piece (`rag.answer.unstreamed`); an answer that may be replaced (strict
grounding on, or a decision that failed grounding could tip) is held back and given
whole at the end (`Prepared.hold`).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

from .abstention import (AbstentionModel, Decision, Signals, Vocabulary, answer_signals,
                         load_for_index, retrieval_signals)
from .answer import Answer, Prepared
from .evidence import citation_note, posthoc_citations, select_evidence, split_sources
from .grounding import Grounding, check_numbers, strict_answer
from .prompt import ABSTAIN_ANSWER, abstained


@dataclass
class PreCheck:
    """Before generation: the retrieval signals and the calibrated decision on them
    (None without a calibrated model), and whether the answer's text must be held back
    until it is finished (it may be replaced)."""
    signals: Signals | None = None
    decision: Decision | None = None
    hold: bool = False
    model: AbstentionModel | None = None


class Trust:
    def __init__(self, strict_grounding: bool = False, calibrated: bool = True,
                 evidence_k: int = 3):
        self.strict_grounding = strict_grounding
        self.calibrated = calibrated            # False: ignore an index's abstention.json
        self.evidence_k = evidence_k
        # Per retriever (the server's live index swaps them): its model and vocabulary.
        self._per_index: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------ before generation

    def abstention_model(self, retriever) -> tuple[AbstentionModel | None, Vocabulary | None]:
        """The index's calibrated model (and its vocabulary), loaded once per retriever."""
        if retriever is None or not self.calibrated:
            return None, None
        try:
            return self._per_index[retriever]
        except KeyError:
            pass
        model = load_for_index(retriever.index_dir)
        got = (model, Vocabulary(retriever.passages) if model else None)
        self._per_index[retriever] = got
        return got

    def before(self, question: str, hits, retriever) -> PreCheck:
        model, vocabulary = self.abstention_model(retriever) if hits is not None else (None, None)
        if model is None or not hits:
            return PreCheck(hold=self.strict_grounding)
        signals = retrieval_signals(question, hits, vocabulary,
                                    getattr(retriever, "thesaurus", None))
        decision = model.decide(signals)
        # Failed grounding adds to the log-odds after generation: where that would tip
        # the decision, the streamed text could be replaced by an abstention.
        tips = not decision.abstain and model.decide(replace(signals, grounded=False)).abstain
        return PreCheck(signals, decision, self.strict_grounding or tips, model)

    # ------------------------------------------------------------- after generation

    def __call__(self, answer: Answer, prepared: Prepared) -> Answer:
        check: PreCheck | None = prepared.check
        question, text = answer.question, answer.text
        if answer.abstained:                      # nothing generated
            answer.grounding = Grounding(True)
            if check and check.decision:
                answer.abstention = check.decision.to_json()
            return answer
        sources = answer.sources if answer.retrieval else []
        evidence = select_evidence(question, text, sources, k=self.evidence_k) if sources else []
        grounding = check_numbers(text, sources, question, evidence)
        answer.grounding = grounding
        decision = None
        if check and check.model and check.signals is not None:
            decision = check.model.decide(answer_signals(check.signals, text,
                                                         grounding.grounded))
            answer.abstention = decision.to_json()
        if abstained(text) or (decision and decision.abstain):
            # The model said the regulations do not cover it, or the decision with what
            # generation added says so: the system abstains (the nearest passages shown).
            if not abstained(text):
                answer.text = ABSTAIN_ANSWER
            answer.abstained = True
            return answer
        if not grounding.grounded and self.strict_grounding:
            answer.text = strict_answer(grounding)
            answer.strict_replaced = True
            evidence = [grounding.clause] if grounding.clause else []
        else:
            answer.needs_check = not grounding.grounded
            attached = posthoc_citations(text, evidence)
            if attached:
                answer.citations_attached = attached
                answer.text = text + citation_note(attached)
        answer.evidence = evidence
        rests, _ = split_sources(answer.text, sources, evidence)
        answer.rests_on = {s.passage.id for s in rests}
        return answer
