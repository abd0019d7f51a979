"""Editions (issue 22): 施行日 and 経過措置 read from real 附則 sentences (和暦, 元年,
漢数字, full-width digits), the edition that governs as of a date and for an entry year
on a two-edition corpus, the `edition` of every source in the CLI and the API, `rag diff`,
`rag inspect --editions`, [ingest.editions] overrides, and an index without editions.json."""
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest.editions import (EditionTable, enforcement_dates, parse_date, parse_transitional,
                             regulation_key)
from rag.cli import cli

REPO = Path(__file__).resolve().parents[1]
D = dt.date

# ------------------------------------------------------------------ real 附則 sentences


def _sentence_in(path: Path, needle: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(needle)
    return text[text.rfind("\n", 0, start) + 1:text.find("。", start) + 1]


def test_enforcement_dates_of_real_supplementary_provisions():
    # 多摩美術大学学則 (学生ハンドブック2021): Arabic digits, and 「制定施行」.
    tamabi = (REPO / "corpus/public/docs/tamabi-gakusoku-2021.txt").read_text(encoding="utf-8")
    found = [d for d, _ in enforcement_dates(tamabi)]
    assert D(2021, 4, 1) in found and D(1953, 1, 31) in found
    # 行政手続法 as amended by 令和4年法律第52号: kanji numbers.
    law = _sentence_in(REPO / "corpus/laws/行政手続法_20240401.txt", "令和六年四月一日から施行")
    assert [d for d, _ in enforcement_dates(law)] == [D(2024, 4, 1)]
    # 國學院大學学則 附則 (令和6年度 handbook).
    kokugakuin = (REPO / "corpus/public/docs/kokugakuin-gakusoku-2024.txt").read_text("utf-8")
    assert (D(2023, 4, 1), "この学則は、令和5年4月1日から施行する。") in enforcement_dates(kokugakuin)
    # Full-width digits, as the issue quotes it, and 元年.
    assert enforcement_dates("この学則は、令和６年４月１日から施行する。")[0][0] == D(2024, 4, 1)
    assert enforcement_dates("附　則\nこの規程は、令和元年５月１日から施行する。")[0][0] == D(2019, 5, 1)
    # 「公布の日から…政令で定める日から施行する」 names no date.
    assert enforcement_dates("この法律は、公布の日から起算して一年を超えない範囲内において政令で"
                             "定める日から施行する。") == []


def test_dates_wareki_gannen_kanji_fullwidth_western():
    # 国民年金法施行令 (japan-law) writes 「平成元年四月一日」 on a line of its own.
    text = (REPO / "corpus/laws/国民年金法施行令_japan-law.txt").read_text(encoding="utf-8")
    assert "平成元年四月一日" in text
    assert parse_date("平成元年四月一日") == D(1989, 4, 1)
    assert parse_date("昭和二十八年一月三十一日") == D(1953, 1, 31)
    assert parse_date("平成二十九年三月三十一日") == D(2017, 3, 31)
    assert parse_date("令和６年４月１日") == D(2024, 4, 1)
    assert parse_date("２０２０年４月１日") == D(2020, 4, 1)
    assert parse_date("附則(令6.11.5細7") == D(2024, 11, 5)
    assert parse_date("第十五条") is None


def test_transitional_clauses():
    # 國學院大學学則 附則 第2項: limited to 単位履修, so listed, not applied wholesale.
    kokugakuin = (REPO / "corpus/public/docs/kokugakuin-gakusoku-2024.txt").read_text("utf-8")
    assert "令和3年度以前に入学した者の単位履修については、なお従前の例による。" in kokugakuin
    t = parse_transitional("令和3年度以前に入学した者の単位履修については、なお従前の例による。",
                           D(2023, 4, 1))
    assert (t.before, t.matter, t.applies, t.enacted) == ("2022-04-01", "単位履修", "listed",
                                                          "2023-04-01")
    # The wording: the whole edition.
    t = parse_transitional("令和５年３月３１日以前に入学した者については、なお従前の例による。")
    assert (t.before, t.applies) == ("2023-04-01", "edition")
    t = parse_transitional("この学則の施行の際現に在学する者については、なお従前の例による。",
                           D(2024, 4, 1))
    assert (t.before, t.applies) == ("2024-04-01", "edition")
    t = parse_transitional("平成三十一年三月三十一日において現に在学する者については、なお従前の例による。")
    assert t.before == "2019-04-01"
    t = parse_transitional("改正後の第12条の規定は、令和元年度入学者から適用し、平成30年度以前の"
                           "入学者については、なお従前の例による。")
    assert (t.before, t.applies, t.articles) == ("2019-04-01", "articles", ["第12条"])
    # Wording it cannot map is still listed.
    t = parse_transitional("在学する者の取扱いについては、なお従前の例による。")
    assert t.before is None and t.applies == "listed"
    # A 経過措置 about taxes (行政手続法 2018's 附則) is not about cohorts.
    tax = _sentence_in(REPO / "corpus/laws/行政手続法_20180401.txt", "第四十条　新国税通則法")
    assert parse_transitional(tax) is None


def test_regulation_key():
    assert regulation_key("多摩美術大学学則（2020年度）") == regulation_key("多摩美術大学 学則")
    assert regulation_key("富山大学学則(抜粋)") == "富山大学学則"


# ------------------------------------------------------------------ a two-edition corpus

OLD = """○サンプル大学学則

（休学期間）
第10条　休学期間は、1年以内とする。
（除籍）
第11条　学長は、授業料を納付しない者を除籍する。

附　則
この学則は、令和４年４月１日から施行する。
"""
NEW = """○サンプル大学学則

（休学期間）
第10条　休学期間は、通算して2年以内とする。
（除籍）
第11条　学長は、授業料を納付しない者を除籍する。
（再入学）
第12条　除籍された者は、再入学を願い出ることができる。

附　則
1　この学則は、令和6年4月1日から施行する。
2　令和5年度以前に入学した者については、なお従前の例による。
"""
OTHER = """○サンプル大学履修規程

（履修登録）
第1条　学生は、学期の始めに休学中でない限り履修登録をする。
"""


@pytest.fixture(scope="module")
def editions_index(tmp_path_factory, tiny_embedder):
    from ingest.pipeline import IngestSettings, ingest

    root = tmp_path_factory.mktemp("editions")
    docs = root / "docs"
    docs.mkdir()
    (docs / "gakusoku-2022.txt").write_text(OLD, encoding="utf-8")
    (docs / "gakusoku-2024.txt").write_text(NEW, encoding="utf-8")
    (docs / "rishu.txt").write_text(OTHER, encoding="utf-8")
    index = root / "idx"
    ingest([docs], index, IngestSettings(embedder=str(tiny_embedder)))
    return index


def _sources(hits):
    return {h.passage.source for h in hits}


def test_the_table_stored_with_the_index(editions_index):
    from ingest import store

    gen = store.current_generation(editions_index)
    table = EditionTable.from_dict(json.loads((gen / "editions.json").read_text("utf-8")))
    (name, editions), = table.groups().items()
    assert name == "サンプル大学学則"
    old, new = editions
    assert (old.source, old.effective_from, old.effective_to, old.date_source) == (
        "gakusoku-2022.txt", "2022-04-01", "2024-03-31", "附則")
    assert (new.effective_from, new.effective_to) == ("2024-04-01", None)
    (rule,) = new.transitional
    assert (rule.before, rule.edition, rule.applies) == ("2024-04-01",
                                                         "gakusoku-2022.txt", "edition")


def test_as_of_and_entry_year_choose_the_edition(editions_index):
    from rag.retrieval.editions import parse_choice
    from rag.retrieval.retriever import Retriever

    r = Retriever(editions_index, thesaurus=None)
    q = "休学期間は何年以内ですか"
    assert _sources(r.search(q, 10, "bm25")) == {"gakusoku-2024.txt", "rishu.txt"}   # today
    assert "gakusoku-2022.txt" not in _sources(r.search(q, 10, "hybrid"))
    then = r.search(q, 10, "bm25", editions=parse_choice("2023-06-01"))
    assert _sources(then) == {"gakusoku-2022.txt", "rishu.txt"}
    # 令和5年度 entrants keep the former rules (附則第2項); 令和6年度 entrants do not.
    cohort = r.search(q, 10, "bm25", editions=parse_choice(None, 2023))
    assert _sources(cohort) == {"gakusoku-2022.txt", "rishu.txt"}
    assert _sources(r.search(q, 10, "bm25", editions=parse_choice(None, 2024))) == {
        "gakusoku-2024.txt", "rishu.txt"}
    # Before the first edition: the first one; --all-editions: both.
    assert "gakusoku-2022.txt" in _sources(r.search(q, 10, "bm25", editions=parse_choice("2001-01-01")))
    assert {"gakusoku-2022.txt", "gakusoku-2024.txt"} <= _sources(
        r.search(q, 10, "bm25", editions=parse_choice(all_editions=True)))
    # One choice per query in a batch (evaluation).
    a, b = r.search_many([q, q], 3, "bm25", editions=[parse_choice("2023-01-01"), None])
    assert a[0].passage.source == "gakusoku-2022.txt" and b[0].passage.source == "gakusoku-2024.txt"
    hit = a[0].to_json()
    assert hit["edition"] == {"title": "サンプル大学学則", "effective_from": "2022-04-01",
                              "effective_to": "2024-03-31"}
    assert {"rank", "score", "source", "article", "heading", "text"} <= set(hit)


def test_search_cli_flags_and_edition_json(editions_index):
    run = CliRunner().invoke(cli, ["search", "休学期間", "--index", str(editions_index), "--mode",
                                   "bm25", "-k", "1", "--json", "--as-of", "2023-01-01"], obj={})
    assert run.exit_code == 0, run.output
    (hit,) = json.loads(run.output)
    assert hit["source"] == "gakusoku-2022.txt" and hit["edition"]["effective_to"] == "2024-03-31"
    run = CliRunner().invoke(cli, ["search", "休学期間", "--index", str(editions_index),
                                   "--as-of", "2023/01/01"], obj={})
    assert run.exit_code != 0 and "YYYY-MM-DD" in run.output


def test_rag_diff(editions_index):
    run = CliRunner().invoke(cli, ["diff", "サンプル大学学則", "--index", str(editions_index),
                                   "--json"], obj={})
    assert run.exit_code == 0, run.output
    d = json.loads(run.output)
    assert (d["from"]["source"], d["to"]["source"]) == ("gakusoku-2022.txt", "gakusoku-2024.txt")
    assert [c["article"] for c in d["changed"]] == ["第10条", "附則"]     # a new 施行 sentence
    assert "1年以内" in d["changed"][0]["before"] and "2年以内" in d["changed"][0]["after"]
    assert [c["article"] for c in d["added"]] == ["第12条"]
    assert d["removed"] == [] and "第11条" in d["unchanged"]
    text = CliRunner().invoke(cli, ["diff", "学則", "--from", "2022", "--to", "gakusoku-2024.txt",
                                    "--index", str(editions_index)], obj={})
    assert text.exit_code == 0 and "changed  第10条" in text.output and "added    第12条" in text.output
    bad = CliRunner().invoke(cli, ["diff", "履修規程", "--index", str(editions_index)], obj={})
    assert bad.exit_code != 0 and "several editions" in bad.output


def test_inspect_lists_editions_and_transitional_sentences(editions_index):
    run = CliRunner().invoke(cli, ["inspect", "--editions", "--index", str(editions_index)], obj={})
    assert run.exit_code == 0, run.output
    assert "gakusoku-2022.txt  2022-04-01 – 2024-03-31" in run.output
    assert "entry before 2024-04-01 → gakusoku-2022.txt" in run.output
    assert "令和5年度以前に入学した者については、なお従前の例による。" in run.output


def test_rag_toml_overrides_and_an_index_without_editions_json(editions_index, tmp_path):
    from ingest import store
    from ingest.pipeline import IngestSettings, ingest
    from rag.retrieval.retriever import Retriever

    index = tmp_path / "idx"
    shutil.copytree(editions_index, index)
    gen = store.current_generation(index)
    (gen / "editions.json").unlink()              # an index written before editions
    r = Retriever(index, thesaurus=None)
    assert r.editions.documents["gakusoku-2022.txt"].effective_from == "2022-04-01"
    assert _sources(r.search("休学期間", 10, "bm25")) == {"gakusoku-2024.txt", "rishu.txt"}
    # The admin's date wins over the 附則's; a changed table alone is written.
    docs = Path(r.index.manifest.documents["rishu.txt"].root)
    report = ingest([docs], index, IngestSettings(editions={"gakusoku-2022.txt": {
        "effective_from": "2021-10-01", "note": "board minutes"}}))
    assert report.written and report.embedded == 0
    table = Retriever(index, thesaurus=None).editions
    old = table.documents["gakusoku-2022.txt"]
    assert (old.effective_from, old.date_source, old.note) == ("2021-10-01", "rag.toml",
                                                               "board minutes")


def test_config_and_question_fields(tmp_path):
    from rag.config import ConfigError, load_config
    from rag.evaluation.questions import QuestionSetError, load_questions

    toml = tmp_path / "rag.toml"
    toml.write_text('[ingest.editions]\n"a.txt" = "2024-04-01"\n'
                    '"b.txt" = { regulation = "X学則", transitional = [{ entered_before = '
                    '"2023-04-01" }] }\n', encoding="utf-8")
    assert load_config(toml).ingest.editions["a.txt"] == "2024-04-01"
    toml.write_text('[ingest.editions]\n"a.txt" = { effective_from = "someday" }\n', "utf-8")
    with pytest.raises(ConfigError, match="not a date"):
        load_config(toml)
    qs = tmp_path / "q.jsonl"
    qs.write_text(json.dumps({"id": "a", "question": "q", "as_of": "2023-04-01",
                              "entry_year": 2022}) + "\n", encoding="utf-8")
    (q,) = load_questions(qs)
    assert (q.as_of, q.entry_year) == ("2023-04-01", 2022)
    qs.write_text(json.dumps({"id": "a", "question": "q", "as_of": "R5"}) + "\n", "utf-8")
    with pytest.raises(QuestionSetError, match="as_of"):
        load_questions(qs)


# ------------------------------------------------------------------ the API


@pytest.fixture(scope="module")
def served(editions_index, tiny_generator):
    from rag.config import Config, GenerateSection
    from rag.factory import AnswerOptions, ModelOptions
    from rag.serve.app import create_app
    from rag.serve.loader import WorkerOptions, build_engine
    from rag.serve.state import ServeSettings
    from serve_client import LiveServer

    cfg = Config(index=str(editions_index),
                 generate=GenerateSection(model=str(tiny_generator), max_new_tokens=8))
    settings = ServeSettings(rate_per_minute=0, timeout_s=60,
                             feedback_db=str(editions_index.parent / "feedback.sqlite3"))
    app = create_app(settings, lambda: build_engine(cfg, ModelOptions(), AnswerOptions(
        mode="bm25"), WorkerOptions(batch_size=4, batch_wait_ms=5, queue_size=8,
                                    index_check_ms=1000)))
    server = LiveServer(app).start()
    yield server
    server.stop()


def test_api_search_and_ask_take_as_of_and_entry_year(served):
    from urllib.parse import quote

    from serve_client import request

    q = quote("休学期間は何年以内ですか")
    status, hits = request(f"{served.url}/api/search?q={q}&k=1&mode=bm25&as_of=2023-06-01")
    assert status == 200 and hits[0]["source"] == "gakusoku-2022.txt"
    assert hits[0]["edition"] == {"title": "サンプル大学学則", "effective_from": "2022-04-01",
                                  "effective_to": "2024-03-31"}
    status, hits = request(f"{served.url}/api/search?q={q}&k=1&mode=bm25")
    assert hits[0]["source"] == "gakusoku-2024.txt" and hits[0]["edition"]["effective_to"] is None
    status, hits = request(f"{served.url}/api/search?q={q}&k=1&mode=bm25&entry_year=2023")
    assert hits[0]["source"] == "gakusoku-2022.txt"
    assert request(f"{served.url}/api/search?q={q}&as_of=2023-13-01")[0] == 400
    assert request(f"{served.url}/api/search?q={q}&entry_year=R5")[0] == 400
    status, answer = request(served.url + "/api/ask", {
        "question": "休学期間は何年以内ですか", "as_of": "2023-06-01", "max_new_tokens": 4})
    assert status == 200, answer
    editions = [s["edition"] for s in answer["sources"]]
    assert editions and all(set(e) == {"title", "effective_from", "effective_to"} for e in editions)
    assert {s["source"] for s in answer["sources"]} <= {"gakusoku-2022.txt", "rishu.txt"}
    if not answer["abstained"]:
        assert "2022年4月1日施行の版" in answer["answer"]
    status, answer = request(served.url + "/api/ask", {
        "question": "休学期間は何年以内ですか", "entry_year": 2023, "max_new_tokens": 4})
    assert status == 200 and "gakusoku-2024.txt" not in {s["source"] for s in answer["sources"]}
    assert request(served.url + "/api/ask", {"question": "x", "as_of": 20230601})[0] == 400
