"""`rag serve` against a real uvicorn server on loopback, with the tiny generator and
an index of the sample corpus: the JSON and SSE shapes of docs/serve-api.md field by
field, the OpenAI endpoint over plain HTTP, the token, the limits (413/422/429/503/504),
a disconnect stopping its generation, feedback to export, live re-index, and load."""
import json
import shutil
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import pytest
from click.testing import CliRunner

from rag.config import Config, GenerateSection
from rag.factory import AnswerOptions, ModelOptions
from rag.serve.app import create_app
from rag.serve.guard import TokenBuckets
from rag.serve.loader import WorkerOptions, build_engine
from rag.serve.state import ServeSettings
from serve_client import EventStream, LiveServer, request, with_headers

QUESTION = "半年で15単位しか取れませんでした。除籍されますか？"
CAP = 600          # the server's max_new_tokens: room for the disconnect test's long answer


@pytest.fixture(scope="module")
def served(tmp_path_factory, corpus_index, tiny_generator):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # a tiny model on a busy 2-core machine: no thread fights
    index = tmp_path_factory.mktemp("serve") / "idx"
    shutil.copytree(corpus_index, index)
    cfg = Config(index=str(index),
                 generate=GenerateSection(model=str(tiny_generator), max_new_tokens=CAP))
    settings = ServeSettings(rate_per_minute=0, timeout_s=60,
                             feedback_db=str(index.parent / "feedback.sqlite3"))
    workers = WorkerOptions(batch_size=16, batch_wait_ms=20, queue_size=64, index_check_ms=100)
    app = create_app(settings, lambda: build_engine(cfg, ModelOptions(), AnswerOptions(),
                                                    workers))
    server = LiveServer(app).start()
    server.settings, server.index, server.cfg = settings, index, cfg
    server.engine = app.state.rag.engine
    yield server
    server.stop()
    torch.set_num_threads(threads)


def _ask(served, **body):
    return request(served.url + "/api/ask", {"question": QUESTION, "max_new_tokens": 8, **body})


def test_health_readiness_page_and_headers(served):
    assert request(served.url + "/healthz") == (200, {"status": "ok"})
    status, ready = request(served.url + "/readyz")
    assert status == 200 and ready["status"] == "ready"
    assert ready["index_generation"].startswith("gen-") and ready["model"] == served.cfg.generate.model
    assert ready["adapter"] is None and ready["queue"] == {"waiting": 0, "capacity": 64}
    status, headers, page = with_headers(served.url + "/")
    assert status == 200 and "<html" in page.lower()
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = with_headers(served.url + "/no/such/page")
    assert status == 404 and json.loads(body) == {"error": "Not Found"}
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_search_is_rag_search_json(served):
    status, hits = request(served.url + "/api/search?q=%E9%99%A4%E7%B1%8D&k=3&mode=bm25")
    retriever, _ = served.engine.index.current()
    assert status == 200 and hits == [h.to_json() for h in retriever.search("除籍", 3, "bm25")]
    assert {"rank", "score", "source", "article", "heading", "text", "title", "id"} <= set(hits[0])
    assert request(served.url + "/api/search?q=x&mode=vector")[0] == 400
    assert request(served.url + "/api/search?q=x&k=0")[0] == 400


def test_ask_json_is_rag_ask_json_plus_id(served):
    from rag.answer import Answerer
    from rag.generation.base import GenerationOptions

    status, answer = _ask(served)
    assert status == 200
    assert set(answer) == {"question", "answer", "abstained", "retrieval", "sources", "timings",
                           "id", "index_generation", "model", "adapter", "evidence",
                           "citations_attached", "grounding", "needs_check", "abstention",
                           "strict_replaced"}
    assert answer["question"] == QUESTION and answer["retrieval"] and not answer["abstained"]
    assert answer["index_generation"] == served.engine.index.generation
    assert answer["timings"]["generated_tokens"] <= 8 and answer["timings"]["retrieval_ms"] > 0
    for key in ("first_token_ms", "queue_ms", "generation_ms", "prompt_tokens", "checks_ms"):
        assert answer["timings"][key] is not None
    source = answer["sources"][0]
    assert {"n", "source", "title", "article", "caption", "paragraph", "page", "score",
            "cross_reference_from", "label", "heading", "text", "id", "rests_on"} <= set(source) \
        and source["n"] == 1
    # The same answer `rag ask` gives: greedy, through the same answering path.
    from rag.trust import Trust
    retriever, _ = served.engine.index.current()
    trust = Trust()
    local = Answerer(served.engine.generator, retriever, options=GenerationOptions(8),
                     finishers=[trust], precheck=trust.before).ask(QUESTION)
    assert answer["answer"] == local.text
    assert [s["id"] for s in answer["sources"]] == [s.passage.id for s in local.sources]


def test_the_cli_and_the_server_take_the_same_answering_path(served, monkeypatch):
    """A question from `rag ask`, from /api/ask and from /v1 goes through Answerer.prepare
    and then Answerer.finish, and nothing else builds its Answer."""
    from rag.answer import Answerer
    from rag.cli import cli

    calls = []
    for name in ("prepare", "finish"):
        real = getattr(Answerer, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(Answerer, name, spy)
    assert _ask(served)[0] == 200
    assert calls == ["prepare", "finish"]
    calls.clear()
    status, _ = request(served.url + "/v1/chat/completions", {
        "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4})
    assert status == 200 and calls == ["prepare", "finish"]
    calls.clear()
    r = CliRunner().invoke(cli, ["ask", QUESTION, "--index", str(served.index), "--model",
                                 served.cfg.generate.model, "--max-new-tokens", "8", "--json"],
                           obj={})
    assert r.exit_code == 0, r.output
    assert calls == ["prepare", "finish"]
    assert json.loads(r.stdout)["answer"] == _ask(served)[1]["answer"]


def test_ask_streams_tokens_then_sources_then_done(served):
    stream = EventStream(served.port, "/api/ask",
                         {"question": QUESTION, "max_new_tokens": 8, "stream": True})
    assert stream.status == 200
    assert stream.response.getheader("Content-Type").startswith("text/event-stream")
    events = list(stream)
    kinds = [k for k, _ in events]
    # The passages first (retrieval is done before generation starts), then the text.
    assert kinds[0] == "sources" and kinds[-1] == "done" and set(kinds[1:-1]) == {"token"}
    done = events[-1][1]
    assert "".join(d["text"] for k, d in events if k == "token").strip() == done["answer"]
    early = events[0][1]
    assert early["abstained"] == done["abstained"]
    assert [s["id"] for s in early["sources"]] == [s["id"] for s in done["sources"]]
    assert all(s["heading"] is not None for s in early["sources"])
    assert done["id"] and done["index_generation"] == served.engine.index.generation


def test_openai_chat_completions(served):
    messages = [{"role": "system", "content": "ignored"},
                {"role": "user", "content": "休学できますか"},
                {"role": "assistant", "content": "学則第30条によりできます。"},
                {"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    status, out = request(served.url + "/v1/chat/completions",
                          {"model": "anything", "messages": messages, "max_tokens": 6})
    assert status == 200 and out["object"] == "chat.completion"
    assert out["id"].startswith("chatcmpl-") and isinstance(out["created"], int)
    choice = out["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    assert out["usage"]["completion_tokens"] <= 6 and out["usage"]["total_tokens"] == (
        out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"])
    assert out["sources"] and "根拠:" in choice["message"]["content"]
    first = out["sources"][0]
    assert f"[1] {first['title']} {first['label']}" in choice["message"]["content"]

    stream = EventStream(served.port, "/v1/chat/completions",
                         {"messages": messages, "max_tokens": 6, "stream": True})
    chunks = list(stream)
    assert chunks[-1] == ("message", "[DONE]")
    data = [c for _, c in chunks[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == data[0]["id"]
               for c in data)
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert data[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert data[-1]["sources"] == out["sources"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in data)
    assert text == choice["message"]["content"]        # greedy: the same answer streamed
    assert request(served.url + "/v1/chat/completions",
                   {"messages": [{"role": "assistant", "content": "x"}]})[0] == 400


def test_token_is_required_when_set(served, monkeypatch):
    monkeypatch.setattr(served.settings, "token", "s3cret")
    assert request(served.url + "/api/search?q=x")[0] == 401
    assert request(served.url + "/api/search?q=x",
                   headers={"Authorization": "Bearer wrong"})[0] == 401
    assert request(served.url + "/api/search?q=x",
                   headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert request(served.url + "/v1/chat/completions", {"messages": []})[0] == 401
    assert request(served.url + "/healthz")[0] == 200 and request(served.url + "/readyz")[0] == 200


def test_limits(served, monkeypatch):
    status, out = request(served.url + "/api/ask", raw=b'{"question": "' + b"a" * 70000 + b'"}')
    assert status == 413 and "bytes" in out["error"]
    status, out = _ask(served, question="長" * 1001)
    assert status == 422 and "question" in out["error"]
    status, out = _ask(served, max_new_tokens=CAP + 1)
    assert status == 400 and "max_new_tokens" in out["error"]
    assert request(served.url + "/api/ask", raw=b"{not json")[0] == 400
    assert _ask(served, stream="yes")[0] == 400

    monkeypatch.setattr(served.settings, "timeout_s", 0.001)
    status, out = _ask(served)
    assert status == 504 and "time limit" in out["error"]
    monkeypatch.undo()

    monkeypatch.setattr(served.settings, "buckets", TokenBuckets(per_minute=1, burst=2))
    assert [request(served.url + "/api/search?q=x")[0] for _ in range(2)] == [200, 200]
    status, headers, body = with_headers(served.url + "/api/search?q=x")
    assert status == 429 and int(headers["Retry-After"]) > 0 and "error" in json.loads(body)


def test_ask_takes_history_validated_and_bounded(served, monkeypatch):
    """`history` reaches the Answerer (a follow-up is retrieved with its subject); a
    malformed or oversized history is refused with the field named."""
    seen = []
    prepare = served.engine.prepare
    monkeypatch.setattr(served.engine, "prepare",
                        lambda q, history=(), **kw: seen.append(list(history)) or
                        prepare(q, history, **kw))
    turn = {"question": QUESTION, "answer": "いいえ、直ちには除籍されません。" * 500}
    status, answer = _ask(served, question="それは延長できますか？", history=[turn])
    assert status == 200, answer
    from rag.prompt import Turn
    limit = 4 * served.settings.max_question_chars
    assert seen[-1] == [Turn(QUESTION, turn["answer"][:limit])]
    assert _ask(served, history=[])[0] == 200 and seen[-1] == []
    short = {"question": "休学できますか？", "answer": "できます。"}
    for bad in ("x", [{"question": 1, "answer": ""}], [["q", "a"]], [short] * 21):
        status, out = _ask(served, history=bad)
        assert status == 400 and "history" in out["error"], (bad, out)
    lone = b'{"question": "x", "history": [{"question": "\\ud800", "answer": ""}]}'
    req = urllib.request.Request(served.url + "/api/ask", data=lone,
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
        status = 200
    except urllib.error.HTTPError as e:
        status, body = e.code, json.loads(e.read())
    assert status == 400 and "history[0]" in body["error"]
    long_q = {"question": "あ" * (served.settings.max_question_chars + 1), "answer": ""}
    status, out = _ask(served, history=[long_q])
    assert status == 422 and "history[0].question" in out["error"]


def test_the_page_is_told_the_question_limit(served, monkeypatch):
    monkeypatch.setattr(served.settings, "max_question_chars", 321)
    status, headers, page = with_headers(served.url + "/")
    assert status == 200 and 'data-max-question-chars="321"' in page
    assert headers["Content-Type"].startswith("text/html")


def test_disconnect_stops_generation_and_a_full_queue_says_503(served, monkeypatch):
    engine = served.engine
    monkeypatch.setattr(engine.generator, "stop_ids", [])     # never ends early by chance
    stream = EventStream(served.port, "/api/ask",
                         {"question": QUESTION, "max_new_tokens": CAP, "stream": True})
    events = iter(stream)
    assert next(events)[0] == "sources"              # retrieval done
    assert next(events)[0] == "token"                # the worker is busy with it now
    monkeypatch.setattr(engine.worker, "max_batch", 1)       # a full batch: the next waits
    monkeypatch.setattr(engine.worker._queue, "maxsize", 1)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_ask, served, max_new_tokens=2)
        until = time.monotonic() + 10
        while engine.worker.waiting < 1 and time.monotonic() < until:
            time.sleep(0.01)
        status, headers, body = with_headers(served.url + "/api/ask",
                                             {"question": QUESTION, "max_new_tokens": 2})
        assert status == 503 and int(headers["Retry-After"]) > 0 and json.loads(body)["error"]
        stream.close()                               # hang up: the long answer stops
        assert waiting.result()[0] == 200            # and the one that waited is answered
    long = [j for j in engine.worker.stats.recent if j.options.max_new_tokens == CAP][-1]
    assert long.generation.cancelled and 0 < long.generation.new_tokens < CAP


def test_feedback_is_stored_and_exported_as_a_question_set(served, tmp_path):
    from rag.cli import cli
    from rag.evaluation.questions import load_questions

    _, answer = _ask(served)
    ok = request(served.url + "/api/feedback", {"id": answer["id"], "rating": "down",
                                                "comment": "第42条の説明が違う"})
    assert ok == (200, {"ok": True})
    _, chat = request(served.url + "/v1/chat/completions",
                      {"messages": [{"role": "user", "content": "休学できますか"}], "max_tokens": 4})
    assert request(served.url + "/api/feedback", {"id": chat["id"], "rating": "up"})[0] == 200
    assert request(served.url + "/api/feedback", {"id": "nope", "rating": "up"})[0] == 404
    assert request(served.url + "/api/feedback", {"id": answer["id"], "rating": "meh"})[0] == 400

    out = tmp_path / "questions.jsonl"
    r = CliRunner().invoke(cli, ["feedback", "export", "--db", served.settings.feedback_db,
                                 "--out", str(out)], obj={})
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    mine = next(row for row in rows if row["id"] == f"feedback-{answer['id']}")
    assert mine["question"] == QUESTION and mine["model_answer"] == answer["answer"]
    assert (mine["rating"], mine["comment"]) == ("down", "第42条の説明が違う")
    assert mine["answer"] == "" and mine["gold"] == [] and mine["must_include"] == []
    assert mine["index_generation"] == answer["index_generation"]
    assert mine["model"] == served.cfg.generate.model and mine["sources"] == answer["sources"]
    assert mine["suggested_gold"][0] == {"file": answer["sources"][0]["source"],
                                         "article": answer["sources"][0]["article"]}
    questions = load_questions(out)                    # what rag eval and build-data read
    assert {q.question for q in questions} >= {QUESTION, "休学できますか"}
    # Another SQLite file is named as no feedback database, and left as it was.
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    r = CliRunner().invoke(cli, ["feedback", "export", "--db", str(other), "--out",
                                 str(tmp_path / "o.jsonl")], obj={})
    assert r.exit_code == 1 and "not a feedback database" in r.output
    with closing(sqlite3.connect(other)) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]


NEW_RULE = """東雲大学学生寮ペット飼育規程

（趣旨）
第１条　この規程は、学生寮におけるペットの飼育について定める。

（ハムスターの飼育）
第２条　寮生は、寮長の許可を得て、ハムスターを一匹に限り飼育することができる。
"""


def test_live_reindex_answers_from_the_new_generation(served, tmp_path):
    from rag.cli import cli

    before = served.engine.index.generation
    embedder = served.engine.index.current()[0]._embedder
    failures, answered = [], []
    stop = threading.Event()

    def keep_asking():
        while not stop.is_set():
            status, out = _ask(served, max_new_tokens=4)
            (answered if status == 200 else failures).append((status, out))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        doc = tmp_path / "ペット飼育規程.txt"
        doc.write_text(NEW_RULE, encoding="utf-8")
        r = CliRunner().invoke(cli, ["ingest", str(doc), "--index", str(served.index), "-q"],
                               obj={})
        assert r.exit_code == 0, r.output
        until = time.monotonic() + 20
        while time.monotonic() < until:
            generation = request(served.url + "/readyz")[1]["index_generation"]
            if generation != before:
                break
            time.sleep(0.05)
        assert generation != before
    finally:
        stop.set()
        asker.join()
    assert not failures and answered
    assert served.engine.index.current()[0]._embedder is embedder     # not loaded again
    status, hits = request(served.url + "/api/search?q=%E3%83%8F%E3%83%A0%E3%82%B9%E3%82%BF%E3%83%BC"
                                        "&mode=bm25&k=1")   # ハムスター
    assert status == 200 and hits[0]["source"].endswith("ペット飼育規程.txt")
    assert hits[0]["article"] == "第2条"
    status, answer = _ask(served, question="寮でハムスターを飼えますか？")
    assert status == 200 and answer["index_generation"] == generation
    assert any(s["source"].endswith("ペット飼育規程.txt") for s in answer["sources"])


def test_32_clients_asking_4_questions_each(served):
    questions = [QUESTION, "休学できますか", "授業料はいつ納めますか", "再入学はできますか"]
    batches_before = served.engine.worker.stats.batches

    def client(n):
        return [_ask(served, question=q, max_new_tokens=4, stream=False)[0]
                for q in questions[n % 4:] + questions[:n % 4]]

    with ThreadPoolExecutor(32) as pool:
        statuses = [s for result in pool.map(client, range(32)) for s in result]
    assert statuses == [200] * 128
    stats = served.engine.worker.stats
    assert stats.largest_batch > 1 and stats.batches - batches_before < 128


def test_an_internal_error_is_json_without_a_trace(served, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/rag")

    monkeypatch.setattr(served.engine, "search", broken)
    status, headers, body = with_headers(served.url + "/api/search?q=x")
    assert status == 500 and json.loads(body) == {"error": "internal server error"}
    assert "secret" not in body and headers["Content-Security-Policy"]
    assert any("secret internals" in r.getMessage() or (r.exc_info and "secret internals" in
               str(r.exc_info[1])) for r in caplog.records)          # logged on the server


def test_a_server_without_an_index_answers_whole_prompts_from_the_model(tiny_generator,
                                                                       tmp_path):
    """`rag serve --no-retrieval`: the generation server of another `rag` (backend =
    "openai", api = "chat"), which sends rendered prompts longer than any question and
    no `retrieval` field."""
    cfg = Config(generate=GenerateSection(model=str(tiny_generator), max_new_tokens=8))
    settings = ServeSettings(rate_per_minute=0, feedback_db=str(tmp_path / "fb.sqlite3"))
    app = create_app(settings, lambda: build_engine(cfg, ModelOptions(), AnswerOptions(),
                                                    WorkerOptions(), retrieval=False))
    server = LiveServer(app).start()
    try:
        prompt = "【条文】" + "第42条 学長は、除籍する。" * 80       # > max_question_chars
        assert len(prompt) > settings.max_question_chars
        status, answer = request(server.url + "/api/ask", {"question": prompt})
        assert status == 200 and answer["retrieval"] is False and answer["sources"] == []
        status, done = request(server.url + "/v1/chat/completions",
                               {"messages": [{"role": "user", "content": prompt}]})
        assert status == 200 and done["choices"][0]["message"]["content"]
        status, err = request(server.url + "/api/ask", {"question": prompt, "retrieval": True})
        assert status == 400 and "no index" in err["error"]
    finally:
        server.stop()
