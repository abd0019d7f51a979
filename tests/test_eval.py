"""`rag eval`: metrics on hand-computed cases, retrieval-only and end-to-end runs,
resume after interruption, and shard + merge equal to a single run."""
import json
import re
import struct

import pytest
from click.testing import CliRunner

from conftest import CORPUS
from rag.evaluation import metrics
from rag.evaluation.run import EvalError, EvalSettings, merge, run
from rag.evaluation.questions import Gold, QuestionSetError, check_gold, load_questions

TITLES = {"学則.txt": "東雲大学情報科学部学則", "履修規程.txt": "東雲大学情報科学部履修規程",
          "免除規程.html": "東雲大学授業料等の免除及び徴収猶予に関する規程",
          "申合せ.txt": "進級及び卒業要件に関する申合せ"}


# --------------------------------------------------------------------------- metrics

def test_must_include_normalises_width_and_punctuation():
    assert metrics.must_include("１６単位に満たない場合、除籍です。", ["16単位", "除籍"])
    assert metrics.must_include("ＧＰＡが３．０以上", ["GPA", "3.0"])
    assert not metrics.must_include("15単位です", ["16単位"])
    assert not metrics.must_include("124単位です", ["24単位"])        # not part of a number
    assert not metrics.must_include("1.5単位", ["15単位"])
    assert metrics.must_include("上限は24単位", ["24単位"])


def test_char_f1_and_rouge_l_by_hand():
    # answer 「除籍です」 vs reference 「除籍されます。」: common chars 除,籍,す (3);
    # precision 3/4, recall 3/6 -> F1 = 0.6
    assert metrics.char_f1("除籍です", "除籍されます。") == pytest.approx(0.6)
    # LCS of 除籍です / 除籍されます is 除籍す (3): same F here
    assert metrics.rouge_l("除籍です", "除籍されます。") == pytest.approx(0.6)
    assert metrics.char_f1("", "除籍") == 0.0 and metrics.rouge_l("abc", "xyz") == 0.0
    assert metrics.char_f1("１６単位", "16単位") == 1.0


def test_citations_are_parsed_and_matched():
    answer = "除籍されません（学則第四十二条第2項、附則第2条）。履修規程第9条も参照。"
    assert [label for _, label in metrics.cited_articles_in_answer(answer)] == [
        "第42条", "附則第2条", "第9条"]
    assert metrics.citation_correct(answer, [Gold("学則.txt", "第42条")], TITLES)
    assert metrics.citation_correct("第9条による", [Gold("履修規程.txt", "第9条")], TITLES)
    assert metrics.citation_correct("（進級及び卒業要件に関する申合せ第3項）",
                                    [Gold("申合せ.txt", "第3項")], TITLES)
    # the right number in the wrong regulation is not a correct citation
    assert not metrics.citation_correct("学則第9条", [Gold("履修規程.txt", "第9条")], TITLES)
    assert not metrics.citation_correct("授業料等の免除及び徴収猶予に関する規程第9条",
                                        [Gold("履修規程.txt", "第9条")], TITLES)


def test_abstention_phrases():
    from rag.prompt import ABSTAIN_ANSWER
    assert metrics.abstained(ABSTAIN_ANSWER)
    assert metrics.abstained("規程には定めがなく、回答できません。")
    assert not metrics.abstained("除籍されます（学則第42条）。")


# --------------------------------------------------------------------------- runs

@pytest.fixture
def small_set(tmp_path):
    lines = (CORPUS / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    picked = lines[:6] + [ln for ln in lines if '"unanswerable"' in ln][:2]
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(picked) + "\n", encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def retriever(corpus_index):
    from rag.retrieval.retriever import Retriever
    return Retriever(corpus_index)


@pytest.fixture(scope="module")
def answerer_factory(tiny_generator, retriever):
    from rag.answer import Answerer
    from rag.generation.hf import TransformersGenerator
    from rag.generation.base import GenerationOptions
    cache = {}

    def make(adapter):
        if adapter not in cache:
            cache[adapter] = Answerer(TransformersGenerator(str(tiny_generator), adapter=adapter),
                                      retriever, options=GenerationOptions(12))
        return cache[adapter]
    return make


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_retrieval_only(small_set, tmp_path, retriever):
    out = tmp_path / "out"
    summary = run(small_set, out, EvalSettings(conditions=["bm25", "dense", "hybrid"],
                                               retrieval_only=True), retriever=retriever)
    assert set(summary["metrics"]) == {"retrieval/bm25", "retrieval/dense", "retrieval/hybrid"}
    assert 0 <= summary["metrics"]["retrieval/bm25"]["hit@k"] <= 1
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text("utf-8").splitlines()]
    assert len(rows) == 3 * 8
    assert "must_include" not in summary["metrics"]["retrieval/hybrid"]


def test_end_to_end_writes_every_output(small_set, tmp_path, retriever, answerer_factory,
                                        tiny_adapter):
    out = tmp_path / "out"
    settings = EvalSettings(conditions=["none", "hybrid"], adapters=[None, str(tiny_adapter)],
                            batch_size=4, max_new_tokens=12)
    summary = run(small_set, out, settings, retriever=retriever, make_answerer=answerer_factory)
    for name in ("results.jsonl", "results.csv", "summary.json", "report.md", "chart.png"):
        assert (out / name).stat().st_size > 0
    assert set(summary["metrics"]) == {"base/none", "base/hybrid",
                                       f"{tiny_adapter.name}/none", f"{tiny_adapter.name}/hybrid"}
    hybrid = summary["metrics"]["base/hybrid"]
    assert {"hit@1", "must_include", "char_f1", "rouge_l", "citation", "abstention",
            "false_abstention"} <= set(hybrid)
    assert set(hybrid["by_type"]) == {"lookup", "unanswerable"}
    report = (out / "report.md").read_text("utf-8")
    assert "## Summary" in report and "## By question type" in report and "## Metrics" in report
    assert _png_size(out / "chart.png") == (1200, 450)
    import csv
    with (out / "results.csv").open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 8 * 2 * 2


def _rows(out):
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text("utf-8").splitlines()]
    for r in rows:            # timings differ from run to run; everything else must not
        for key in ("latency_ms", "first_token_ms", "prefill_tokens_per_s",
                    "decode_tokens_per_s"):
            r.pop(key, None)
    return sorted(rows, key=lambda r: (r["variant"], r["condition"], r["id"]))


def _report(out):
    """report.md without its Speed section (timings differ from run to run)."""
    return re.sub(r"## Speed\n.*?(?=\n## )", "", (out / "report.md").read_text("utf-8"),
                  flags=re.S)


def test_interrupted_run_resumes_to_the_same_results(small_set, tmp_path, retriever,
                                                     answerer_factory, monkeypatch):
    settings = EvalSettings(conditions=["none", "hybrid"], batch_size=2, max_new_tokens=12)
    whole = tmp_path / "whole"
    run(small_set, whole, settings, retriever=retriever, make_answerer=answerer_factory)

    from rag.generation.hf import TransformersGenerator
    real = TransformersGenerator.generate_batch
    calls = {"n": 0}

    def flaky(self, prompts, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt      # Ctrl-C / preemption in the middle of the run
        return real(self, prompts, *args, **kw)

    monkeypatch.setattr(TransformersGenerator, "generate_batch", flaky)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run(small_set, part, settings, retriever=retriever, make_answerer=answerer_factory)
    assert 0 < len((part / "results.jsonl").read_text("utf-8").splitlines()) < 16
    monkeypatch.setattr(TransformersGenerator, "generate_batch", real)
    run(small_set, part, settings, retriever=retriever, make_answerer=answerer_factory)
    assert _rows(part) == _rows(whole)
    assert _report(part) == _report(whole)


def test_shards_merge_into_the_single_run_report(small_set, tmp_path, retriever,
                                                 answerer_factory):
    common = dict(conditions=["none", "hybrid"], batch_size=1, max_new_tokens=12)
    single = tmp_path / "single"
    run(small_set, single, EvalSettings(**common), retriever=retriever,
        make_answerer=answerer_factory)
    shards = []
    for i in range(3):
        d = tmp_path / f"shard{i}"
        run(small_set, d, EvalSettings(shard=(i, 3), **common), retriever=retriever,
            make_answerer=answerer_factory)
        shards.append(d)
    merged = tmp_path / "merged"
    merge(shards, merged)
    assert _rows(merged) == _rows(single)
    assert _report(merged) == _report(single)


def test_reference_answers_score_full_citation_and_facts(retriever):
    qs = load_questions(CORPUS / "questions.jsonl")
    titles = retriever.titles()
    answerable = [q for q in qs if q.gold]
    assert all(metrics.must_include(q.answer, q.must_include) for q in qs)
    cited = sum(metrics.citation_correct(q.answer, q.gold, titles) for q in answerable)
    assert cited / len(answerable) >= 0.95


def test_variants_get_unique_names():
    from rag.evaluation.run import variant_names
    assert variant_names([None, "runs/a/final", "runs/b/final", "lora"]) == [
        "base", "a/final", "b/final", "lora"]
    with pytest.raises(EvalError, match="twice"):
        variant_names(["x", "x"])


def test_a_cut_line_and_changed_settings_on_resume(small_set, tmp_path, retriever):
    out = tmp_path / "out"
    settings = EvalSettings(conditions=["bm25"], retrieval_only=True)
    run(small_set, out, settings, retriever=retriever)
    rows = (out / "results.jsonl").read_text("utf-8").splitlines()
    (out / "results.jsonl").write_text("\n".join(rows[:3]) + "\n" + rows[3][:20], "utf-8")
    run(small_set, out, settings, retriever=retriever)
    assert _rows(out) == sorted((json.loads(r) for r in rows),
                                key=lambda r: (r["variant"], r["condition"], r["id"]))
    with pytest.raises(EvalError, match="other settings"):
        run(small_set, out, EvalSettings(conditions=["bm25"], retrieval_only=True, k=2),
            retriever=retriever)
    (out / "eval.json").write_text('{"k": 5', "utf-8")           # a half-written file
    with pytest.raises(EvalError, match="eval.json is damaged"):
        run(small_set, out, settings, retriever=retriever)


def test_a_run_records_what_made_it_and_refuses_to_mix(small_set, tmp_path, retriever,
                                                        answerer_factory):
    out = tmp_path / "out"
    settings = EvalSettings(conditions=["none"], batch_size=4, max_new_tokens=8, model="m-1")
    summary = run(small_set, out, settings, retriever=retriever, make_answerer=answerer_factory)
    generation = retriever.index.path.name
    assert summary["settings"]["model"] == "m-1"
    assert summary["settings"]["index_generation"] == generation
    assert all(r["model"] == "m-1" and r["index_generation"] == generation and "adapter" in r
               for r in _rows(out))
    other = EvalSettings(conditions=["none"], batch_size=4, max_new_tokens=8, model="m-2")
    with pytest.raises(EvalError, match="model.*--overwrite"):
        run(small_set, out, other, retriever=retriever, make_answerer=answerer_factory)
    other.overwrite = True
    summary = run(small_set, out, other, retriever=retriever, make_answerer=answerer_factory)
    assert {r["model"] for r in _rows(out)} == {"m-2"}


def test_question_fields_are_type_checked_with_hints(tmp_path, retriever):
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "a", "question": "q", "answer": 5}\n', encoding="utf-8")
    with pytest.raises(QuestionSetError, match="field 'answer' must be a string"):
        load_questions(f)
    f.write_bytes("\ufeff".encode() + '{"id": "a", "question": "除籍は？", "gold": '
                  '[{"file": "corpus/学則.txt", "article": "第４２条"}]}\n'.encode())
    qs = load_questions(f)                                  # a BOM is fine
    with pytest.raises(QuestionSetError, match='did you mean {"file": "学則.txt", '
                                               '"article": "第42条"}'):
        check_gold(qs, retriever.passages, f)


def test_question_set_not_utf8_is_named(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_bytes('{"id": "a", "question": "除籍されますか"}\n'.encode("cp932"))
    with pytest.raises(QuestionSetError, match=r"q.jsonl: not UTF-8"):
        load_questions(f)


def test_merge_needs_every_shard(small_set, tmp_path, retriever):
    d = tmp_path / "s0"
    run(small_set, d, EvalSettings(conditions=["bm25"], retrieval_only=True, shard=(0, 2)),
        retriever=retriever)
    with pytest.raises(EvalError, match="do not cover"):
        merge([d], tmp_path / "m")


def test_gold_missing_from_the_index_fails_before_generating(tmp_path, retriever):
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "a", "question": "除籍？", "gold": [{"file": "学則.txt", '
                 '"article": "第999条"}]}\n', encoding="utf-8")
    with pytest.raises(QuestionSetError, match=r"q.jsonl:1: gold article 学則.txt 第999条"):
        run(f, tmp_path / "out", EvalSettings(), retriever=retriever,
            make_answerer=lambda a: pytest.fail("no model may be loaded"))
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_cli_retrieval_only_and_merge(small_set, tmp_path, corpus_index):
    from rag.cli import cli
    runner = CliRunner()
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}"
        r = runner.invoke(cli, ["eval", str(small_set), "--index", str(corpus_index),
                                "--out", str(out), "--retrieval-only", "--shard", f"{i}/2"],
                          obj={})
        assert r.exit_code == 0, r.output
        outs.append(out)
    r = runner.invoke(cli, ["eval", "merge", *map(str, outs), "--out", str(tmp_path / "m"),
                            "--json"], obj={})
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"]["retrieval/hybrid"]["questions"] == 8
    r = runner.invoke(cli, ["eval", str(small_set), "--out", str(tmp_path / "x"),
                            "--shard", "3/2", "--retrieval-only", "--index", str(corpus_index)],
                      obj={})
    assert r.exit_code == 1 and "0 <= i < n" in r.output


def test_default_conditions_depend_on_the_mode_and_never_override_a_choice():
    assert EvalSettings().conditions == ["none", "hybrid"]
    assert EvalSettings(retrieval_only=True).conditions == ["bm25", "dense", "hybrid"]
    assert EvalSettings(conditions=["none", "hybrid"], retrieval_only=True).conditions == [
        "none", "hybrid"]


# ------------------------------------------------------------- issue 20: trust and oracle

@pytest.fixture(scope="module")
def trusted_factory(tiny_generator, retriever):
    """The answerer every command builds (rag.factory): with rag/trust.py's finisher."""
    from rag.answer import Answerer
    from rag.generation.base import GenerationOptions
    from rag.generation.hf import TransformersGenerator
    from rag.trust import Trust
    cache = {}

    def make(adapter):
        if adapter not in cache:
            trust = Trust()
            cache[adapter] = Answerer(TransformersGenerator(str(tiny_generator), adapter=adapter),
                                      retriever, options=GenerationOptions(12),
                                      finishers=[trust], precheck=trust.before)
        return cache[adapter]
    return make


def test_oracle_limit_and_per_question_trust_fields(small_set, tmp_path, retriever,
                                                    trusted_factory):
    out = tmp_path / "out"
    settings = EvalSettings(conditions=["hybrid", "oracle"], batch_size=4, max_new_tokens=12,
                            limit=4)
    summary = run(small_set, out, settings, retriever=retriever, make_answerer=trusted_factory)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text("utf-8").splitlines()]
    # --limit 4 of 8: spread over the set, so an unanswerable question is among them.
    assert len(rows) == 2 * 4 and summary["settings"]["limit"] == 4
    qs = load_questions(small_set)
    assert sorted({r["id"] for r in rows}) == sorted(q.id for q in qs[::2])
    assert any(not r["answerable"] for r in rows)
    by = {(r["condition"], r["id"]): r for r in rows}
    for q in qs[::2]:
        oracle = by[("oracle", q.id)]
        if q.gold:                       # the gold articles, and nothing else, as context
            assert {(s["source"], s["article"]) for s in oracle["sources"]} == {
                (g.file, g.article) for g in q.gold}
            assert not oracle["retrieval_abstained"] and "hit@1" not in oracle
        else:                            # no gold: no context, an abstention
            assert oracle["retrieval_abstained"] and oracle["abstention"] == 1.0
    for r in rows:
        assert {"evidence", "citations_attached", "needs_check", "strict_replaced"} <= set(r)
        if not r["abstained"]:
            assert {"grounded", "grounding_fired", "posthoc_cited"} <= set(r)
            if r["answerable"]:
                assert "citation_recall" in r
    m = summary["metrics"]["base/oracle"]
    assert {"grounded", "grounding_fired", "posthoc_cited", "citation_recall"} <= set(m)
    report = (out / "report.md").read_text("utf-8")
    assert "base/oracle" in report and "grounding_fired" in report and "posthoc_cited" in report
    import csv
    with (out / "results.csv").open(encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert {"citation_precision", "citation_recall", "context_precision", "context_recall",
            "grounded", "evidence"} <= set(row)


def test_fixed_answers_score_citations_and_post_hoc_attachment(retriever):
    """An answer without a citation gets its article attached, which citation recall
    counts; one citing a wrong article has precision 0."""
    from rag.answer import Answer
    from rag.context import Source
    from rag.evaluation.run import _trust_fields
    from rag.evaluation.questions import Question
    from rag.trust import Trust

    p42 = next(p for p in retriever.passages if p.source == "学則.txt" and p.article == "第42条")
    q = Question("q", "一の学年度に修得した単位数が少ないと除籍されますか", gold=[Gold("学則.txt", "第42条")])
    a = Trust()(Answer(q.question, "一の学年度で16単位に満たないと除籍されます。", [Source(p42, 1.0)],
                       False, True), _NoCheck())
    row = _trust_fields(q, a, retriever)
    assert row["posthoc_cited"] == 1.0 and row["grounded"] == 1.0
    assert row["citation_precision"] == 1.0 and row["citation_recall"] == 1.0
    a = Trust()(Answer(q.question, "16単位に満たないと除籍されます（学則第8条）。", [Source(p42, 1.0)],
                       False, True), _NoCheck())
    row = _trust_fields(q, a, retriever)
    assert row["posthoc_cited"] == 0.0 and row["citation_precision"] == 0.0
    assert row["context_precision"] == 0.0 and row["citation_recall"] == 0.0


class _NoCheck:
    check = None


def test_limit_spreads_and_unknown_conditions_are_named(tmp_path):
    from rag.evaluation.run import limit
    assert limit(list(range(10)), 4) == [0, 2, 5, 7]
    assert limit(list(range(3)), 5) == [0, 1, 2] and limit(list(range(3)), None) == [0, 1, 2]
    with pytest.raises(EvalError, match="oracle"):
        run(CORPUS / "questions.jsonl", tmp_path / "out", EvalSettings(conditions=["nope"]))


def test_calibrate_stores_the_decision_that_answering_then_uses(tmp_path, corpus_index,
                                                                 tiny_generator):
    import shutil
    from rag.abstention import load_for_index
    from rag.cli import cli
    from rag.factory import AnswerOptions, ModelOptions, build_answerer
    from rag.config import Config

    index = tmp_path / "idx"
    shutil.copytree(corpus_index, index)
    runner = CliRunner()
    r = runner.invoke(cli, ["calibrate", str(CORPUS / "questions.jsonl"), "--index", str(index),
                            "--dry-run"], obj={})
    assert r.exit_code == 0, r.output
    assert "cross-validated" in r.output and load_for_index(index) is None
    r = runner.invoke(cli, ["calibrate", str(CORPUS / "questions.jsonl"), "--index", str(index),
                            "--json"], obj={})
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    model = load_for_index(index)
    assert model is not None and report["saved"] == str(index / "abstention.json")
    assert model.meta["questions"] == [str(CORPUS / "questions.jsonl")]
    # Every answering command's Answerer decides with it before generating.
    answerer = build_answerer(Config(index=str(index)), ModelOptions(model=str(tiny_generator)),
                              AnswerOptions(max_new_tokens=4))
    qs = load_questions(CORPUS / "questions.jsonl")
    answers = [answerer.ask(q.question) for q in qs]
    decided = [a.abstention for a in answers]
    assert all(d is not None and set(d) == {"abstain", "probability", "reasons"} for d in decided)
    flagged = [a for a in answers if a.abstention["abstain"]]
    assert flagged and all(a.abstained for a in flagged)
