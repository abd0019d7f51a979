"""The abstention decision: signals on fixed passages, calibration, save/load round trip."""
import json

import pytest

from ingest.passage import Passage
from rag.abstention import (FILE_NAME, AbstentionModel, Signals, Vocabulary, answer_signals,
                            calibrate, cross_validate, key_words, load_for_index, rates,
                            retrieval_signals)
from rag.prompt import ABSTAIN_ANSWER
from rag.retrieval.retriever import Hit

P28 = Passage("g28", "学則.txt", "東雲大学情報科学部学則", "第5章 休学", "第28条", "休学期間", "", None,
              "（休学期間）\n第２８条　休学期間は、１年以内とする。\n２　休学期間は、通算して４年を超えることができない。\n")
P42 = Passage("g42", "学則.txt", "東雲大学情報科学部学則", "第5章 除籍", "第42条", "除籍", "", None,
              "第４２条　学長は、修得した単位数が１６単位に満たない者を除籍する。\n")
HITS = [Hit(1, 0.03, P28, 0.90), Hit(2, 0.02, P42, 0.86)]


def test_retrieval_signals_on_fixed_passages():
    vocab = Vocabulary([P28, P42])
    s = retrieval_signals("休学期間は通算で最長何年ですか", HITS, vocab)
    assert s.top_similarity == 0.90 and s.margin == pytest.approx(0.04)
    assert s.margin_k == pytest.approx(0.04)
    # Words 休学期間, 通算, 最長: the last is in no passage. Bigrams 休学 学期 期間 通算 最長:
    # four are in the sentence 「２　休学期間は、通算して４年を超えることができない。」.
    assert s.passage_words == pytest.approx(2 / 3) and s.unknown_words == pytest.approx(1 / 3)
    assert s.sentence_terms == pytest.approx(0.8)
    s = retrieval_signals("学食の営業時間を教えてください", HITS, vocab)
    assert key_words("学食の営業時間を教えてください") == ["学食", "営業時間"]
    assert s.passage_words == 0.0 and s.unknown_words == 1.0 and s.sentence_terms == 0.0
    assert retrieval_signals("学食", HITS).unknown_words == 0.0    # no vocabulary: not known
    assert retrieval_signals("休学", []).top_similarity == 0.0


def _examples():
    """Answerable questions: similar passages holding their words; unanswerable: not."""
    out = []
    for i in range(40):
        out.append((Signals(0.90 + 0.001 * (i % 10), 0.01, 0.02, 0.6 + 0.01 * (i % 5), 0.9,
                            0.8 + 0.005 * (i % 7), 0.1 * (i % 3)), False))
    for i in range(10):
        out.append((Signals(0.86 + 0.002 * (i % 4), 0.005, 0.01, 0.2, 0.4, 0.2, 0.6), True))
    # One hard answerable question, looking unanswerable.
    out.append((Signals(0.85, 0.004, 0.01, 0.2, 0.4, 0.2, 0.7), False))
    return out


def test_calibration_separates_and_keeps_false_abstention_within_the_limit():
    ex = _examples()
    model = calibrate(ex, max_false=0.10)
    r = rates(model, ex)
    assert r["abstention"] == 1.0 and r["false_abstention"] <= 0.10 * 0.8
    # Lower similarity and fewer of the question's words: more likely not covered.
    hi, lo = ex[0][0], ex[45][0]
    assert model.probability(lo) > model.threshold > model.probability(hi)
    cv = cross_validate(ex, folds=5, max_false=0.10)
    assert (cv["unanswerable"], cv["answerable"]) == (10, 41)
    assert 0 <= cv["false_abstention"] <= 1 and cv["abstention"] >= 0.8
    again = cross_validate(ex, folds=5, repeats=3, max_false=0.10)
    assert (again["unanswerable"], again["answerable"], again["repeats"]) == (10, 41, 3)
    assert again == cross_validate(ex, folds=5, repeats=3, max_false=0.10)   # seeded


def test_calibration_needs_both_classes():
    with pytest.raises(ValueError, match="answerable and unanswerable"):
        calibrate([(Signals(), False)] * 3)


def test_answer_time_signals_join_the_decision():
    model = calibrate(_examples())
    covered = _examples()[0][0]
    assert not model.decide(covered).abstain
    # The model's own 「定めが見当たりません」 decides by itself.
    d = model.decide(answer_signals(covered, ABSTAIN_ANSWER))
    assert d.abstain and d.reasons == ["model_abstained"]
    # Failed grounding adds to the log-odds.
    ungrounded = answer_signals(covered, "20単位です", grounded=False)
    assert not ungrounded.model_abstained
    assert model.probability(ungrounded) > model.probability(covered)
    assert model.logit(ungrounded) - model.logit(covered) == pytest.approx(model.grounding_weight)
    model.grounding_weight = 50.0          # failing grounding alone now tips it
    assert model.decide(ungrounded).reasons == ["retrieval", "ungrounded"]
    assert not model.decide(answer_signals(covered, "16単位", grounded=True)).abstain


def test_parameters_round_trip_through_the_index_directory(tmp_path):
    ex = _examples()
    model = calibrate(ex)
    model.meta = {"embedder": "e5", "sets": ["q.jsonl"]}
    assert load_for_index(tmp_path) is None
    path = model.save(tmp_path)
    assert path == tmp_path / FILE_NAME
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["version"] == 1 and stored["threshold"] == model.threshold
    again = load_for_index(tmp_path)
    assert again == model
    assert [again.decide(s).to_json() for s, _ in ex] == [model.decide(s).to_json() for s, _ in ex]
    # Parameters of another shape are refused, not misread.
    stored["features"] = ["top_similarity"]
    path.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(ValueError, match="recalibrate"):
        AbstentionModel.load(path)
