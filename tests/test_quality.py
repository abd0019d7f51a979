"""Retrieval quality on the sample question set with the real multilingual-e5-small.

Floors are set a little under the measured figures (docs/benchmarks.md) so that a
regression in splitting, tokenisation or fusion fails here.
"""
import pytest

from conftest import CORPUS
from ingest.pipeline import IngestSettings, ingest
from rag.metrics import retrieval_summary
from rag.questions import load_questions
from rag.retrieve import Retriever

pytestmark = pytest.mark.quality

FLOORS = {  # mode: (hit@1, hit@5)
    "bm25": (0.60, 0.78),
    "dense": (0.50, 0.82),
    "hybrid": (0.64, 0.85),
}


@pytest.fixture(scope="module")
def e5_retriever(e5_small, tmp_path_factory):
    index = tmp_path_factory.mktemp("e5") / "idx"
    ingest([CORPUS], index, IngestSettings(embedder=str(e5_small)))
    return Retriever(index)


@pytest.mark.parametrize("mode", list(FLOORS))
def test_hit_rate_floor(e5_retriever, mode):
    qs = load_questions(CORPUS / "questions.jsonl")
    results = e5_retriever.search_many([q.question for q in qs], k=5, mode=mode)
    summary = retrieval_summary([[h.passage for h in r] for r in results],
                                [q.gold for q in qs], k=5)
    hit1, hit5 = FLOORS[mode]
    assert summary["hit@1"] >= hit1 and summary["hit@5"] >= hit5, summary


def test_hybrid_is_at_least_as_good_as_either_alone(e5_retriever):
    qs = load_questions(CORPUS / "questions.jsonl")
    mrr = {}
    for mode in FLOORS:
        results = e5_retriever.search_many([q.question for q in qs], k=5, mode=mode)
        mrr[mode] = retrieval_summary([[h.passage for h in r] for r in results],
                                      [q.gold for q in qs], k=5)["mrr"]
    assert mrr["hybrid"] >= max(mrr["bm25"], mrr["dense"]) - 0.01, mrr
