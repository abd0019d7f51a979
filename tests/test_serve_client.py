"""The client side against the real `rag serve` on loopback: `rag ask/search --server`
print what the local commands print, and `[generate] backend = "openai"` generates on a
second `rag serve` while retrieving here."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

import rag.serve.app  # noqa: F401,E402 - without rag serve these tests fail; they never skip

REPO = Path(__file__).resolve().parents[1]
QUESTION = "半年で15単位しか取れませんでした。除籍されますか？"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args, env=None):
    from rag.cli import cli
    return CliRunner().invoke(cli, list(map(str, args)), obj={}, env=env)


@pytest.fixture(scope="module")
def server(tmp_path_factory, corpus_index, tiny_generator):
    """`rag serve` with the tiny model and the corpus index, on a free loopback port. Its
    limits admit a whole rendered prompt as a question (the openai backend's chat call)."""
    tmp = tmp_path_factory.mktemp("serve")
    conf = tmp / "rag.toml"
    conf.write_text(f'[serve]\nmax_question_chars = 100000\nmax_body_bytes = 1000000\n'
                    f'rate_per_minute = 0\nfeedback_db = "{tmp / "feedback.sqlite3"}"\n')
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAG_API_TOKEN", None)
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag", "--config", str(conf), "serve", "--host", "127.0.0.1",
         "--port", str(port), "--index", str(corpus_index), "--model", str(tiny_generator)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "rag serve did not get ready"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_search_server_prints_what_local_search_prints(server, corpus_index):
    for extra in ([], ["--json"]):
        local = _run("search", QUESTION, "--index", corpus_index, "-k", 3, *extra)
        remote = _run("search", QUESTION, "--server", server, "-k", 3, *extra)
        assert remote.exit_code == 0, remote.output
        assert remote.stdout == local.stdout


def test_ask_server_prints_what_local_ask_prints(server, corpus_index, tiny_generator):
    local = _run("ask", QUESTION, "--index", corpus_index, "--model", tiny_generator,
                 "--max-new-tokens", 16, "--json")
    remote = _run("ask", QUESTION, "--server", server, "--max-new-tokens", 16, "--json")
    assert remote.exit_code == 0, remote.output
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    for key in ("question", "answer", "abstained"):
        assert b[key] == a[key], key
    # The server's sources carry more (the article's text and label, for the page).
    assert [{k: s[k] for k in mine} for s, mine in zip(b["sources"], a["sources"])] == \
        a["sources"] and len(b["sources"]) == len(a["sources"])
    local = _run("ask", QUESTION, "--index", corpus_index, "--model", tiny_generator,
                 "--max-new-tokens", 16)
    remote = _run("ask", QUESTION, "--server", server, "--max-new-tokens", 16)
    assert remote.exit_code == 0, remote.output
    assert remote.stdout == local.stdout and "根拠:" in remote.stdout


def test_openai_backend_generates_on_a_second_rag_serve(server, corpus_index, tiny_generator,
                                                         tmp_path):
    """Retrieval and the prompt here, generation on the server's /v1/chat/completions
    (which treats the prompt as a question of its own: the text differs, the sources are
    this side's)."""
    conf = tmp_path / "rag.toml"
    conf.write_text(f'[generate]\nbackend = "openai"\nbase_url = "{server}/v1"\n'
                    f'model = "{tiny_generator}"\napi = "chat"\n')
    local = _run("search", QUESTION, "--index", corpus_index, "--json")
    r = _run("--config", conf, "ask", QUESTION, "--index", corpus_index, "--max-new-tokens",
             16, "--json")
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout)
    assert answer["answer"] and not answer["abstained"]
    assert answer["timings"]["first_token_ms"] is not None
    hits = {(h["source"], h["article"]) for h in json.loads(local.stdout)}
    assert answer["sources"] and all((s["source"], s["article"]) in hits
                                     for s in answer["sources"] if not s["cross_reference_from"])
    r = _run("--config", conf, "ask", QUESTION, "--index", corpus_index, "--max-new-tokens", 8)
    assert r.exit_code == 0 and "根拠:" in r.stdout


def test_cold_search_with_a_server_takes_under_a_second_or_so(server):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "rag", "search", QUESTION, "--server", server],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    elapsed = time.perf_counter() - started
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Q: ") and "[1]" in out.stdout
    assert elapsed < 5          # about 0.3 s measured; generous for a loaded CI machine
