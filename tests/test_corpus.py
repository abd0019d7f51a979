"""The shipped sample corpus and question set hold together."""
from collections import Counter

import pytest

from conftest import CORPUS
from ingest import store
from rag.evaluation.questions import QuestionSetError, load_questions


def test_question_set_covers_every_type():
    qs = load_questions(CORPUS / "questions.jsonl")
    counts = Counter(q.type for q in qs)
    assert len(qs) >= 60
    assert counts["paraphrase"] >= 10 and counts["reasoning"] >= 10
    assert counts["multi"] >= 5 and counts["unanswerable"] >= 5
    assert all(len(q.gold) >= 2 for q in qs if q.type == "multi")
    assert all(not q.gold for q in qs if q.type == "unanswerable")
    assert any(q.question == "半年で15単位しか取れませんでした。除籍されますか？" for q in qs)


def test_every_gold_article_exists_in_the_built_index(corpus_index):
    articles = {(p.source, p.article) for p in store.load_index(corpus_index).passages}
    missing = [(q.id, g.file, g.article) for q in load_questions(CORPUS / "questions.jsonl")
               for g in q.gold if (g.file, g.article) not in articles]
    assert not missing


def test_corpus_size_and_formats(corpus_index):
    m = store.read_manifest(corpus_index)
    kinds = Counter(d.kind for d in m.documents.values())
    assert {"txt", "md", "html", "pdf"} <= set(kinds)
    assert "cp932" in {d.encoding for d in m.documents.values()}
    passages = store.load_index(corpus_index).passages
    articles = {(p.source, p.article) for p in passages if "条" in p.article}
    assert len(articles) >= 80


@pytest.mark.parametrize("line,error", [
    ('{"question": "x"}', "field 'id' is missing"),
    ('{"id": "a", "question": "x", "type": "trivia"}', "field 'type' is 'trivia'"),
    ('{"id": "a", "question": "x", "gold": [{"file": "学則.txt"}]}', "gold[0] needs"),
    ('{"id": "a", "question": "x"}\n{"id": "a", "question": "y"}', "duplicate id 'a'"),
    ('not json', "invalid JSON"),
])
def test_question_set_errors_name_the_line(tmp_path, line, error):
    f = tmp_path / "q.jsonl"
    f.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(QuestionSetError, match=error.replace("[", r"\[")):
        load_questions(f)
