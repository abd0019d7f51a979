"""[generate] backend = "openai": generation on a real OpenAI-compatible HTTP server on
loopback (tests/http_servers.py, running the tiny transformers model), retrieval here."""
import json
import socket
import threading

import pytest
from click.testing import CliRunner

from http_servers import openai_server
from rag.generation.hf import TransformersGenerator
from rag.generation.base import GenerationOptions

QUESTION = "半年で15単位しか取れませんでした。除籍されますか？"


@pytest.fixture(scope="module")
def served(tiny_generator):
    """The tiny model loaded once, behind an OpenAI-compatible server."""
    generator = TransformersGenerator(str(tiny_generator), device="cpu")
    with openai_server(generator) as (url, app):
        yield url, app, generator


def _run(*args, env=None):
    from rag.cli import cli
    return CliRunner().invoke(cli, list(map(str, args)), obj={}, env=env)


def _config(tmp_path, url, model, api="completions", extra=""):
    conf = tmp_path / f"rag-{api}.toml"
    conf.write_text(f'[generate]\nbackend = "openai"\nbase_url = "{url}"\nmodel = "{model}"\n'
                    f'api = "{api}"\n{extra}')
    return conf


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ask_with_the_openai_backend_gives_the_local_greedy_answer(
        served, tiny_generator, corpus_index, tmp_path):
    url, app, _ = served
    local = _run("ask", QUESTION, "--index", corpus_index, "--model", tiny_generator,
                 "--max-new-tokens", 24, "--json")
    assert local.exit_code == 0, local.output
    app.state["requests"].clear()
    for api in ("completions", "chat"):
        remote = _run("--config", _config(tmp_path, url, tiny_generator, api), "ask", QUESTION,
                      "--index", corpus_index, "--max-new-tokens", 24, "--json")
        assert remote.exit_code == 0, remote.output
        a, b = json.loads(local.stdout), json.loads(remote.stdout)
        assert b["answer"] == a["answer"] and a["answer"]
        assert b["sources"] == a["sources"] and b["abstained"] is False
        assert b["timings"]["generated_tokens"] > 0 and b["timings"]["first_token_ms"] > 0
    sent = app.state["requests"]
    assert [r["path"] for r in sent] == ["/v1/completions", "/v1/chat/completions"]
    assert sent[0]["stream"] is True and sent[0]["temperature"] == 0.0
    assert sent[0]["max_tokens"] == 24 and sent[0]["add_special_tokens"] is False
    # the prompt rendered here, with the retrieved articles: the server only generates
    prompt, first = sent[0]["prompt"], json.loads(local.stdout)["sources"][0]
    assert "### 指示:" in prompt and f"{first['title']} {first['article']}" in prompt
    assert prompt.endswith(f"質問: {QUESTION}\n\n### 応答:\n")
    assert sent[1]["messages"] == [{"role": "user", "content": sent[0]["prompt"]}]


def test_streams_as_the_server_generates(served, tiny_generator):
    from rag.generation.openai_compat import OpenAIGenerator

    url, app, local = served
    remote = OpenAIGenerator(url, str(tiny_generator))
    assert remote.context_window == local.context_window       # from the server's /models
    prompt = "第42条 学長は、次の各号のいずれかに該当する者を"
    options = GenerationOptions(max_new_tokens=20)
    release = threading.Event()
    app.hold_after_first = release          # the server holds the rest back until released
    got = []

    def on_text(piece):
        got.append(piece)
        release.set()                       # the first piece came while the server waited

    gen = remote.generate(prompt, options, on_text=on_text)
    assert app.state.pop("held") is True and len(got) > 1
    expected = local.generate(prompt, options)
    assert "".join(got) == gen.text == expected.text
    assert gen.new_tokens == expected.new_tokens and not gen.cancelled
    batch = remote.generate_batch([prompt, "休学"], options)
    assert [g.text for g in batch] == [expected.text, local.generate("休学", options).text]


def test_cancel_closes_the_stream_and_the_server_stops(served, tiny_generator):
    from rag.generation.openai_compat import OpenAIGenerator

    url, app, _ = served
    remote = OpenAIGenerator(url, str(tiny_generator))
    release = threading.Event()
    app.hold_after_first = release
    app.state.pop("client_went_away", None)

    def on_text(piece):
        remote.cancel()
        release.set()

    options = GenerationOptions(max_new_tokens=200, fixed_length=True)
    gen = remote.generate("学生は", options, on_text=on_text)
    assert gen.cancelled and gen.new_tokens < 200
    with app.lock:           # the server's generation has ended: it saw the client go
        assert app.state.get("client_went_away") is True
        assert app.state["pieces_sent"] < 200


def test_errors_name_the_server(served, tiny_generator, corpus_index, tmp_path):
    url, app, _ = served
    down = f"http://127.0.0.1:{_free_port()}/v1"
    r = _run("--config", _config(tmp_path, down, tiny_generator), "ask", QUESTION,
             "--index", corpus_index)
    assert r.exit_code == 1 and f"cannot reach OpenAI-compatible server at {down}" in r.output
    assert "Traceback" not in r.output
    r = _run("--config", _config(tmp_path, "", tiny_generator), "ask", QUESTION,
             "--index", corpus_index)
    assert r.exit_code == 1 and "needs [generate] base_url" in r.output
    r = _run("--config", _config(tmp_path, url, tiny_generator), "ask", QUESTION,
             "--index", corpus_index, "--adapter", "x")
    assert r.exit_code == 1 and "--lora-modules" in r.output
    app.token = "s3cret"
    try:
        r = _run("--config", _config(tmp_path, url, tiny_generator), "ask", QUESTION,
                 "--index", corpus_index, "--max-new-tokens", 4,
                 env={"RAG_OPENAI_API_KEY": "wrong", "OPENAI_API_KEY": None})
        assert r.exit_code == 1 and "401" in r.output and "Incorrect API key" in r.output
        assert "RAG_OPENAI_API_KEY" in r.output
        r = _run("--config", _config(tmp_path, url, tiny_generator), "ask", QUESTION,
                 "--index", corpus_index, "--max-new-tokens", 4, "--json",
                 env={"RAG_OPENAI_API_KEY": None, "OPENAI_API_KEY": "s3cret"})
        assert r.exit_code == 0, r.output
    finally:
        app.token = None
    r = _run("--config", _config(tmp_path, url, tiny_generator, "fancy"), "ask", QUESTION)
    assert r.exit_code == 1 and "api must be completions or chat" in r.output


def test_stream_batch_streams_each_and_stops_one_alone(served, tiny_generator):
    """What `rag serve` calls with its batches: each sequence streams to its own reader; a
    reader that fails or a sequence cancelled stops alone, the others finish."""
    from rag.generation.openai_compat import OpenAIGenerator

    url, app, local = served
    remote = OpenAIGenerator(url, str(tiny_generator))
    options = GenerationOptions(max_new_tokens=12)
    prompts = ["第42条 学長は", "休学の期間は", "授業料を"]
    got = [[], [], []]

    def failing(piece):
        raise RuntimeError("reader gone")

    gone = threading.Event()
    gone.set()
    out = remote.stream_batch(prompts + ["学生は"], options,
                              on_text=[got[0].append, failing, got[2].append, None],
                              cancelled=[threading.Event(), threading.Event(),
                                         threading.Event(), gone])
    expected = [local.generate(p, options).text for p in prompts]
    assert out[0].text == "".join(got[0]) == expected[0] and not out[0].cancelled
    assert out[2].text == "".join(got[2]) == expected[2] and not out[2].cancelled
    assert out[1].cancelled and out[3].cancelled and out[3].text == ""
