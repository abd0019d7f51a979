"""The numeric check: an answer's numbers, dates, durations and amounts against the context."""
import pytest

from ingest.passage import Passage
from rag.context import Source
from rag.grounding import (STRICT_NO_CLAUSE, STRICT_PREFIX, check_numbers, extract_claims,
                           strict_answer)

P42 = Passage("g42", "学則.txt", "東雲大学情報科学部学則", "", "第42条", "除籍", "", None,
              "（除籍）\n第４２条　学長は、次の各号のいずれかに該当する者を、除籍する。\n"
              "一　一の学年度において修得した単位数が１６単位に満たない者\n")
FEE = Passage("fee", "免除規程.html", "授業料等の免除に関する規程", "", "第5条", "", "", None,
              "第５条　申請は、令和６年４月１日から二週間以内に行う。手数料は金５０，０００円とし、"
              "授業料の三分の二を免除する。在学期間は４年とする。")
CTX = [Source(P42), Source(FEE)]


@pytest.mark.parametrize("text, value, kind", [
    ("16単位", "単位:16", "quantity"), ("4年", "年:4", "quantity"), ("4年間", "年:4", "quantity"),
    ("7月1日", "7月1日", "date"), ("3分の2", "3分の2", "fraction"), ("2/3", "3分の2", "fraction"),
    ("十六単位", "単位:16", "quantity"), ("２年", "年:2", "quantity"),
    ("令和6年4月1日", "令和6年4月1日", "date"), ("令和元年5月1日", "令和1年5月1日", "date"),
    ("50,000円", "円:50000", "quantity"), ("５万円", "円:50000", "quantity"),
    ("1万5千円", "円:15000", "quantity"), ("2週間", "週:2", "quantity"),
    ("2箇月", "月:2", "quantity"), ("3.0", "3", "number")])
def test_claims_are_extracted_and_normalised(text, value, kind):
    answer = f"答えは{text}です。"
    (claim,) = extract_claims(answer)
    assert (claim.text, claim.value, claim.kind) == (text, value, kind)
    assert answer[claim.start:claim.end] == text


def test_spaced_numbers_and_numbered_years_are_claims():
    # Extracted text spaces numbers (「6 月30 日」); 第3年次 is a year of study, not an article.
    assert [(c.text, c.value) for c in extract_claims("前期分 6 月30 日まで、第3年次に進級")] == [
        ("6 月30 日", "6月30日"), ("3年次", "年次:3")]
    spaced = Passage("s", "s.txt", "要綱", "", "第5条", "", "", None, "前期分 6 月30 日まで")
    assert check_numbers("6月30日までです。", [spaced]).grounded


def test_article_numbers_words_and_list_markers_are_not_claims():
    assert extract_claims("学則第十六条第２項及び第3号によります。") == []
    assert extract_claims("一部の学生は千葉キャンパスに通う。1. まず申請する。") == []


def test_a_number_not_in_the_context_is_flagged_one_that_is_is_not():
    q = "半年で15単位しか取れませんでした。除籍されますか？"
    g = check_numbers("20単位に満たないと除籍されます。", CTX, q)
    assert not g.grounded and [c.text for c in g.unsupported] == ["20単位"]
    assert g.clause is not None and g.clause.passage_id == "g42"
    assert P42.text[g.clause.start:g.clause.end] == g.clause.quote
    for answer in ("16単位に満たないと除籍されます。", "十六単位未満なら除籍です。",
                   "15単位ではまだ除籍されません。"):          # 15単位: the question's own
        g = check_numbers(answer, CTX, q)
        assert g.grounded and g.unsupported == [] and g.clause is None, answer
    assert check_numbers("除籍されません。", CTX, q).claims == []


def test_kanji_full_width_commas_and_dates_match_across_forms():
    ok = ("令和6年4月1日から2週間以内に申請します。手数料は5万円で、授業料の3分の2が免除されます。"
          "在学期間は4年間です。申請開始は4月1日です。")
    g = check_numbers(ok, CTX)
    assert g.grounded, [c.text for c in g.unsupported]
    g = check_numbers("令和6年10月1日から3週間以内、50,001円、2分の1、5年。", CTX)
    assert [c.text for c in g.unsupported] == ["令和6年10月1日", "3週間", "50,001円", "2分の1", "5年"]


def test_strict_grounding_replaces_the_answer_by_the_quoted_clause():
    g = check_numbers("20単位に満たないと除籍されます。", CTX, "除籍されますか")
    text = strict_answer(g)
    assert text.startswith(STRICT_PREFIX)
    assert f"「{g.clause.quote}」" in text and "東雲大学情報科学部学則第42条（除籍）より引用" in text
    assert strict_answer(check_numbers("16単位未満で除籍。", CTX)) is None
    assert strict_answer(check_numbers("20単位", [])) == STRICT_NO_CLAUSE
    assert g.to_json()["unsupported"][0]["text"] == "20単位"
