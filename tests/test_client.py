"""`rag ask/search --server URL` (and RAG_SERVER): the client side of docs/serve-api.md,
against the real `rag serve` app on loopback, in this process so the tests can watch and
steer it (tests/http_servers.py), compared with what the same commands print locally.
tests/test_serve_client.py runs `rag serve` itself, as a command in its own process."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from http_servers import contract_server

REPO = Path(__file__).resolve().parents[1]
QUESTION = "半年で15単位しか取れませんでした。除籍されますか？"


CAP = 600          # the server's max_new_tokens: room for a stream its client leaves


@pytest.fixture(scope="module")
def served(tiny_generator, corpus_index, tmp_path_factory):
    from rag.answer import Answerer
    from rag.generation.base import GenerationOptions
    from rag.generation.hf import TransformersGenerator
    from rag.retrieval.retriever import Retriever
    from rag.trust import Trust

    trust = Trust()                  # as rag.factory builds every command's Answerer
    answerer = Answerer(TransformersGenerator(str(tiny_generator), device="cpu"),
                        Retriever(corpus_index), options=GenerationOptions(CAP),
                        finishers=[trust], precheck=trust.before)
    with contract_server(answerer, tmp_path_factory.mktemp("contract")) as (url, app):
        yield url, app


def _run(*args, env=None):
    from rag.cli import cli
    return CliRunner().invoke(cli, list(map(str, args)), obj={}, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_search_prints_what_local_search_prints(served, corpus_index):
    url, _ = served
    for extra in ([], ["--json"], ["--full", "--mode", "bm25"]):
        local = _run("search", QUESTION, "--index", corpus_index, "-k", 3, *extra)
        remote = _run("search", QUESTION, "--server", url, "-k", 3, *extra)
        assert local.exit_code == 0 and remote.exit_code == 0, remote.output
        assert remote.stdout == local.stdout and "学則" in remote.stdout
    queries = Path(corpus_index).parent / "queries.txt"
    queries.write_text("除籍\n休学の期間\n", encoding="utf-8")
    local = _run("search", "--queries", queries, "--index", corpus_index, "-k", 2, "--json")
    remote = _run("search", "--queries", queries, "-k", 2, "--json",
                  env={"RAG_SERVER": url})                     # the variable does it too
    assert remote.exit_code == 0 and remote.stdout == local.stdout
    assert len(remote.stdout.splitlines()) == 2


def test_ask_json_is_local_ask_json(served, tiny_generator, corpus_index):
    url, app = served
    local = _run("ask", QUESTION, "--index", corpus_index, "--model", tiny_generator,
                 "--max-new-tokens", 16, "--json")
    remote = _run("ask", QUESTION, "--server", url, "--max-new-tokens", 16, "--json")
    assert remote.exit_code == 0, remote.output
    assert app.state["last_body"] == {"question": QUESTION, "stream": False,
                                      "max_new_tokens": 16}
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    assert set(b) == set(a) | {"id", "index_generation"}
    for key in ("question", "answer", "abstained", "retrieval", "sources", "model", "adapter"):
        assert b[key] == a[key], key
    remote = _run("ask", QUESTION, "--server", url, "--no-retrieval", "--max-new-tokens", 16,
                  "--json")
    assert app.state["last_body"]["retrieval"] is False and json.loads(remote.stdout)[
        "sources"] == []


def test_ask_streams_then_lists_the_sources_as_local_ask(served, tiny_generator, corpus_index):
    url, app = served
    local = _run("ask", QUESTION, "--index", corpus_index, "--model", tiny_generator,
                 "--max-new-tokens", 16)
    remote = _run("ask", QUESTION, "--server", url, "--max-new-tokens", 16, "--model", "x")
    assert remote.exit_code == 0, remote.output
    assert remote.stdout == local.stdout and "根拠:" in remote.stdout
    assert f"via {url}" in remote.stderr and "first token" in remote.stderr
    assert "--model not used with --server" in remote.stderr
    assert app.state["last_body"]["stream"] is True


def test_stream_arrives_as_generated_and_leaving_stops_the_server(served):
    from rag.client import Client

    url, app = served
    release = threading.Event()
    app.hold_after_first = release
    got = []

    def on_text(piece):
        got.append(piece)
        release.set()

    answer = Client(url).ask_stream(QUESTION, max_new_tokens=16, on_text=on_text)
    assert app.state.pop("held") is True
    assert "".join(got).strip() == answer["answer"] and answer["sources"]

    class Leave(Exception):
        pass

    def leave(piece):
        raise Leave
    stats = app.engine.worker.stats
    cancelled = stats.cancelled
    with pytest.raises(Leave):
        Client(url).ask_stream(QUESTION, max_new_tokens=CAP, on_text=leave)
    until = time.monotonic() + 30
    while stats.cancelled == cancelled and time.monotonic() < until:
        time.sleep(0.05)
    last = stats.recent[-1]
    assert last.generation.cancelled and last.generation.new_tokens < CAP


def test_errors_name_the_server(served, corpus_index):
    url, app = served
    down = f"http://127.0.0.1:{_free_port()}"
    for cmd in (["search", QUESTION], ["ask", QUESTION], ["ask", QUESTION, "--json"]):
        r = _run(*cmd, "--server", down)
        assert r.exit_code == 1 and f"cannot reach rag serve at {down}" in r.output
        assert "Traceback" not in r.output
    app.token = "s3cret"
    try:
        r = _run("search", QUESTION, "--server", url, env={"RAG_API_TOKEN": None})
        assert r.exit_code == 1 and "401" in r.output and "set RAG_API_TOKEN" in r.output
        r = _run("search", QUESTION, "--server", url, env={"RAG_API_TOKEN": "nope"})
        assert r.exit_code == 1 and "RAG_API_TOKEN is not the server's" in r.output
        r = _run("search", QUESTION, "--server", url, "--json",
                 env={"RAG_API_TOKEN": "s3cret"})
        assert r.exit_code == 0 and json.loads(r.stdout)
    finally:
        app.token = None
    with app.full_queue():
        r = _run("ask", QUESTION, "--server", url)
        assert r.exit_code == 1 and "503" in r.output and "the server is busy" in r.output
        assert "retry after 2 s" in r.output and url in r.output
    r = _run("search", QUESTION, "--server", "ftp://example")
    assert r.exit_code == 1 and "expected http://HOST:PORT" in r.output
    r = _run("search", QUESTION, "--server", "", "--index", corpus_index, "-k", 1,
             env={"RAG_SERVER": down})                     # --server '' answers locally
    assert r.exit_code == 0 and "[1]" in r.stdout


def test_server_from_rag_toml(served, tmp_path):
    url, _ = served
    conf = tmp_path / "rag.toml"
    conf.write_text(f'server = "{url}"\n')
    r = _run("--config", conf, "search", QUESTION, "-k", 1, "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 1
    conf.write_text('server = 5\n')
    r = _run("--config", conf, "search", QUESTION)
    assert r.exit_code == 1 and "server must be a string" in r.output


def test_a_cold_search_with_a_server_is_light(served):
    """The point of --server: no model, no index, no numpy in the client process."""
    url, _ = served
    code = ("import sys, time\nt = time.perf_counter()\nfrom rag.cli import cli\n"
            "try:\n    cli(['search', '除籍', '--server', sys.argv[1], '--json'], obj={})\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'numpy', 'faiss',"
            " 'sentence_transformers') if m in sys.modules))\n")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60)
    elapsed = time.perf_counter() - started
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert json.loads(out.stdout[:out.stdout.rindex("HEAVY")])[0]["rank"] == 1
    assert elapsed < 5          # about 0.3 s; generous for a loaded CI machine
