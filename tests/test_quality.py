"""Retrieval quality on the sample question set with the real multilingual-e5-small.

Floors are set a little under the measured figures (docs/benchmarks.md) so that a
regression in splitting, tokenisation or fusion fails here.
"""
import pytest

from conftest import CORPUS
from ingest.pipeline import IngestSettings, ingest
from rag.evaluation.metrics import retrieval_summary
from rag.evaluation.questions import load_questions
from rag.retrieval.retriever import Retriever

pytestmark = pytest.mark.quality

FLOORS = {  # mode: (hit@1, hit@5) on questions.jsonl, one result per article; measured
    # 0.79/0.95, 0.64/0.92, 0.80/0.97 (bm25 0.5 + bigram 1.0 in hybrid, issue 19)
    "bm25": (0.74, 0.92),
    "dense": (0.58, 0.88),
    "hybrid": (0.79, 0.96),
}
# heldout.jsonl was written without seeing questions.jsonl or the thesaurus, so it
# measures how the tuning generalises; measured hybrid 0.74/0.93 with the fusion tuned on
# the public sets (0.81/0.89 with the previous bm25 weight 1.5 and no bigram channel).
HELDOUT_FLOOR = (0.70, 0.88)


def _summary(retriever, questions, mode):
    results = retriever.search_many([q.question for q in questions], k=5, mode=mode)
    return retrieval_summary([[h.passage for h in r] for r in results],
                             [q.gold for q in questions], k=5)


@pytest.fixture(scope="module")
def e5_retriever(e5_small, tmp_path_factory):
    index = tmp_path_factory.mktemp("e5") / "idx"
    ingest([CORPUS], index, IngestSettings(embedder=str(e5_small)))
    return Retriever(index)


@pytest.mark.parametrize("mode", list(FLOORS))
def test_hit_rate_floor(e5_retriever, mode):
    summary = _summary(e5_retriever, load_questions(CORPUS / "questions.jsonl"), mode)
    hit1, hit5 = FLOORS[mode]
    assert summary["hit@1"] >= hit1 and summary["hit@k"] >= hit5, summary


def test_hybrid_is_at_least_as_good_as_either_alone(e5_retriever):
    qs = load_questions(CORPUS / "questions.jsonl")
    mrr = {mode: _summary(e5_retriever, qs, mode)["mrr"] for mode in FLOORS}
    assert mrr["hybrid"] >= max(mrr["bm25"], mrr["dense"]) - 0.01, mrr


def test_heldout_questions(e5_retriever):
    summary = _summary(e5_retriever, load_questions(CORPUS / "heldout.jsonl"), "hybrid")
    assert summary["hit@1"] >= HELDOUT_FLOOR[0] and summary["hit@k"] >= HELDOUT_FLOOR[1], summary


def test_thesaurus_helps_on_heldout_questions(e5_retriever):
    qs = load_questions(CORPUS / "heldout.jsonl")
    expanded = _summary(e5_retriever, qs, "hybrid")["mrr"]
    thesaurus, e5_retriever.thesaurus = e5_retriever.thesaurus, None
    try:
        plain = _summary(e5_retriever, qs, "hybrid")["mrr"]
    finally:
        e5_retriever.thesaurus = thesaurus
    assert expanded > plain, (expanded, plain)


def test_the_bigram_channel_helps_on_heldout_questions(e5_retriever):
    """The fusion weights were chosen on questions.jsonl and the public set; the bigram
    channel they brought in must help the held-out set (measured MRR 0.802 vs 0.787,
    hit@5 0.93 vs 0.89)."""
    qs = load_questions(CORPUS / "heldout.jsonl")
    with_bigram = _summary(e5_retriever, qs, "hybrid")
    weight, e5_retriever.bigram_weight = e5_retriever.bigram_weight, 0.0
    try:
        without = _summary(e5_retriever, qs, "hybrid")
    finally:
        e5_retriever.bigram_weight = weight
    assert (e5_retriever.bm25_weight, weight) == (0.5, 1.0)
    assert with_bigram["mrr"] > without["mrr"], (with_bigram, without)
