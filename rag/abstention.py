"""One calibrated decision: answer, or say the regulations do not cover the question.

A similarity threshold alone abstains on none of the real unanswerable questions: their
best passage is as similar as an answerable question's (「徳島大学の卒業単位」 finds some
university's 卒業要件). What separates them is whether the retrieved text holds the
question's own terms (徳島, 卒業, 単位 in one passage, and its topic in one sentence), and
how far the best passage stands out. These retrieval signals go into a small logistic
model whose parameters are calibrated on a question set and stored as JSON (beside an
index's CURRENT, as abstention.json, which a re-ingest keeps); the answer-time signals
join it after generation: the model's own 「定めが見当たりません」 decides by itself, and
failed grounding adds a fixed amount to the log-odds.
"""
from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ingest.japanese import nfkc

from .evidence import STOP_WORDS, _passage, bigrams, key_terms, sentence_spans

FEATURES = ("top_similarity", "margin", "margin_k", "sentence_terms", "passage_terms",
            "passage_words", "unknown_words")
FILE_NAME = "abstention.json"
VERSION = 1


@dataclass
class Signals:
    top_similarity: float = 0.0   # best dense cosine among the hits
    margin: float = 0.0           # rank 1 minus rank 2 (by similarity)
    margin_k: float = 0.0         # rank 1 minus the mean of the others
    sentence_terms: float = 0.0   # best share of the question's key terms in one sentence
    passage_terms: float = 0.0    # best share in one passage, its title and headings included
    passage_words: float = 0.0    # best share of the key words (学生寮, 寄宿料) in one passage
    unknown_words: float = 0.0    # share of the key words that no passage of the index has
    model_abstained: bool = False  # after generation: the answer says 定めが見当たりません
    grounded: bool | None = None   # after generation: every number is in the context

    def vector(self) -> list[float]:
        return [float(getattr(self, f)) for f in FEATURES]

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# A content word of a question: a run of kanji, katakana or Latin letters (hiragana is
# where Japanese words meet), 寄宿料 or TOEIC, after the stop words are taken out.
_WORD = re.compile(r"[\u4e00-\u9fff々\u30a0-\u30ffー]{2,}|[A-Za-z]{2,}")


def key_words(question: str) -> list[str]:
    text = nfkc(question)
    for w in STOP_WORDS:
        text = text.replace(nfkc(w), " ")
    return list(dict.fromkeys(_WORD.findall(text)))


class Vocabulary:
    """What the whole index says, to tell a question about something no regulation
    mentions (学食, 駐車場, TOEIC) from one whose article merely ranked low."""

    def __init__(self, passages: Sequence):
        self.text = "\n".join(_passage(p).search_text() for p in passages)

    def __contains__(self, word: str) -> bool:
        return word in self.text


def retrieval_signals(question: str, hits: Sequence, vocabulary: Vocabulary | None = None,
                      thesaurus=None) -> Signals:
    """The signals available before generation, from the question and its hits
    (rag/retrieve.Hit, or Sources/Passages with no similarity), the index's vocabulary
    (without one, unknown_words is 0) and the retriever's thesaurus (rag/thesaurus.py:
    a student's 学費 is covered by the regulation's 授業料, as retrieval already knows)."""
    sims = sorted((h.dense_score for h in hits if getattr(h, "dense_score", None) is not None),
                  reverse=True)
    top = sims[0] if sims else 0.0
    terms = key_terms(question)
    texts = [_passage(h).search_text() for h in hits]
    sent = psg = 0.0
    if terms:
        for h, text in zip(hits, texts):
            p = _passage(h)
            psg = max(psg, len(terms & bigrams(text)) / len(terms))
            for start, end in sentence_spans(p):
                sent = max(sent, len(terms & bigrams(p.text[start:end])) / len(terms))
    # Each key word with the regulation terms the thesaurus gives for it.
    words = [[w, *(thesaurus.terms_for(w) if thesaurus else ())] for w in key_words(question)]
    in_passage = max((sum(any(a in t for a in alts) for alts in words) / len(words)
                      for t in texts), default=0.0) if words else 1.0
    unknown = (sum(not any(a in vocabulary for a in alts) for alts in words) / len(words)
               if words and vocabulary is not None else 0.0)
    return Signals(top, top - sims[1] if len(sims) > 1 else 0.0,
                   top - sum(sims[1:]) / (len(sims) - 1) if len(sims) > 1 else 0.0, sent, psg,
                   in_passage, unknown)


def answer_signals(signals: Signals, answer: str, grounded: bool | None = None) -> Signals:
    """`signals` with what generation adds: the model's own abstention, the grounding."""
    from .prompt import abstained              # the phrases evaluation also counts
    return Signals(**{**asdict(signals), "model_abstained": abstained(nfkc(answer)),
                      "grounded": grounded})


@dataclass
class Decision:
    abstain: bool
    probability: float        # that the question is not covered
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"abstain": self.abstain, "probability": round(self.probability, 4),
                "reasons": self.reasons}


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


@dataclass
class AbstentionModel:
    weights: list[float]
    bias: float
    mean: list[float]
    scale: list[float]
    threshold: float = 0.5           # abstain at or above this probability
    grounding_weight: float = 1.0    # log-odds added when a number is not in the context
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    meta: dict = field(default_factory=dict)   # embedder, question sets, figures

    def logit(self, s: Signals) -> float:
        x = s.vector()
        z = self.bias + sum(w * (v - m) / sc for w, v, m, sc in
                            zip(self.weights, x, self.mean, self.scale))
        return z + (self.grounding_weight if s.grounded is False else 0.0)

    def probability(self, s: Signals) -> float:
        return _sigmoid(self.logit(s))

    def decide(self, s: Signals) -> Decision:
        p = self.probability(s)
        # Reasons are codes, for JSON and for a page to word: model_abstained (the answer
        # says 定めが見当たりません), retrieval (the signals say not covered), ungrounded
        # (a number not in the context tipped or joined that).
        reasons = []
        if s.model_abstained:
            reasons.append("model_abstained")
        if p >= self.threshold:
            reasons.append("retrieval")
            if s.grounded is False:
                reasons.append("ungrounded")
        return Decision(bool(reasons), p, reasons)

    # ---------------------------------------------------------------- storage

    def to_json(self) -> dict:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict) -> "AbstentionModel":
        if d.get("version") != VERSION or d.get("features") != list(FEATURES):
            raise ValueError(f"abstention parameters of version {d.get('version')} with "
                             f"features {d.get('features')}; this release reads version "
                             f"{VERSION} with {list(FEATURES)} (recalibrate)")
        return cls(**{k: d[k] for k in ("weights", "bias", "mean", "scale", "threshold",
                                        "grounding_weight", "features", "meta") if k in d})

    def save(self, path: str | Path) -> Path:
        """Write to `path` (a file, or an index directory: its abstention.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n",
                       encoding="utf-8")
        tmp.replace(path)                         # a reader never sees half a file
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AbstentionModel":
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def load_for_index(index_dir: str | Path) -> AbstentionModel | None:
    """The index's calibrated model, or None when it has none."""
    path = Path(index_dir) / FILE_NAME
    return AbstentionModel.load(path) if path.is_file() else None


# -------------------------------------------------------------------- calibration

def fit(examples: Sequence[tuple[Signals, bool]], l2: float = 0.1, steps: int = 3000,
        lr: float = 0.5) -> AbstentionModel:
    """Logistic regression on standardised features, classes weighted equally (a set has
    far fewer unanswerable questions), by full-batch gradient descent: deterministic."""
    import numpy as np

    x = np.array([s.vector() for s, _ in examples], dtype=np.float64).reshape(-1, len(FEATURES))
    y = np.array([1.0 if unanswerable else 0.0 for _, unanswerable in examples])
    if not len(y) or len(set(y.tolist())) < 2:
        raise ValueError("calibration needs answerable and unanswerable questions")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    n, pos = len(y), y.sum()
    cw = np.where(y == 1, n / (2 * pos), n / (2 * (n - pos)))
    w, b = np.zeros(len(FEATURES)), 0.0
    for _ in range(steps):
        err = cw * (1 / (1 + np.exp(-(z @ w + b))) - y) / n
        w -= lr * (z.T @ err + l2 * w)
        b -= lr * err.sum()
    return AbstentionModel(w.tolist(), float(b), mean.tolist(), scale.tolist())


def choose_threshold(model: AbstentionModel, examples: Sequence[tuple[Signals, bool]],
                     max_false: float = 0.10) -> float:
    """The lowest threshold (most abstention) whose false abstention on the answerable
    examples stays within `max_false`."""
    answerable = sorted((model.probability(s) for s, u in examples if not u), reverse=True)
    allowed = int(max_false * len(answerable))    # this many may be at or above it
    if allowed >= len(answerable):
        return 0.0
    # Just above the (allowed+1)-th highest answerable probability.
    return math.nextafter(answerable[allowed], 1.0)


def calibrate(examples: Sequence[tuple[Signals, bool]], max_false: float = 0.10,
              margin: float = 0.8, **fit_args) -> AbstentionModel:
    """Fit the model and choose its threshold on `examples` ((signals, unanswerable)
    pairs). The threshold aims at `margin` × `max_false` on these examples, because a
    threshold set exactly at the limit on the data it was fitted on overshoots it on
    new questions."""
    model = fit(examples, **fit_args)
    model.threshold = choose_threshold(model, examples, max_false * margin)
    return model


def rates(model: AbstentionModel, examples: Sequence[tuple[Signals, bool]]) -> dict:
    """Abstention on the unanswerable and false abstention on the answerable examples."""
    un = [model.decide(s).abstain for s, u in examples if u]
    an = [model.decide(s).abstain for s, u in examples if not u]
    return {"unanswerable": len(un), "answerable": len(an),
            "abstention": sum(un) / len(un) if un else None,
            "false_abstention": sum(an) / len(an) if an else None}


def cross_validate(examples: Sequence[tuple[Signals, bool]], folds: int = 5,
                   repeats: int = 1, **calibrate_args) -> dict:
    """Rates of models calibrated without the questions they decide: stratified folds
    (every fold-th question of each class), each fold decided by a model fitted on the
    others. With `repeats`, the folds are drawn again from seeded shuffles (the first in
    the given order) and the decisions pooled: a dozen unanswerable questions make one
    fold assignment a noisy figure."""
    decided = []
    for r in range(repeats):
        order = list(examples)
        if r:
            random.Random(r).shuffle(order)
        un = [e for e in order if e[1]]
        an = [e for e in order if not e[1]]
        for f in range(folds):
            test = un[f::folds] + an[f::folds]
            train = [e for i, e in enumerate(un) if i % folds != f] + \
                    [e for i, e in enumerate(an) if i % folds != f]
            model = calibrate(train, **calibrate_args)
            decided += [(model.decide(s).abstain, u) for s, u in test]
    ab = [a for a, u in decided if u]
    fa = [a for a, u in decided if not u]
    return {"folds": folds, "repeats": repeats, "unanswerable": len(ab) // repeats,
            "answerable": len(fa) // repeats,
            "abstention": sum(ab) / len(ab), "false_abstention": sum(fa) / len(fa)}
