"""Answers a student can trust (rag/trust.py) end to end on fixed passages and a generator
that says what the test wants: evidence spans, attached citations, the rests-on split,
the numeric check and --strict-grounding, streaming of what the finisher changed, the
calibrated abstention decision from the index's abstention.json, the JSON contract, and
that none of it changes the prompt."""
import json

import pytest
from click.testing import CliRunner

from rag.abstention import FILE_NAME, FEATURES, AbstentionModel
from rag.answer import Answerer, unstreamed
from rag.generation.base import Generation, GenerationOptions, Generator
from rag.grounding import STRICT_PREFIX
from rag.prompt import ABSTAIN_ANSWER, PROMPT_VERSION, render
from rag.retrieval.retriever import Hit
from rag.trust import Trust

from fixed_passages import LIB, P28, P42, TITLE

SEED = "半年で15単位しか取れませんでした。除籍されますか？"
ITEM = "三　一の学年度において修得した単位数が１６単位に満たない者（ただし、最終学年に在学する者を除く。）"
CONTRACT = {"question", "answer", "abstained", "retrieval", "sources", "evidence",
            "citations_attached", "grounding", "needs_check", "abstention", "strict_replaced",
            "timings"}


class SayGenerator(Generator):
    """A generator that answers `text`, in pieces when streamed; counts its calls. The
    rest (whole batches for the server, no continuous batching) is the base's."""
    name, adapter, load_s, context_window = "say", None, 0.0, 4096
    tokenizer = None

    def __init__(self, text: str):
        super().__init__()
        self.text, self.calls = text, 0

    def count_tokens(self, prompt: str) -> int:
        return len(prompt) // 2

    def generate(self, prompt, options, on_text=None):
        self.calls += 1
        if on_text:
            for i in range(0, len(self.text), 5):
                on_text(self.text[i:i + 5])
        return Generation(self.text, 10, 5.0, 100.0, True)

    def generate_batch(self, prompts, options):
        return [self.generate(p, options) for p in prompts]

    def stream_batch(self, prompts, options, on_text=None, cancelled=None):     # the server
        return [self.generate(p, options, cb) for p, cb in zip(prompts, on_text or [None] * 9)]


class FixedRetriever:
    """Hits over three fixed passages; `index_dir` where abstention.json may lie."""
    def __init__(self, index_dir, sims=(0.90, 0.86, 0.80)):
        self.index_dir, self.sims = index_dir, sims
        self.passages = [P42, P28, LIB]
        self.thesaurus = None

    def search(self, query, k=5, mode="hybrid"):
        return [Hit(i + 1, 0.03 - 0.001 * i, p, s)
                for i, (p, s) in enumerate(zip(self.passages, self.sims))][:k]


def answerer(text, tmp_path, strict=False, **kw):
    trust = Trust(strict_grounding=strict)
    return Answerer(SayGenerator(text), FixedRetriever(tmp_path, **kw), follow_references=False,
                    options=GenerationOptions(32), finishers=[trust], precheck=trust.before)


def test_the_finisher_quotes_evidence_attaches_citations_and_splits_sources(tmp_path):
    text = "一の学年度で16単位に満たない場合に除籍となるため、まだ除籍されません。"
    a = answerer(text, tmp_path).ask(SEED)
    out = a.to_json()
    assert CONTRACT <= set(out)
    ev = out["evidence"][0]
    assert set(ev) == {"passage_id", "source", "title", "article", "label", "quote", "start",
                       "end", "score"}
    assert (ev["passage_id"], ev["article"], ev["quote"]) == ("g42", "第42条", ITEM)
    assert P42.text[ev["start"]:ev["end"]] == ITEM
    # The model cited nothing: 第42条 is attached, in the JSON and at the end of the text.
    assert out["citations_attached"] == [{"source": "学則.txt", "title": TITLE,
                                          "article": "第42条", "text": f"{TITLE}第42条"}]
    assert out["answer"] == text + f"（根拠: {TITLE}第42条）"
    rests = {s["id"]: s["rests_on"] for s in out["sources"]}
    assert rests["g42"] is True and rests["lib"] is False
    assert out["grounding"] == {"grounded": True, "claims": ["16単位"], "unsupported": [],
                                "clause": None}
    assert out["needs_check"] is False and out["strict_replaced"] is False
    assert out["abstention"] is None               # no abstention.json: min_score's rule


def test_an_unsupported_number_is_marked_and_strict_grounding_quotes_the_clause(tmp_path):
    text = "一の学年度に修得した単位数が14単位に満たない者は除籍されます。"
    a = answerer(text, tmp_path).ask("除籍の要件は何ですか")
    g = a.to_json()["grounding"]
    assert a.needs_check and not g["grounded"]
    assert [c["text"] for c in g["unsupported"]] == ["14単位"]
    assert g["clause"]["quote"] == ITEM and g["clause"]["article"] == "第42条"
    strict = answerer(text, tmp_path, strict=True).ask("除籍の要件は何ですか")
    assert strict.strict_replaced and not strict.needs_check
    assert strict.text == f"{STRICT_PREFIX}\n「{ITEM}」（{TITLE}第42条（除籍）より引用）"
    assert [e.quote for e in strict.evidence] == [ITEM]
    assert strict.to_json()["grounding"]["grounded"] is False     # what the model said


def test_streaming_gets_the_citation_note_last_and_a_strict_answer_whole(tmp_path):
    text = "一の学年度で16単位に満たない場合に除籍となるため、まだ除籍されません。"
    pieces = []
    a = answerer(text, tmp_path).ask(SEED, on_text=pieces.append)
    assert "".join(pieces) == a.text and pieces[-1] == f"（根拠: {TITLE}第42条）"
    pieces = []
    a = answerer("14単位で除籍されます。", tmp_path, strict=True).ask("除籍の要件は何ですか",
                                                                 on_text=pieces.append)
    assert pieces == [a.text] and a.strict_replaced     # held back: the replacement only
    assert unstreamed("abc", "abc（根拠: X）") == "（根拠: X）"
    assert unstreamed(" abc\n", "abc") == "" and unstreamed("", "x") == "x"
    assert unstreamed("wrong", "quote") == "\n\nquote"


def _model(bias: float, grounding_weight: float = 1.0) -> AbstentionModel:
    """Abstains on questions whose key words no passage of the index has."""
    w = [0.0] * len(FEATURES)
    w[FEATURES.index("unknown_words")] = 6.0
    return AbstentionModel(w, bias, [0.0] * len(FEATURES), [1.0] * len(FEATURES),
                           threshold=0.5, grounding_weight=grounding_weight)


def test_a_calibrated_abstention_json_decides_before_generating(tmp_path):
    a = answerer("学食は11時から営業しています。", tmp_path)
    got = a.ask("学食の営業時間を教えてください")
    assert a.generator.calls == 1 and not got.abstained     # no abstention.json: answers
    _model(-2.0).save(tmp_path)
    assert (tmp_path / FILE_NAME).is_file()
    a = answerer("学食は11時から営業しています。", tmp_path)
    got = a.ask("学食の営業時間を教えてください")
    assert a.generator.calls == 0 and got.abstained and got.text == ABSTAIN_ANSWER
    assert got.abstention["abstain"] and got.abstention["reasons"] == ["retrieval"]
    out = got.to_json()
    assert not any(s["rests_on"] for s in out["sources"]) and out["evidence"] == []
    # A covered question is answered; the decision is reported.
    a = answerer("休学期間は通算して4年を超えることができません。", tmp_path)
    got = a.ask("休学期間は通算で何年までですか")
    assert a.generator.calls == 1 and not got.abstained
    assert got.abstention == {"abstain": False, "probability": pytest.approx(0.1192, abs=1e-4),
                              "reasons": []}


def test_failed_grounding_can_tip_the_decision_after_generation(tmp_path):
    _model(-1.0, grounding_weight=2.0).save(tmp_path)
    a = answerer("休学期間は通算して7年までです。", tmp_path)
    pieces = []
    got = a.ask("休学期間は通算で何年までですか", on_text=pieces.append)
    assert got.abstained and got.text == ABSTAIN_ANSWER
    assert got.abstention["reasons"] == ["retrieval", "ungrounded"]
    assert pieces == [ABSTAIN_ANSWER]            # held back, so "7年" was never shown
    # The model's own 定めが見当たりません is an abstention too, calibrated or not.
    got = answerer("規程には定めが見当たりません。", tmp_path / "none").ask("学食はありますか")
    assert got.abstained and got.text == "規程には定めが見当たりません。"


def test_none_of_it_changes_the_prompt(tmp_path):
    """The prompt an adapter was trained on stays byte-identical with the finisher and a
    calibrated model (PROMPT_VERSION unchanged)."""
    assert PROMPT_VERSION == 3
    plain = Answerer(SayGenerator("x"), FixedRetriever(tmp_path), follow_references=False,
                     options=GenerationOptions(32))
    _model(-9.0).save(tmp_path)
    trusted = answerer("x", tmp_path, strict=True)
    q = "休学期間は通算で何年までですか"
    a, b = plain.prepare(q), trusted.prepare(q)
    assert a.prompt == b.prompt and b.hold and not a.hold
    assert a.prompt == render(None, q, [s.context() for s in a.sources])


def _run(*args):
    from rag.cli import cli
    return CliRunner().invoke(cli, list(map(str, args)), obj={})


@pytest.fixture
def say(monkeypatch):
    """`rag ask` with its generator replaced by one that answers the given text."""
    def use(text):
        monkeypatch.setattr("rag.factory.build_generator",
                            lambda *a, **kw: SayGenerator(text))
    return use


def test_ask_prints_evidence_checks_and_strict_grounding(corpus_index, say):
    from rag.retrieval.retriever import Retriever
    passages = Retriever(corpus_index).passages
    p42 = next(p for p in passages if p.source == "学則.txt" and p.article == "第42条")
    q = "一の学年度に修得した単位数が少ないと除籍されますか"
    say("一の学年度で10単位に満たないと除籍されます。")
    r = _run("ask", q, "--index", corpus_index)
    assert r.exit_code == 0, r.output
    assert "要確認:" in r.output and "「10単位」" in r.output
    assert "根拠:" in r.output and "    「" in r.output
    r = _run("ask", q, "--index", corpus_index, "--json")
    out = json.loads(r.output)
    assert CONTRACT <= set(out) and out["needs_check"] and not out["strict_replaced"]
    assert any(s["rests_on"] for s in out["sources"])
    r = _run("ask", q, "--index", corpus_index, "--json", "--strict-grounding")
    out = json.loads(r.output)
    assert out["strict_replaced"] and out["answer"].startswith(STRICT_PREFIX)
    assert "10単位" not in out["answer"]
    assert any(e["passage_id"] == p42.id for e in out["evidence"]) or out["evidence"]
    # The setting does the same.
    conf = corpus_index.parent / "strict.toml"
    conf.write_text("[generate]\nstrict_grounding = true\n")
    r = _run("--config", conf, "ask", q, "--index", corpus_index, "--json")
    assert json.loads(r.output)["strict_replaced"]
    say("一の学年度で16単位に満たないと除籍されます。")
    r = _run("ask", q, "--index", corpus_index)
    assert r.exit_code == 0 and "要確認" not in r.output


def test_the_server_streams_the_note_last_holds_a_strict_answer_and_fills_v1(
        corpus_index, say, tmp_path):
    from rag.config import Config, GenerateSection
    from rag.factory import AnswerOptions, ModelOptions
    from rag.serve.app import create_app
    from rag.serve.loader import WorkerOptions, build_engine
    from rag.serve.state import ServeSettings
    from serve_client import EventStream, LiveServer, request

    q = "一の学年度に修得した単位数が少ないと除籍されますか"
    for strict in (False, True):
        say("一の学年度の単位数が16単位に満たないと除籍されます。" if not strict
            else "一の学年度の単位数が10単位に満たないと除籍されます。")
        cfg = Config(index=str(corpus_index), generate=GenerateSection(strict_grounding=strict))
        app = create_app(ServeSettings(rate_per_minute=0, timeout_s=30,
                                       feedback_db=str(tmp_path / f"f{strict}.sqlite3")),
                         lambda: build_engine(cfg, ModelOptions(), AnswerOptions(),
                                              WorkerOptions()))
        server = LiveServer(app).start()
        try:
            events = list(EventStream(server.port, "/api/ask", {"question": q, "stream": True}))
            tokens = [d["text"] for k, d in events if k == "token"]
            done = events[-1][1]
            assert "".join(tokens) == done["answer"] and CONTRACT <= set(done)
            if strict:
                assert done["strict_replaced"] and tokens == [done["answer"]]
            else:
                assert done["citations_attached"] and tokens[-1] == \
                    f"（根拠: {done['citations_attached'][0]['text']}）"
            status, out = request(server.url + "/v1/chat/completions",
                                  {"messages": [{"role": "user", "content": q}]})
            assert status == 200
            assert set(out["rag"]) == {"evidence", "citations_attached", "grounding",
                                       "needs_check", "abstention", "strict_replaced"}
            assert out["rag"]["strict_replaced"] is strict and out["rag"]["evidence"]
            assert any(s["rests_on"] for s in out["sources"])
        finally:
            server.stop()
