"""RAFT-style training data (issue 20, item 5): the target answer's shape (quote, answer,
cite; abstain examples), synthesized questions (parser and filter on fixed strings, the
generation path with a real tiny model), the document split, and that a build-data row
renders exactly the prompt `rag ask` renders."""
import json
from pathlib import Path

import pytest

from finetune.build_data import (ANSWER_LAYOUT, build, document_split, raft_answer,
                                 split_questions, strip_citations)
from finetune.synthesize import Draft, SynthReport, check, keep, parse, synthesize
from ingest.japanese import nfkc
from rag.evaluation.questions import Gold, Question, load_questions
from rag.prompt import ABSTAIN_ANSWER, INSTRUCTION_WITH_CONTEXT

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = REPO / "corpus" / "questions.jsonl"


@pytest.fixture(scope="module")
def retriever(corpus_index):
    from rag.retrieval.retriever import Retriever
    return Retriever(corpus_index)


def _by_id(rows, kind):
    return {r["id"]: r for r in rows if r["kind"] == kind}


def test_raft_rows_quote_the_deciding_clause_then_answer_then_cite(retriever):
    rows = build(retriever, QUESTIONS, k=4)
    qs = {q.id: q for q in load_questions(QUESTIONS)}
    answers = _by_id(rows, "answer")
    assert answers and {r["kind"] for r in rows} == {"answer", "abstain", "unanswerable"}
    for r in rows:
        assert r["instruction"] == INSTRUCTION_WITH_CONTEXT and r["answer_layout"] == ANSWER_LAYOUT
    quoted = 0
    for qid, r in answers.items():
        q = qs[qid]
        lines = r["output"].split("\n")
        # quote (when the gold article has a sentence), answer, citation: in that order
        assert lines[-2] == f"回答: {strip_citations(q.answer)}", r["output"]
        assert lines[-1].startswith("根拠: ") and all(g.article in lines[-1] for g in q.gold)
        if lines[0].startswith("条文: "):
            quoted += 1
            gold_text = "".join(nfkc(p.text) for g in q.gold
                                for p in retriever.article(g.file, g.article))
            for quote in lines[0][len("条文: 「"):-1].split("」「"):
                assert nfkc(quote) in gold_text          # quoted exactly, not paraphrased
        # the gold article is in the context, among distractors
        assert {f"{g.file}#{g.article}" for g in q.gold} <= set(r["context"])
    assert quoted >= 0.9 * len(answers)
    for r in rows:
        if r["kind"] != "answer":
            assert r["output"] == ABSTAIN_ANSWER
            gold = {f"{g.file}#{g.article}" for g in qs[r["id"]].gold}
            assert not gold & set(r["context"])          # the context lacks the answer


def test_the_seed_question_quotes_the_credit_rule(retriever):
    """第42条 decides 「半年で15単位…除籍されますか」: the quote is its 16単位 clause."""
    q = Question("seed", "半年で15単位しか取れませんでした。除籍されますか？",
                 "まだ除籍にはなりません。除籍は一学年度の修得単位数が16単位に満たない場合です（学則第42条）。",
                 ["16単位"], [Gold("学則.txt", "第42条")])
    out = raft_answer(q, retriever.article("学則.txt", "第42条"))
    quote, answer, cite = out.split("\n")
    assert quote.startswith("条文: 「") and "16単位" in nfkc(quote), out
    assert answer == "回答: まだ除籍にはなりません。除籍は一学年度の修得単位数が16単位に満たない場合です。"
    assert cite.startswith("根拠: ") and cite.endswith("学則第42条")


def test_strip_citations_keeps_the_sentence():
    assert strip_citations("2週間前までに掲示されます（試験及び成績評価に関する細則第3条第2項）。") \
        == "2週間前までに掲示されます。"
    assert strip_citations("休学は2年以内です(学則第20条)。学則第21条も参照。") \
        == "休学は2年以内です。学則第21条も参照。"


def test_plain_answers_keep_the_reference_answer(retriever):
    rows = build(retriever, QUESTIONS, k=4, raft=False)
    qs = {q.id: q for q in load_questions(QUESTIONS)}
    for qid, r in _by_id(rows, "answer").items():
        assert r["output"] == qs[qid].answer


# ---------------------------------------------------------------- synthesis: fixed strings

ARTICLE = "第20条（休学）\n休学の期間は、1年以内とする。ただし、特別の理由がある場合は、引き続き休学を許可することがある。"


@pytest.mark.parametrize("text,expected", [
    ("質問: 休学できる期間は？\n回答: 1年以内です。\n要点: 1年以内", Draft("休学できる期間は？", "1年以内です。", "1年以内")),
    ("**質問：** 休学できる期間は？\n- 回答：1年以内です。\n- 要点：「1年以内」\n質問: 二つ目",
     Draft("休学できる期間は？", "1年以内です。", "1年以内")),
    ("質問: 休学できる期間は？\n回答: 1年以内です。", None),          # no key phrase
    ("休学の期間は1年以内です。", None),
    ("質問:\n回答: 1年以内です。\n要点: 1年以内", None),                # empty question
])
def test_parse(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("draft,why", [
    (Draft("休学できる期間はどのくらいですか", "1年以内です。", "1年以内"), None),
    (Draft("休学できる期間はどのくらいですか", "１年以内です。", "1 年以内"), None),   # NFKC, spaces
    (Draft("休学できる期間はどのくらいですか", "2年以内です。", "2年以内"),
     "key phrase not in the article"),                                            # invented
    (Draft("休学できる期間はどのくらいですか", "休学は許可制です。", "1年以内"),
     "key phrase not in the answer"),
    (Draft("休学は1年以内ですか", "1年以内です。", "1年以内"), "key phrase in the question"),
    (Draft("休学できる期間はどのくらいですか", "1年です。", "1"), "key phrase too short"),
    (Draft("期間？", "1年以内です。", "1年以内"), "question too short"),
    (None, "unparsed"),
])
def test_check(draft, why):
    assert check(draft, ARTICLE) == why


def test_keep_turns_passing_drafts_into_questions_with_gold(retriever):
    ps = retriever.article("学則.txt", "第42条")
    article = "".join(p.text for p in ps)
    span = next(s for s in ("16単位", "１６単位") if s in article)
    texts = [f"質問: 1年間に取れた単位が少ないとどうなりますか\n回答: 修得単位が{span}に満たないと除籍されます。\n要点: {span}",
             f"質問: 1年間に取れた単位が少ないとどうなりますか\n回答: {span}未満は除籍です。\n要点: {span}",  # repeat
             "質問: 学長は誰ですか\n回答: 東雲太郎です。\n要点: 東雲太郎",                                  # invented
             "ランダムな出力"]
    report = SynthReport()
    made = keep([("学則.txt", "第42条", ps, t) for t in texts], report)
    assert report.generated == 4 and report.kept == 1 and len(made) == 1
    assert report.rejected == {"repeated question": 1, "key phrase not in the article": 1,
                               "unparsed": 1}
    q = made[0]
    assert q.gold == [Gold("学則.txt", "第42条")] and q.must_include == [span]
    # a synthesized question makes RAFT rows like a written one
    rows = build(retriever, questions=made, k=3)
    assert [r["kind"] for r in rows][:1] == ["answer"] and "学則.txt#第42条" in rows[0]["context"]
    assert "根拠: " in rows[0]["output"] and "除籍" in rows[0]["output"]


def test_synthesize_runs_a_real_tiny_model_through_the_filter(retriever, tiny_generator):
    """The generation call path with a real (random, tiny) causal LM: every article is
    prompted and every generation goes through the filter, which rejects its noise."""
    from rag.generation.hf import TransformersGenerator
    gen = TransformersGenerator(str(tiny_generator))
    report = SynthReport()
    made = synthesize(gen, retriever.passages, sources={"学則.txt"}, max_articles=3,
                      max_new_tokens=12, batch_size=2, report=report)
    assert report.articles == 3 and report.generated == 3
    assert report.kept + sum(report.rejected.values()) == 3 and report.kept == len(made)
    for q in made:                                   # whatever passed, passed honestly
        assert q.gold[0].file == "学則.txt"
    assert "synthesized 3 drafts from 3 articles" in report.line()


# ---------------------------------------------------------------- the document split

class _P:
    def __init__(self, source, title):
        self.source, self.title = source, title


def test_document_split_keeps_editions_together_and_excludes_eval_documents():
    ps = [_P(f"docs/u{i}-{y}.txt", f"大学{i}学則") for i in range(20) for y in (2016, 2023)]
    train, held = document_split(ps, eval_fraction=0.3, seed=1)
    assert train | held == {p.source for p in ps} and not train & held
    assert 0 < len(held) < len(ps)
    for i in range(20):                               # editions on one side
        assert (f"docs/u{i}-2016.txt" in held) == (f"docs/u{i}-2023.txt" in held)
    assert document_split(ps, eval_fraction=0.3, seed=1) == (train, held)   # stable
    some_train = sorted(train)[0]
    train2, held2 = document_split(ps, eval_fraction=0.3, seed=1, exclude={some_train})
    assert some_train in held2 and some_train.replace("2016", "2023") in held2 | {some_train}
    assert document_split(ps)[1] == set()             # no split asked: all trained on


def test_split_questions_by_their_gold_documents():
    qs = [Question("a", "q", "x", gold=[Gold("A.txt", "第1条")]),
          Question("b", "q", "x", gold=[Gold("A.txt", "第1条"), Gold("B.txt", "第2条")]),
          Question("c", "q", "x", gold=[Gold("C.txt", "第3条")]),
          *[Question(f"u{i}", "q", type="unanswerable") for i in range(40)]]
    train, held = split_questions(qs, {"B.txt"}, seed=0, eval_fraction=0.5)
    assert {"a", "c"} <= {q.id for q in train} and "b" in {q.id for q in held}
    unans = [q for q in held if q.id.startswith("u")]
    assert 5 < len(unans) < 35                        # by a hash of the id


def test_build_data_cli_splits_by_document_and_synthesizes(corpus_index, tiny_generator,
                                                           tmp_path):
    """End to end: --eval-fraction and --exclude-docs-of hold documents out; no row shows
    a held-out document, not even as a distractor; --synthesize runs the model."""
    from click.testing import CliRunner

    from rag.cli import cli
    exclude = tmp_path / "eval-set.jsonl"
    exclude.write_text(json.dumps({"id": "e1", "question": "休学は？", "answer": "x",
                                   "gold": [{"file": "履修規程.txt", "article": "第9条"}]},
                                  ensure_ascii=False) + "\n", "utf-8")
    out, synth, held = tmp_path / "rows.jsonl", tmp_path / "synth.jsonl", tmp_path / "held.jsonl"
    r = CliRunner().invoke(cli, [
        "finetune", "build-data", str(QUESTIONS), "--index", str(corpus_index), "--out", str(out),
        "--eval-fraction", "0.3", "--exclude-docs-of", str(exclude), "--eval-out", str(held),
        "--synthesize", "--model", str(tiny_generator), "--max-articles", "2",
        "--synth-out", str(synth), "-k", "3"])
    assert r.exit_code == 0, r.output
    split = json.loads(held.with_suffix(".split.json").read_text("utf-8"))
    assert "履修規程.txt" in split["eval"] and split["train"]
    assert not set(split["train"]) & set(split["eval"])
    rows = [json.loads(x) for x in out.read_text("utf-8").splitlines()]
    assert rows
    for row in rows:
        for c in row["context"]:
            assert c.split("#")[0] in split["train"], (row["id"], c)
    for q in load_questions(held):
        assert not q.gold or any(g.file in split["eval"] for g in q.gold)
    assert "synthesized 2 drafts from 2 articles" in r.output
    assert synth.is_file()
    drafts = [json.loads(x) for x in synth.with_suffix(".drafts.jsonl").read_text("utf-8").splitlines()]
    assert len(drafts) == 2 and all(d["source"] in split["train"] for d in drafts)


def test_build_data_needs_questions_or_synthesize(corpus_index, tmp_path):
    from click.testing import CliRunner

    from rag.cli import cli
    r = CliRunner().invoke(cli, ["finetune", "build-data", "--index", str(corpus_index),
                                 "--out", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 2 and "give a question set, or --synthesize" in r.output


# ---------------------------------------------------------------- one prompt

def test_a_build_data_row_is_the_prompt_rag_ask_renders(retriever, tiny_generator):
    """What the adapter is trained on (render_instruction of a row) is, token for token,
    the prompt the Answerer builds for that question and those passages."""
    from rag.answer import Answerer
    from rag.context import Source
    from rag.generation.hf import TransformersGenerator
    from rag.prompt import render_instruction

    gen = TransformersGenerator(str(tiny_generator))
    answerer = Answerer(gen, retriever, k=4, follow_references=False)
    rows = build(retriever, QUESTIONS, k=3)
    by_key = {}
    for p in retriever.passages:
        by_key.setdefault(f"{p.source}#{p.article}", []).append(p)
    checked = 0
    for row in rows[:12]:
        q = next(q for q in load_questions(QUESTIONS) if q.id == row["id"])
        passages = [p for key in row["context"] for p in by_key[key][:1]]
        if any(len(by_key[key]) > 1 for key in row["context"]):
            continue                      # a 項-split article: rows carry each part
        prompt, chosen = answerer.build(q.question, [Source(p) for p in passages])
        if len(chosen) != len(passages):
            continue                      # over the tiny model's budget
        assert render_instruction(gen.tokenizer, row["instruction"], row["input"]) == prompt
        checked += 1
    assert checked >= 3


def test_lora_targets_may_name_one_layer(tiny_generator):
    """A dotted target is the end of a module path (PEFT's rule): LoRA on the top layer
    only, so a CPU run back-propagates through that layer alone."""
    from transformers import AutoModelForCausalLM

    from finetune.config import TrainConfig
    from finetune.runtime import TrainError, lora_targets
    model = AutoModelForCausalLM.from_pretrained(tiny_generator)
    top = f"layers.{model.config.num_hidden_layers - 1}.attention.query_key_value"
    cfg = TrainConfig(model=str(tiny_generator), data=["x"], target_modules=[top])
    assert lora_targets(cfg, model) == [top]
    cfg.target_modules = ["layers.99.attention.query_key_value"]
    with pytest.raises(TrainError, match="no modules named layers.99"):
        lora_targets(cfg, model)


def test_a_short_max_length_that_keeps_mostly_abstentions_is_named(retriever, tiny_generator,
                                                                    tmp_path):
    """Answer rows carry the gold article and are the longest: a max_length that drops
    them keeps mostly abstentions (the real 0.5B adapter then abstained on 82 % of
    answerable questions). prepare counts each kind kept and dropped; length_skew says it."""
    from transformers import AutoTokenizer

    from finetune.data import length_skew, prepare, to_example, tokenize
    tok = AutoTokenizer.from_pretrained(tiny_generator)
    rows = build(retriever, QUESTIONS, k=4)
    data = tmp_path / "raft.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    lengths = {r["kind"]: [] for r in rows}
    for i, r in enumerate(rows):
        ex = to_example(r, tok, f"row {i}")
        lengths[r["kind"]].append(len(tokenize(ex, tok, 10**6)["input_ids"]))
    # Between the abstentions' and the answers' median lengths: most answers go.
    cut = sorted(lengths["answer"])[len(lengths["answer"]) // 2] - 1
    assert cut > sorted(lengths["abstain"])[len(lengths["abstain"]) // 2]

    counts = prepare([str(data)], tok, cut, 0.0, 10, 0).counts
    kinds = counts[str(data)]["kinds"]
    assert {k: v["rows"] for k, v in kinds.items()} == {k: len(v) for k, v in lengths.items()}
    assert kinds["answer"]["dropped_too_long"] == sum(n > cut for n in lengths["answer"])
    assert sum(k["dropped_too_long"] for k in kinds.values()) == counts[str(data)]["dropped_too_long"]
    warning = length_skew(counts, cut)
    assert warning.startswith(f"max_length {cut} changed the mix") and "answer" in warning
    assert "build-data -k" in warning

    roomy = prepare([str(data)], tok, 10**6, 0.0, 10, 0).counts
    assert length_skew(roomy, 10**6) is None                  # nothing dropped: no warning


def test_negatives_is_the_share_of_answerable_questions_given_an_abstain_row(retriever):
    kinds = {f: [r["kind"] for r in build(retriever, QUESTIONS, k=2, negatives=f)]
             for f in (0.0, 0.2, 1.0)}
    answers = kinds[1.0].count("answer")
    assert all(k.count("answer") == answers for k in kinds.values())
    assert kinds[0.0].count("abstain") == 0
    assert kinds[1.0].count("abstain") == answers          # every one (with distractors)
    assert 0.05 * answers < kinds[0.2].count("abstain") < 0.4 * answers
