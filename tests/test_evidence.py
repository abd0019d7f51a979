"""Evidence sentences, post-hoc citations, citation parsing and precision/recall, and gold
labels as the document writes them (第五条), on fixed passages."""
import json

import pytest

from ingest.japanese import canonical_label, citations
from rag.evaluation import metrics
from rag.context import Source
from rag.evidence import (cited_labels, citation_note, key_terms, posthoc_citations,
                          select_evidence, split_sources)
from rag.evaluation.questions import Gold, QuestionSetError, check_gold, load_questions

from fixed_passages import LIB, P28, P42, TITLE

SOURCES = [Source(P42, 0.9), Source(P28, 0.8), Source(LIB, 0.7)]


def test_evidence_is_the_supporting_sentence_with_exact_offsets():
    ev = select_evidence("休学は通算で何年までできますか", "休学期間は通算して4年を超えることができません。",
                         SOURCES)
    best = ev[0]
    want = "２　休学期間は、通算して４年を超えることができない。"
    assert (best.passage_id, best.article, best.label, best.quote) == (
        "g28", "第28条", "第28条（休学期間）", want)
    assert (best.start, best.end) == (P28.text.index(want), P28.text.index(want) + len(want))
    assert P28.text[best.start:best.end] == best.quote
    assert 1 <= len(ev) <= 3 and all(P28.text[e.start:e.end] == e.quote for e in ev
                                     if e.passage_id == "g28")
    assert [e.score for e in ev] == sorted((e.score for e in ev), reverse=True)


def test_seed_question_rests_on_the_16_credit_item_of_article_42():
    q = "半年で15単位しか取れませんでした。除籍されますか？"
    answer = "一の学年度で16単位に満たない場合に除籍となるため、まだ除籍されません。"
    ev = select_evidence(q, answer, SOURCES)
    item = "三　一の学年度において修得した単位数が１６単位に満たない者（ただし、最終学年に在学する者を除く。）"
    assert ev[0].quote == item and ev[0].start == P42.text.index(item)
    # The answer cites nothing: citations come from the evidence, once per article.
    cites = posthoc_citations(answer, ev)
    assert cites[0] == {"source": "学則.txt", "title": TITLE, "article": "第42条",
                        "text": "東雲大学情報科学部学則第42条"}
    assert len({c["article"] for c in cites}) == len(cites)
    assert citation_note(cites[:1]) == "（根拠: 東雲大学情報科学部学則第42条）"
    # An answer that cites an article itself gets nothing attached.
    assert posthoc_citations("まだ除籍されません（学則第四十二条）。", ev) == []
    assert citation_note([]) == ""


def test_posthoc_citations_only_for_evidence_close_to_the_best():
    from rag.evidence import Evidence
    strong = Evidence("g42", "学則.txt", TITLE, "第42条", "第42条（除籍）", "…", 0, 1, 1.0)
    close = Evidence("g28", "学則.txt", TITLE, "第28条", "第28条", "…", 0, 1, 0.9)
    weak = Evidence("g8", "学則.txt", TITLE, "第8条", "第8条", "…", 0, 1, 0.6)
    assert [c["article"] for c in posthoc_citations("除籍です。", [strong, close, weak])] == [
        "第42条", "第28条"]
    assert posthoc_citations("除籍です。", []) == []


def test_sources_split_into_what_the_answer_rests_on_and_other_candidates():
    answer = "通算して4年までです（学則第２８条第２項）。"
    ev = select_evidence("休学は通算で何年までできますか", answer, SOURCES, k=1)
    rests, others = split_sources(answer, SOURCES, ev)
    assert [s.passage.id for s in rests] == ["g28"]
    assert [s.passage.id for s in others] == ["g42", "lib"]
    # A citation that names another regulation does not make this one's 第28条 cited.
    rests, _ = split_sources("履修規程第28条による。", SOURCES, [])
    assert rests == []


def test_no_evidence_when_nothing_shares_the_question_or_answer():
    assert select_evidence("駐車場の利用申請", "駐車場は申請制です。", [Source(P28)]) == []


def test_key_terms_drop_stop_words_particles_and_numbers():
    terms = key_terms("学生が半年で15単位しか取れない場合について教えてください")
    assert {"半年", "単位"} <= terms
    assert not terms & {"学生", "場合", "15", "で1", "しか", "てく"}


def test_citations_are_parsed_into_canonical_labels():
    text = "学則第四十二条第２項及び附則第二条、第１５条の２（第42条も）、申合せ第3項"
    assert cited_labels(text) == ["第42条", "附則第2条", "第15条の2", "第3項"]
    assert [label for _, label in metrics.cited_articles_in_answer(text)] == [
        "第42条", "附則第2条", "第15条の2", "第42条", "第3項"]
    start, end, _ = citations(text)[0]
    assert text[start:end] == "第四十二条第２項"        # the span, 項 included


@pytest.mark.parametrize("written, canonical", [
    ("第五条", "第5条"), ("第４２条", "第42条"), ("附則第二条", "附則第2条"),
    ("第十五条の二", "第15条の2"), (" 第 8 条 ", "第8条"), ("第百二条", "第102条"),
    ("附則", "附則"), ("第３項", "第3項"), ("第42条第2項", "第42条第2項")])
def test_canonical_label(written, canonical):
    assert canonical_label(written) == canonical


def test_gold_labels_as_written_in_the_document_are_accepted(tmp_path):
    f = tmp_path / "q.jsonl"
    rows = [{"id": "a", "question": "除籍は？", "gold": [{"file": "学則.txt", "article": "第四十二条"}]},
            {"id": "b", "question": "休学は？", "gold": [{"file": "学則.txt", "article": "第２８条"}]}]
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    qs = load_questions(f)
    assert [q.gold for q in qs] == [[Gold("学則.txt", "第42条")], [Gold("学則.txt", "第28条")]]
    check_gold(qs, [P42, P28], f)                          # accepted, no hint needed
    f.write_text(json.dumps({"id": "c", "question": "?", "gold": [
        {"file": "学則.txt", "article": "第九十九条"}]}, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(QuestionSetError, match="第99条 of 'c' is not in the index"):
        check_gold(load_questions(f), [P42, P28], f)


TITLES = {"学則.txt": TITLE, "履修規程.txt": "東雲大学情報科学部履修規程"}


def test_citation_precision_and_recall_by_hand():
    gold = [Gold("学則.txt", "第42条")]
    ctx = [("学則.txt", "第42条"), ("学則.txt", "第28条")]
    # 学則第42条 (gold, in context) and 履修規程第9条 (neither); the bare 第42条 repeats one.
    s = metrics.citation_scores("除籍されません（学則第四十二条第2項、第42条）。履修規程第9条も参照。",
                                gold, TITLES, context=ctx)
    assert s == {"cited": 2, "citation_precision": 0.5, "citation_recall": 1.0,
                 "context_precision": 0.5, "context_recall": 1.0}
    # Post-hoc citations count like mentions; they know their document.
    s = metrics.citation_scores("除籍されません。", gold, TITLES, attached=[("学則.txt", "第42条")],
                                context=ctx)
    assert (s["citation_precision"], s["citation_recall"], s["context_precision"]) == (1.0, 1.0, 1.0)
    # The right number in the wrong regulation is no hit.
    s = metrics.citation_scores("履修規程第42条による。", gold, TITLES, context=ctx)
    assert (s["citation_precision"], s["citation_recall"], s["context_precision"]) == (0.0, 0.0, 0.0)
    # Nothing cited: precision undefined, recall 0; no gold (unanswerable): both undefined.
    s = metrics.citation_scores("除籍されません。", gold, TITLES)
    assert (s["cited"], s["citation_precision"], s["citation_recall"]) == (0, None, 0.0)
    s = metrics.citation_scores("学則第28条", [], TITLES, context=ctx)
    assert (s["citation_precision"], s["citation_recall"], s["context_precision"]) == (None, None, 1.0)
    # Gold not in the context: context recall undefined, citation recall still counted.
    s = metrics.citation_scores("学則第28条", gold, TITLES, context=[("学則.txt", "第28条")])
    assert (s["citation_recall"], s["context_recall"]) == (0.0, None)
