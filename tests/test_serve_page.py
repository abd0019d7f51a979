"""The question page of `rag serve` (issue 14) in a real browser: Debian's chromium,
headless, driven by Playwright, against a real `rag serve` started on loopback with a
tiny real model and a tiny index.

A student types the seed question, watches the answer stream in, sees the articles it
rests on, opens one, and sends 👍 with a comment, which the server stores. One of the
indexed regulations contains <script>alert(1)</script>: it must show as text, and no
dialog may open. A second test feeds the page answers through Playwright's routing (an
abstention, an answer containing HTML, a 401 and an error event) to check what the tiny
model cannot be made to say.

Playwright's own browser download is not used: the system chromium is launched by path.
Without chromium or the playwright package the tests skip and say why.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import CORPUS, REPO

SEED = "半年で15単位しか取れませんでした。除籍されますか？"
SCRIPT = "<script>alert(1)</script>"
# A regulation whose text (and title) would run code if the page used innerHTML. Its
# words are the seed question's, so that the question retrieves it.
SCRIPT_DOC_TITLE = "東雲大学<b>除籍</b>の特例に関する規程"
SCRIPT_DOC = f"""{SCRIPT_DOC_TITLE}

（除籍の特例）
第１条　半年で修得した単位が１５単位に満たない者は、学則第４２条にかかわらず、直ちに除籍されることはない。{SCRIPT}
２　前項の者には、学期の終わりに指導教員が面談を行う。<img src=x onerror=alert(2)>

（補則）
第２条　この規程に定めるもののほか、除籍の特例に関し必要な事項は、教授会が定める。
"""
MAX_NEW_TOKENS = 24
COMMENT = "根拠の条文まで分かって助かりました <i>本当に</i>"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return next((p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
                 if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError as e:
        pytest.skip(f"the playwright package cannot be imported ({e}; pip install -e "
                    "'.[test]'): the page's browser test needs it")
    executable = _chromium()
    if not executable:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs "
                    "it); the page's browser test needs it")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:       # a chromium this Playwright cannot drive
            pytest.skip(f"chromium at {executable} could not be launched by Playwright: "
                        f"{str(e).splitlines()[0]}")
        yield browser
        browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, browser):
    """`rag serve` in its own process, as a department starts it: a config file, the
    index of 学則 and the <script> regulation, the tiny model; loopback, a free port.
    (The tiny models are built only once a browser is there: a skip costs nothing.)"""
    from ingest.pipeline import IngestSettings, ingest

    tiny_embedder = request.getfixturevalue("tiny_embedder")
    tiny_generator = request.getfixturevalue("tiny_generator")

    root = tmp_path_factory.mktemp("serve-page")
    docs = root / "corpus"
    docs.mkdir()
    shutil.copy(CORPUS / "学則.txt", docs / "学則.txt")
    (docs / "除籍の特例に関する規程.txt").write_text(SCRIPT_DOC, encoding="utf-8")
    index = root / "index"
    ingest([docs], index, IngestSettings(embedder=str(tiny_embedder)))

    port = _free_port()
    feedback_db = root / "feedback.sqlite3"
    config = root / "rag.toml"
    config.write_text(f"""
index = {json.dumps(str(index))}
[search]
# The tiny embedder is random: BM25 alone makes what the seed question finds certain.
mode = "bm25"
[generate]
model = {json.dumps(str(tiny_generator))}
max_new_tokens = {MAX_NEW_TOKENS}
[serve]
host = "127.0.0.1"
port = {port}
batch_wait_ms = 5
feedback_db = {json.dumps(str(feedback_db))}
""", encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAG_") or k in ("RAG_CONFIG",)}
    env.update(RAG_CONFIG=str(config), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rag", "serve", "--port", str(port)],
                                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"rag serve exited with {proc.returncode}:\n"
                            + log.read_text(errors="replace")[-3000:])
            try:
                if _get(base + "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("rag serve was not ready within 180 s:\n"
                            + log.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield {"url": base, "feedback_db": feedback_db, "log": log, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Records every piece of text the page adds to the answer, and whether it said then that
# it was still generating: a streamed answer arrives in several pieces while busy.
WATCH_ANSWER = """
window.__answerSteps = [];
document.addEventListener("DOMContentLoaded", () => {
  const answer = document.getElementById("answer");
  new MutationObserver((records) => {
    for (const r of records) window.__answerSteps.push({
      added: r.addedNodes.length, busy: answer.getAttribute("aria-busy") === "true",
      status: document.getElementById("status").textContent,
    });
  }).observe(answer, {childList: true});
});
"""


def _watch(page) -> dict:
    seen = {"dialogs": [], "errors": []}

    def on_dialog(dialog):
        seen["dialogs"].append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda e: seen["errors"].append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and "favicon" not in m.text
            and "status of 404" not in m.text and seen["errors"].append(m.text))
    return seen


def test_a_student_asks_reads_the_articles_and_rates_the_answer(browser, server, tmp_path,
                                                                capsys):
    # A phone's viewport: the page must be usable there.
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="ja-JP",
                                  device_scale_factor=1, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.add_init_script(WATCH_ANSWER)
    seen = _watch(page)
    response = page.goto(server["url"] + "/")
    assert response.status == 200
    assert page.locator("html").get_attribute("lang") == "ja"
    assert "width=device-width" in page.locator('meta[name="viewport"]').get_attribute("content")

    # Enter sends the question (a text area: Shift+Enter would break the line).
    page.fill("#question", SEED)
    page.press("#question", "Enter")
    page.wait_for_selector("#feedback:not([hidden])")          # the `done` event came
    assert page.locator("#ask-button").is_enabled()
    assert page.text_content("#ask-button") == "送信"
    assert page.text_content("#status") == ""
    assert page.locator("#error").is_hidden()

    answer = page.text_content("#answer")
    assert answer.strip(), "the answer is empty"
    steps = page.evaluate("window.__answerSteps")
    streamed = [s for s in steps if s["busy"] and s["added"]]
    assert len(streamed) >= 2, f"the answer did not stream: {steps}"
    assert all(s["status"] == "生成中…" for s in streamed)

    # The articles it rests on: regulation name, 第N条 and caption.
    sources = page.locator("#sources > li")
    assert sources.count() >= 2
    summaries = [sources.nth(i).locator("summary").inner_text() for i in range(sources.count())]
    assert any("東雲大学情報科学部学則" in s and "第42条" in s and "（除籍）" in s
               for s in summaries), summaries
    assert page.locator("#abstain-notice").is_hidden()

    # The <script> regulation: its title and text show as text, nothing runs.
    script_item = sources.filter(has_text=SCRIPT_DOC_TITLE).filter(has_text="第1条").first
    assert script_item.count() == 1, summaries
    text = script_item.locator(".src-text")
    assert text.is_hidden()                                    # closed until clicked
    script_item.locator("summary").click()
    text.wait_for(state="visible")
    assert SCRIPT in text.inner_text()
    assert "<img src=x onerror=alert(2)>" in text.inner_text()
    assert page.locator("#sources script, #sources img, #sources b").count() == 0
    assert "（除籍の特例）" in script_item.locator("summary").inner_text()

    # Nothing overflows sideways on the phone.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

    # 👍 with a comment; the server stores it with the question and the answer.
    page.click("#fb-up")
    assert page.get_attribute("#fb-up", "aria-pressed") == "true"
    page.fill("#fb-comment", COMMENT)
    page.click("#fb-send")
    page.wait_for_selector("#fb-status:has-text('ありがとうございました')")
    assert page.locator("#error").is_hidden()
    with sqlite3.connect(server["feedback_db"]) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM feedback")]
    assert len(rows) == 1, rows
    assert rows[0]["rating"] == "up"
    assert rows[0]["comment"] == COMMENT
    assert rows[0]["question"] == SEED
    assert rows[0]["answer"].strip() == answer.strip()
    assert SCRIPT_DOC_TITLE in rows[0]["sources"]

    shot = tmp_path / "serve-page-phone.png"
    page.screenshot(path=str(shot), full_page=True)
    page.set_viewport_size({"width": 1100, "height": 900})
    desktop = tmp_path / "serve-page-desktop.png"
    page.screenshot(path=str(desktop), full_page=True)
    with capsys.disabled():
        print(f"\nserve page screenshots: {shot}  {desktop}")

    # A question no regulation speaks of (BM25 finds nothing): the server abstains and
    # the page says so plainly; the previous answer's feedback is gone.
    page.fill("#question", "qwxzqj")
    page.click("#ask-button")
    page.wait_for_selector("#abstain-notice:not([hidden])")
    page.wait_for_selector("#feedback:not([hidden])")
    assert "見当たりません" in page.text_content("#abstain-notice")
    assert page.text_content("#answer").strip()
    assert page.text_content("#fb-status") == ""
    assert page.input_value("#fb-comment") == ""
    assert page.get_attribute("#fb-up", "aria-pressed") == "false"
    assert page.locator("#sources > li").count() == 0
    assert page.locator("#sources-heading").is_hidden()
    assert "近い条文" not in page.inner_text("#abstain-notice")      # there are none
    page.screenshot(path=str(tmp_path / "serve-page-abstained.png"), full_page=True)

    assert seen["dialogs"] == []
    assert seen["errors"] == [], seen["errors"]       # CSP refusals would show here
    context.close()


def _sse(*events: tuple[str, dict], newline: str = "\n") -> str:
    return "".join(f"event: {name}{newline}data: {json.dumps(data, ensure_ascii=False)}"
                   f"{newline}{newline}" for name, data in events)


def test_abstention_html_answers_tokens_and_errors(browser, server, tmp_path):
    """What the tiny model cannot be made to say, fed to the page through routing: the
    page and its scripts are still the server's."""
    context = browser.new_context(viewport={"width": 1000, "height": 900}, locale="ja-JP")
    page = context.new_page()
    page.set_default_timeout(30_000)
    seen = _watch(page)
    asked: list[dict] = []
    replies: list = []

    def fulfil(route):
        request = route.request
        asked.append({"body": json.loads(request.post_data or "{}"),
                      "auth": request.headers.get("authorization")})
        status, body, ctype = replies.pop(0)
        route.fulfill(status=status, body=body, content_type=ctype)

    page.route("**/api/ask", fulfil)
    page.goto(server["url"] + "/")

    # An abstention whose answer contains HTML: the notice shows, the HTML is text.
    nearest = {"n": 1, "source": "学則.txt", "title": "東雲大学情報科学部学則",
               "article": "第5条", "caption": "修業年限", "paragraph": "", "page": 3,
               "score": 0.1, "cross_reference_from": None, "text": "第５条　修業年限は、４年とする。"}
    html_answer = "規程には該当する定めが見当たりません。<img src=x onerror=alert(3)><b>太字</b>"
    replies.append((200, _sse(("token", {"text": html_answer[:10]}),
                              ("token", {"text": html_answer[10:]}),
                              ("sources", {"abstained": True, "sources": [nearest]}),
                              ("done", {"id": "a-1", "question": "学食の営業時間は？",
                                        "answer": html_answer, "abstained": True,
                                        "sources": [nearest]})), "text/event-stream"))
    page.fill("#question", "学食の営業時間は？")
    page.click("#ask-button")
    page.wait_for_selector("#feedback:not([hidden])")
    assert asked[-1]["body"] == {"question": "学食の営業時間は？", "stream": True}
    assert page.locator("#abstain-notice").is_visible()
    assert "見当たりませんでした" in page.text_content("#abstain-notice")
    assert "下に示すのは質問に近い条文です" in page.inner_text("#abstain-notice")
    assert page.text_content("#sources-heading") == "参考: 質問に近い条文"
    assert page.text_content("#answer") == html_answer
    assert page.locator("#answer img, #answer b").count() == 0
    assert "3ページ" in page.locator("#sources summary").inner_text()
    page.screenshot(path=str(tmp_path / "abstained.png"), full_page=True)

    # A server with RAG_API_TOKEN: 401 asks for the token, which is kept and sent.
    replies.append((401, json.dumps({"error": "missing or wrong bearer token"}),
                    "application/json"))
    page.fill("#question", SEED)
    page.press("#question", "Enter")
    page.wait_for_selector("#token-form:not([hidden])")
    assert "API トークンが必要です" in page.text_content("#error")
    assert page.locator("#result").is_hidden()
    replies.append((200, _sse(("token", {"text": "トークン付きの回答"}),
                              ("sources", {"abstained": False, "sources": []}),
                              ("done", {"id": "a-2", "question": SEED, "answer": "トークン付きの回答",
                                        "abstained": False, "sources": []}),
                              newline="\r\n"),               # CRLF events parse too
                    "text/event-stream"))
    page.fill("#token-input", "s3cret")
    page.click("#token-save")                   # saves and asks the question again
    page.wait_for_selector("#feedback:not([hidden])")
    assert asked[-1]["auth"] == "Bearer s3cret"
    assert page.evaluate("localStorage.getItem('rag-api-token')") == "s3cret"
    assert page.locator("#token-form").is_hidden()
    assert page.locator("#error").is_hidden()
    assert page.locator("#no-sources").is_visible()

    # Errors in Japanese: an error event mid-stream, a full queue, a dropped connection.
    replies.append((200, _sse(("token", {"text": "途中まで"}),
                              ("error", {"error": "generation failed"})), "text/event-stream"))
    page.click("#ask-button")
    page.wait_for_selector("#error:not([hidden])")
    assert "回答の生成中にエラーが発生しました" in page.text_content("#error")
    assert page.locator("#ask-button").is_enabled()
    replies.append((503, json.dumps({"error": "queue full"}), "application/json"))
    page.click("#ask-button")
    page.wait_for_selector("#error:has-text('混み合っている')")      # (no eval under the CSP)
    replies.append((200, _sse(("token", {"text": "途切れる"})), "text/event-stream"))
    page.click("#ask-button")
    page.wait_for_selector("#error:has-text('途切れました')")

    assert seen["dialogs"] == []
    unexpected = [e for e in seen["errors"]         # the 401 and the 503 were the test's
                  if not ("status of 401" in e or "status of 503" in e)]
    assert unexpected == [], seen["errors"]
    context.close()
