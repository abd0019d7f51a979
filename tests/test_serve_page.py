"""The question page of `rag serve` (issues 14 and 21) in a real browser: Debian's
chromium, headless, driven by Playwright, against a real `rag serve` started on loopback
with a tiny real model and a tiny index.

A student starts from an example question, watches the answer stream in (the articles
shown before its first word, the seconds counted), opens an article, copies the answer,
sends 👍 with a comment (the server stores it), asks a follow-up (the page sends the
conversation as `history` and shows a thread), and starts a new conversation. One of
the indexed regulations contains <script>alert(1)</script>: it must show as text, and no
dialog may open. The textarea's limit is the server's.

A second test feeds the page answers through Playwright's routing, for what the tiny
model cannot be made to say: an abstention, an answer containing HTML, the evidence of
issue 20 (根拠 and その他の候補, the quoted span marked, 要確認 with its clause), prose
passages labelled by their headings, a 401, and every error the page can meet, each in
Japanese. A third runs the app in this process with a slowed model: the stop button
ends the generation on the server. A fourth (issue 22) chooses a 入学年度 and a 基準日: the
year is kept across a reload and both go with the question to the real server; a rating
the server refuses as already given (409, for real), a full disk (507), a busy database
(503) and a bad date or year (400) are said in Japanese; each source's edition shows.

Playwright's own browser download is not used: the system chromium is launched by path.
Without chromium or the playwright package the tests skip and say why.
"""
from __future__ import annotations

import json
import os
import re
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
MAX_QUESTION_CHARS = 300         # not the default: the page must be told the server's
FOLLOW_UP = "それは延長できますか？"
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
max_question_chars = {MAX_QUESTION_CHARS}
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


# Records every piece of text the page adds to an answer, whether it said then that it
# was still generating, what its progress line said, and how many articles its turn
# showed: a streamed answer arrives in several pieces while busy, after its sources.
WATCH_ANSWER = """
window.__answerSteps = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver((records) => {
    for (const r of records) {
      const answer = r.target.closest && r.target.closest(".answer");
      if (!answer || !r.addedNodes.length) continue;
      const turn = answer.closest(".turn");
      window.__answerSteps.push({
        added: r.addedNodes.length, busy: answer.getAttribute("aria-busy") === "true",
        progress: turn.querySelector(".progress").textContent,
        sources: turn.querySelectorAll(".sources > li").length,
        turn: Array.from(turn.parentNode.children).indexOf(turn),
      });
    }
  }).observe(document.getElementById("thread"), {childList: true, subtree: true});
});
"""

LAST = "#thread > .turn:last-child"


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


def _asked(page) -> list[dict]:
    """The bodies the page POSTs to /api/ask."""
    bodies: list[dict] = []
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/api/ask")
            and bodies.append(json.loads(r.post_data or "{}")))
    return bodies


def _english(text: str) -> list[str]:
    """Latin words in a message meant for students ("API" トークン is the one allowed)."""
    return [w for w in re.findall(r"[A-Za-z]{2,}", text) if w != "API"]


def _keep(*paths) -> None:
    """Copies of the screenshots where a person can look (RAG_PAGE_SHOTS=DIR)."""
    out = os.environ.get("RAG_PAGE_SHOTS")
    if out:
        os.makedirs(out, exist_ok=True)
        for p in paths:
            shutil.copy(p, os.path.join(out, p.name))


def _shots(page, tmp_path, name: str, capsys) -> list:
    """Full-page screenshots at phone and desktop width, light and dark."""
    paths = []
    size = page.viewport_size
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for label, width in (("phone", 390), ("desktop", 1100)):
            page.set_viewport_size({"width": width, "height": 900})
            path = tmp_path / f"{name}-{label}-{scheme}.png"
            page.screenshot(path=str(path), full_page=True)
            paths.append(path)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(size)
    _keep(*paths)
    with capsys.disabled():
        print(f"\nserve page screenshots: {' '.join(map(str, paths))}")
    return paths


def test_a_student_converses_reads_the_articles_and_rates_the_answer(browser, server,
                                                                     tmp_path, capsys):
    # A phone's viewport: the page must be usable there.
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="ja-JP",
                                  device_scale_factor=1, is_mobile=True, has_touch=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server["url"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.add_init_script(WATCH_ANSWER)
    seen = _watch(page)
    asked = _asked(page)
    response = page.goto(server["url"] + "/")
    assert response.status == 200
    assert page.locator("html").get_attribute("lang") == "ja"
    assert "width=device-width" in page.locator('meta[name="viewport"]').get_attribute("content")

    # The limit is the server's: the box takes MAX_QUESTION_CHARS characters, no more.
    assert page.get_attribute("#question", "maxlength") == str(MAX_QUESTION_CHARS)
    page.fill("#question", "あ" * (MAX_QUESTION_CHARS + 50))
    assert len(page.input_value("#question")) <= MAX_QUESTION_CHARS
    page.locator("#question").press_sequentially("い")
    assert len(page.input_value("#question")) == MAX_QUESTION_CHARS
    assert f"{MAX_QUESTION_CHARS} / {MAX_QUESTION_CHARS}文字" in page.text_content("#char-count")
    page.fill("#question", "")

    # The empty page offers example questions; one click asks the first.
    examples = page.locator("#welcome .example")
    assert page.locator("#welcome").is_visible() and examples.count() >= 3
    assert page.locator("#new-chat").is_hidden()
    _shots(page, tmp_path, "empty", capsys)
    assert examples.first.text_content().strip() == SEED
    examples.first.click()
    page.wait_for_selector(f"{LAST} .feedback:not([hidden])")       # the `done` event came
    assert asked[-1] == {"question": SEED, "stream": True}           # nothing before it
    assert page.locator("#welcome").is_hidden()
    assert page.locator("#ask-button").is_enabled()
    assert page.text_content("#ask-button") == "送信"
    assert page.locator("#stop-button").is_hidden()
    assert page.locator("#error").is_hidden()
    turn = page.locator(LAST)
    assert turn.locator(".q-text").text_content() == SEED
    assert re.fullmatch(r"\d+(\.\d)?秒", turn.locator(".elapsed").text_content())

    answer = turn.locator(".answer").text_content()
    assert answer.strip(), "the answer is empty"
    steps = page.evaluate("window.__answerSteps")
    streamed = [s for s in steps if s["busy"] and s["added"]]
    assert len(streamed) >= 2, f"the answer did not stream: {steps}"
    # The articles came before the first word, and the seconds were counted meanwhile.
    assert all(s["sources"] >= 1 for s in streamed), steps
    assert all(re.fullmatch(r"回答を生成中… \d+秒", s["progress"]) for s in streamed), steps

    # The articles: regulation name, 第N条 and caption; no file names. Those the answer
    # rests on are open (根拠); the rest, under a closed 「その他の候補」, are opened to read.
    sources = turn.locator(".sources > li")
    assert sources.count() >= 2
    main = turn.locator(".main-sources > li summary")
    assert main.count() >= 1
    if turn.locator(".others").is_visible():
        turn.locator(".others > summary").click()
    summaries = [sources.nth(i).locator("summary").inner_text() for i in range(sources.count())]
    assert any("東雲大学情報科学部学則" in s and "第42条" in s and "（除籍）" in s
               for s in summaries), summaries
    assert turn.locator(".abstain-notice").is_hidden()

    # The <script> regulation: its title and text show as text, nothing runs.
    script_item = sources.filter(has_text=SCRIPT_DOC_TITLE).filter(has_text="第1条").first
    assert script_item.count() == 1, summaries
    text = script_item.locator(".src-text")
    assert text.is_hidden()                                    # closed until clicked
    script_item.locator("summary").click()
    text.wait_for(state="visible")
    assert SCRIPT in text.inner_text()
    assert "<img src=x onerror=alert(2)>" in text.inner_text()
    assert page.locator("#thread script, #thread img, #thread b").count() == 0
    assert "（除籍の特例）" in script_item.locator("summary").inner_text()
    assert ".txt" not in "".join(turn.locator(".sources").all_text_contents())

    # Nothing overflows sideways on the phone.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

    # Copy: the answer and its articles, to the clipboard.
    turn.locator(".copy").click()
    page.wait_for_selector(f"{LAST} .copy-status:has-text('コピーしました')")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith(answer.strip()) and "根拠:" in copied
    assert all(" ".join(main.nth(i).text_content().split()) in copied
               for i in range(main.count())), copied

    # 👍 with a comment; the server stores it with the question and the answer.
    turn.locator(".fb-up").click()
    assert turn.locator(".fb-up").get_attribute("aria-pressed") == "true"
    turn.locator(".fb-comment").fill(COMMENT)
    turn.locator(".fb-send").click()
    page.wait_for_selector(f"{LAST} .fb-status:has-text('ありがとうございました')")
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

    # A follow-up: sent with the conversation so far, shown under it as a thread.
    page.fill("#question", FOLLOW_UP)
    page.press("#question", "Enter")
    page.wait_for_selector("#thread > .turn:nth-child(2) .feedback:not([hidden])")
    assert asked[-1] == {"question": FOLLOW_UP, "stream": True,
                         "history": [{"question": SEED, "answer": answer}]}
    turns = page.locator("#thread > .turn")
    assert turns.count() == 2
    assert turns.nth(0).locator(".answer").text_content() == answer     # still there
    assert turns.nth(1).locator(".q-text").text_content() == FOLLOW_UP
    assert turns.nth(1).locator(".fb-status").text_content() == ""      # its own feedback
    assert turns.nth(1).locator(".fb-up").get_attribute("aria-pressed") == "false"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    _shots(page, tmp_path, "thread", capsys)
    # What a student sees (not a full-page capture, which draws sticky boxes oddly): the
    # box at the foot of the screen under a thread, at the top of it too.
    for scheme, width in (("light", 390), ("dark", 1100)):
        page.emulate_media(color_scheme=scheme)
        page.set_viewport_size({"width": width, "height": 800})
        page.evaluate("window.scrollTo(0, 0)")
        box = page.locator("#question").bounding_box()
        assert box and box["y"] + box["height"] <= 800, box
        path = tmp_path / f"thread-screen-{width}-{scheme}.png"
        page.screenshot(path=str(path))
        _keep(path)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 390, "height": 844})

    # 新しい会話: the thread and its history are gone. A question no regulation speaks
    # of (BM25 finds nothing): the server abstains and the page says so plainly.
    page.click("#new-chat")
    assert turns.count() == 0 and page.locator("#welcome").is_visible()
    page.fill("#question", "qwxzqj")
    page.click("#ask-button")
    page.wait_for_selector(f"{LAST} .abstain-notice:not([hidden])")
    page.wait_for_selector(f"{LAST} .feedback:not([hidden])")
    assert asked[-1] == {"question": "qwxzqj", "stream": True}
    turn = page.locator(LAST)
    assert "見当たりません" in turn.locator(".abstain-notice").text_content()
    assert turn.locator(".answer").text_content().strip()
    assert turn.locator(".sources > li").count() == 0
    assert turn.locator(".sources-heading").is_hidden()
    assert "近い条文" not in turn.locator(".abstain-notice").inner_text()   # there are none
    page.screenshot(path=str(tmp_path / "abstained-phone.png"), full_page=True)
    _keep(tmp_path / "abstained-phone.png")

    assert seen["dialogs"] == []
    assert seen["errors"] == [], seen["errors"]       # CSP refusals would show here
    context.close()


def _sse(*events: tuple[str, dict], newline: str = "\n") -> str:
    return "".join(f"event: {name}{newline}data: {json.dumps(data, ensure_ascii=False)}"
                   f"{newline}{newline}" for name, data in events)


def _reply(answer: str, sources: list, *, abstained=False, **extra) -> str:
    done = {"id": "a-" + str(abs(hash(answer))), "question": "q", "answer": answer,
            "abstained": abstained, "sources": sources, **extra}
    return _sse(("sources", {"abstained": abstained, "sources": sources}),
                ("token", {"text": answer[:5]}), ("token", {"text": answer[5:]}),
                ("done", done))


GUIDE = "東雲大学情報科学部 学生生活ガイド"
ART42 = ("第４２条　学長は、次の各号のいずれかに該当する者を除籍する。\n"
         "一　第８条に規定する在学期間を超えた者\n"
         "二　１学年間（最終学年を除く。）に修得した単位が１６単位に満たない者")
QUOTE42 = "二　１学年間（最終学年を除く。）に修得した単位が１６単位に満たない者"


def _source(n, article, text, *, title="東雲大学情報科学部学則", source="学則.txt",
            caption="", heading="", **extra):
    return {"n": n, "source": source, "title": title, "article": article, "caption": caption,
            "paragraph": "", "page": None, "score": 0.5, "cross_reference_from": None,
            "label": article + (f"（{caption}）" if caption else ""), "heading": heading,
            "text": text, "id": f"p{n}", **extra}


def test_evidence_prose_abstention_and_every_error_in_japanese(browser, server, tmp_path,
                                                                capsys):
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
        status, body, ctype, *more = replies.pop(0)
        route.fulfill(status=status, body=body, content_type=ctype,
                      headers=more[0] if more else None)

    page.route("**/api/ask", fulfil)
    page.goto(server["url"] + "/")

    # An abstention whose answer contains HTML: the notice shows, the HTML is text.
    nearest = {"n": 1, "source": "学則.txt", "title": "東雲大学情報科学部学則",
               "article": "第5条", "caption": "修業年限", "paragraph": "", "page": 3,
               "score": 0.1, "cross_reference_from": None, "text": "第５条　修業年限は、４年とする。"}
    html_answer = "規程には該当する定めが見当たりません。<img src=x onerror=alert(3)><b>太字</b>"
    replies.append((200, _reply(html_answer, [nearest], abstained=True), "text/event-stream"))
    page.fill("#question", "学食の営業時間は？")
    page.click("#ask-button")
    page.wait_for_selector(f"{LAST} .feedback:not([hidden])")
    assert asked[-1]["body"] == {"question": "学食の営業時間は？", "stream": True}
    turn = page.locator(LAST)
    assert turn.locator(".abstain-notice").is_visible()
    assert "見当たりませんでした" in turn.locator(".abstain-notice").text_content()
    assert "下に示すのは質問に近い条文です" in turn.locator(".abstain-notice").inner_text()
    assert turn.locator(".sources-heading").text_content() == "参考: 質問に近い条文"
    assert turn.locator(".answer").text_content() == html_answer
    assert page.locator("#thread img, #thread b").count() == 0
    assert "3ページ" in turn.locator(".sources summary").inner_text()
    assert turn.locator(".check-badge").is_hidden()
    page.click("#new-chat")

    # Evidence (issue 20): two of five sources rest the answer, the rest fold away; the
    # quoted sentence is marked in the article; a number the articles lack: 要確認.
    prose = [_source(n, "", f"{h}についての説明です。", title=GUIDE, source="学生生活ガイド.md",
                     heading=f"{GUIDE} > {h}", rests_on=False)
             for n, h in ((3, "奨学金"), (4, "学生相談室"), (5, "課外活動"))]
    sources = [_source(1, "第42条", ART42, caption="除籍", heading="第5章 休学、退学及び除籍",
                       rests_on=True),
               _source(2, "第8条", "第８条　学生は、８年を超えて在学することができない。",
                       caption="在学期間", rests_on=True), *prose]
    start = ART42.index(QUOTE42)
    evidence = [{"passage_id": "p1", "source": "学則.txt", "title": "東雲大学情報科学部学則",
                 "article": "第42条", "label": "第42条（除籍）", "quote": QUOTE42,
                 "start": start, "end": start + len(QUOTE42), "score": 0.9}]
    grounding = {"grounded": False, "claims": [{"text": "20単位"}],
                 "unsupported": [{"text": "20単位"}], "clause": evidence[0]}
    answer = "1学年間に20単位未満なら除籍されます（学則第42条）。"
    replies.append((200, _reply(answer, sources, evidence=evidence, needs_check=True,
                                grounding=grounding, citations_attached=[]),
                    "text/event-stream"))
    page.fill("#question", SEED)
    page.press("#question", "Enter")
    page.wait_for_selector(f"{LAST} .feedback:not([hidden])")
    turn = page.locator(LAST)
    main = turn.locator(".main-sources > li")
    assert main.count() == 2
    assert "第42条" in main.nth(0).locator("summary").inner_text()
    assert turn.locator(".others").is_visible()
    assert turn.locator(".others > summary").inner_text() == "その他の候補（3件）"
    others = turn.locator(".other-sources > li")
    assert others.count() == 3 and others.first.is_hidden()        # folded
    assert QUOTE42 in main.nth(0).locator(".src-quote").inner_text()   # shown unopened
    main.nth(0).locator("summary").click()
    mark = main.nth(0).locator(".src-text mark")
    mark.wait_for(state="visible")
    assert mark.count() == 1 and mark.inner_text() == QUOTE42
    assert main.nth(0).locator(".src-text").inner_text() == ART42       # the whole text
    assert "第5章" in main.nth(0).locator(".src-heading").inner_text()
    assert turn.locator(".check-badge").is_visible()
    note = turn.locator(".check-note").inner_text()
    assert "要確認" in note and "「20単位」" in note and QUOTE42 in note and "第42条（除籍）" in note
    # Prose passages: labelled by their headings, not five copies of the guide's title.
    turn.locator(".others > summary").click()
    labels = [others.nth(i).locator("summary").inner_text() for i in range(3)]
    assert [lab.split(GUIDE)[-1].strip().split()[-1] for lab in labels] == \
        ["奨学金", "学生相談室", "課外活動"], labels
    assert ".md" not in "".join(turn.locator(".sources").all_text_contents())
    assert ".txt" not in "".join(turn.locator(".sources").all_text_contents())
    _shots(page, tmp_path, "evidence", capsys)

    # Without the evidence fields (an older server): every source is a 根拠.
    plain = [{k: v for k, v in s.items() if k != "rests_on"} for s in sources]
    replies.append((200, _reply("第42条により除籍されません。", plain), "text/event-stream"))
    page.fill("#question", FOLLOW_UP)
    page.press("#question", "Enter")
    page.wait_for_selector("#thread > .turn:nth-child(2) .feedback:not([hidden])")
    assert asked[-1]["body"]["history"] == [{"question": SEED, "answer": answer}]
    turn = page.locator(LAST)
    assert turn.locator(".main-sources > li").count() == 5
    assert turn.locator(".others").is_hidden() and turn.locator(".check-badge").is_hidden()
    page.click("#new-chat")

    # A server with RAG_API_TOKEN: 401 asks for the token, which is kept and sent.
    replies.append((401, json.dumps({"error": "missing or wrong bearer token"}),
                    "application/json"))
    page.fill("#question", SEED)
    page.press("#question", "Enter")
    page.wait_for_selector("#token-form:not([hidden])")
    assert "API トークンが必要です" in page.text_content("#error")
    assert page.locator("#thread > .turn").count() == 0          # not asked: no turn
    assert page.input_value("#question") == SEED                 # the question is kept
    replies.append((200, _sse(("sources", {"abstained": False, "sources": []}),
                              ("token", {"text": "トークン付きの回答"}),
                              ("done", {"id": "a-2", "question": SEED, "answer": "トークン付きの回答",
                                        "abstained": False, "sources": []}),
                              newline="\r\n"),               # CRLF events parse too
                    "text/event-stream"))
    page.fill("#token-input", "s3cret")
    page.click("#token-save")                   # saves and asks the question again
    page.wait_for_selector(f"{LAST} .feedback:not([hidden])")
    assert asked[-1]["auth"] == "Bearer s3cret"
    assert page.evaluate("localStorage.getItem('rag-api-token')") == "s3cret"
    assert page.locator("#token-form").is_hidden()
    assert page.locator("#error").is_hidden()
    assert page.locator(f"{LAST} .no-sources").is_visible()
    page.click("#new-chat")

    # Every error the page can meet, in Japanese (the server's English stays out).
    def error(status, message, **headers):
        return (status, json.dumps({"error": message}), "application/json", headers)
    refusals = [
        (error(503, "not ready: the models are loading", **{"Retry-After": "5"}), "起動中"),
        (error(503, "not ready: no index at /srv/idx"), "管理者"),
        (error(503, "the server is busy; try again shortly", **{"Retry-After": "2"}),
         "約2秒後"),
        (error(429, "rate limit exceeded", **{"Retry-After": "7"}), "約7秒後"),
        (error(422, "field 'question' is longer than 300 characters"), "300文字以内"),
        (error(413, "request body over 65536 bytes"), "大きすぎます"),
        (error(400, "field 'history' must be a list of {question, answer}"), "新しい会話"),
        (error(400, "this server has no index (started without retrieval)"), "索引"),
        (error(400, "the body is not JSON"), "形式"),
        (error(415, "content type must be application/json"), "形式"),
        (error(421, "host not allowed"), "管理者"),
        (error(504, "the answer took longer than the server's time limit"), "時間がかかりすぎ"),
        (error(500, "internal server error"), "エラーが発生しました"),
        ((502, "<html>Bad Gateway</html>", "text/html"), "中継"),
        ((400, json.dumps({"error": {"message": "bad", "type": "invalid_request_error"}}),
          "application/json"), "形式"),
    ]
    for reply, words in refusals:
        replies.append(reply)
        page.fill("#question", "卒業要件は？")
        page.click("#ask-button")
        page.wait_for_selector(f"#error:has-text('{words}')")
        message = page.text_content("#error")
        assert not _english(message), (reply, message)
        assert page.locator("#thread > .turn").count() == 0
        assert page.input_value("#question") == "卒業要件は？"
        if words == "起動中":
            page.screenshot(path=str(tmp_path / "error-desktop.png"), full_page=True)
            _keep(tmp_path / "error-desktop.png")
    events = [
        (_sse(("sources", {"abstained": False, "sources": []}), ("token", {"text": "途中まで"}),
              ("error", {"error": "generation failed; the server log has the reason"})),
         "回答の生成中にエラーが発生しました"),
        (_sse(("token", {"text": "途中"}),
              ("error", {"error": "the answer took longer than the server's time limit"})),
         "時間がかかりすぎた"),
        (_sse(("token", {"text": "途切れる"})), "途切れました"),
    ]
    for body, words in events:
        replies.append((200, body, "text/event-stream"))
        page.fill("#question", "卒業要件は？")
        page.click("#ask-button")
        page.wait_for_selector(f"{LAST} .turn-error:has-text('{words}')")
        message = page.locator(LAST).locator(".turn-error").text_content()
        assert not _english(message), message
        assert page.locator("#ask-button").is_enabled()
    # A failed turn is not history: the next question goes without them.
    replies.append((200, _reply("はい。", []), "text/event-stream"))
    page.fill("#question", "卒業要件は？")
    page.click("#ask-button")
    page.wait_for_selector(f"{LAST} .feedback:not([hidden])")
    assert "history" not in asked[-1]["body"]

    # Feedback about an answer the server no longer keeps (it restarted).
    page.route("**/api/feedback", lambda route: route.fulfill(
        status=404, content_type="application/json",
        body=json.dumps({"error": "unknown answer id (the server keeps its recent answers)"})))
    turn = page.locator(LAST)
    turn.locator(".fb-down").click()
    turn.locator(".fb-send").click()
    page.wait_for_selector(f"{LAST} .fb-status:has-text('残っていない')")
    assert not _english(turn.locator(".fb-status").text_content())

    # The server cannot be reached at all.
    page.unroute("**/api/ask")
    page.route("**/api/ask", lambda route: route.abort("connectionrefused"))
    page.fill("#question", "卒業要件は？")
    page.click("#ask-button")
    page.wait_for_selector(f"{LAST} .turn-error:has-text('接続できませんでした')")

    assert seen["dialogs"] == []
    unexpected = [e for e in seen["errors"]         # the refusals were the test's own
                  if not re.search(r"status of (4|5)\d\d|ERR_CONNECTION_REFUSED|net::ERR", e)]
    assert unexpected == [], seen["errors"]
    context.close()


# ---- the stop button, against the app in this process --------------------------------

SLOW_CAP = 400           # tokens the slowed model would take about 40 s for


@pytest.fixture
def slow_served(browser, tmp_path, corpus_index, tiny_generator, monkeypatch):
    """The real app (create_app, build_engine) under uvicorn in this process, its model
    slowed to about 0.1 s a token and never stopping early, so that a question takes
    long enough to be stopped."""
    import torch

    from rag.config import Config, GenerateSection, SearchSection
    from rag.factory import AnswerOptions, ModelOptions
    from rag.serve.app import create_app
    from rag.serve.loader import WorkerOptions, build_engine
    from rag.serve.state import ServeSettings
    from serve_client import LiveServer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    index = tmp_path / "idx"
    shutil.copytree(corpus_index, index)
    cfg = Config(index=str(index), search=SearchSection(mode="bm25"),
                 generate=GenerateSection(model=str(tiny_generator), max_new_tokens=SLOW_CAP))
    settings = ServeSettings(rate_per_minute=0, timeout_s=120,
                             feedback_db=str(tmp_path / "feedback.sqlite3"))
    workers = WorkerOptions(batch_size=4, batch_wait_ms=5, queue_size=8, index_check_ms=1000)
    app = create_app(settings, lambda: build_engine(cfg, ModelOptions(), AnswerOptions(),
                                                    workers))
    server = LiveServer(app).start()
    engine = app.state.rag.engine
    model = engine.generator.model
    forward = model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(0.1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow_forward)
    monkeypatch.setattr(engine.generator, "stop_ids", [])
    server.engine = engine
    yield server
    server.stop()
    torch.set_num_threads(threads)


def test_stop_cancels_the_generation_and_the_seconds_count(browser, slow_served, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="ja-JP")
    page = context.new_page()
    page.set_default_timeout(60_000)
    seen = _watch(page)
    asked = _asked(page)
    page.goto(slow_served.url + "/")
    page.fill("#question", SEED)
    page.press("#question", "Enter")
    # While waiting: a stop button, the send button idle, the seconds counting up.
    assert page.locator("#stop-button").is_visible()
    assert page.locator("#ask-button").is_disabled()
    page.wait_for_selector(f"{LAST} .answer:not(:empty)")                 # it streams
    page.wait_for_selector(f"{LAST} .progress:has-text('回答を生成中… 2秒')")
    assert page.locator(f"{LAST} .sources > li").count() >= 1
    # The stop button is in reach on the phone's screen, however long the list above.
    box = page.locator("#stop-button").bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= 844, box
    page.screenshot(path=str(tmp_path / "waiting-phone.png"))
    _keep(tmp_path / "waiting-phone.png")
    page.click("#stop-button")
    page.wait_for_selector(f"{LAST} .stopped:not([hidden])")
    assert page.text_content(f"{LAST} .stopped") == "回答を停止しました。"
    assert page.locator("#stop-button").is_hidden() and page.locator("#ask-button").is_enabled()
    assert page.locator(f"{LAST} .answer").text_content()                # what came stays
    assert page.locator(f"{LAST} .turn-error").is_hidden()
    assert page.locator(f"{LAST} .feedback").is_hidden()

    # The server heard the hang-up: the generation ended long before its cap.
    worker = slow_served.engine.worker
    until = time.monotonic() + 15
    mine = []
    while time.monotonic() < until:
        mine = [j for j in worker.stats.recent if j.options.max_new_tokens == SLOW_CAP
                and j.generation is not None]
        if mine:
            break
        time.sleep(0.1)
    assert mine, "the stopped generation never ended"
    assert mine[-1].generation.cancelled and mine[-1].generation.new_tokens < SLOW_CAP // 2

    # A stopped turn is not history.
    page.route("**/api/ask", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body=_reply("はい。", [])))
    page.fill("#question", FOLLOW_UP)
    page.press("#question", "Enter")
    page.wait_for_selector("#thread > .turn:nth-child(2) .feedback:not([hidden])")
    assert asked[-1] == {"question": FOLLOW_UP, "stream": True}
    assert seen["dialogs"] == [] and seen["errors"] == [], seen
    context.close()


# ---- editions (issue 22): 入学年度 and 基準日, the edition of each source ---------------

def _post_json(url: str, body: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _done_id(sse_text: str) -> str:
    """The answer id in a stream's `done` event."""
    for block in sse_text.replace("\r\n", "\n").split("\n\n"):
        if block.startswith("event: done"):
            return json.loads(block.split("data: ", 1)[1])["id"]
    raise AssertionError(f"no done event in {sse_text[-500:]!r}")


def test_entry_year_is_remembered_and_sent_editions_show_and_feedback_refusals(
        browser, server, tmp_path, capsys):
    context = browser.new_context(viewport={"width": 1000, "height": 900}, locale="ja-JP")
    page = context.new_page()
    page.set_default_timeout(60_000)
    seen = _watch(page)
    asked = _asked(page)
    page.goto(server["url"] + "/")

    # 入学年度: 「指定しない」 first, then next year down to fifteen years ago.
    now = time.localtime().tm_year
    values = page.eval_on_selector_all("#entry-year option", "os => os.map(o => o.value)")
    assert values == [""] + [str(y) for y in range(now + 1, now - 16, -1)], values
    assert page.locator("#entry-year option").first.text_content() == "指定しない"
    assert page.input_value("#entry-year") == "" and page.input_value("#as-of") == ""
    year = now - 2
    page.select_option("#entry-year", str(year))
    assert page.locator("#entry-year option:checked").text_content() == \
        f"{year}（令和{year - 2018}）年度"
    page.fill("#as-of", "2024-04-01")

    # Remembered across a reload (the year, not the date: a stale date would mislead).
    page.reload()
    assert page.input_value("#entry-year") == str(year)
    assert page.evaluate("localStorage.getItem('rag-entry-year')") == str(year)
    assert page.input_value("#as-of") == ""

    # Sent with the question, to the real server, which answers with it.
    page.fill("#as-of", "2024-04-01")
    page.fill("#question", SEED)
    with page.expect_response(lambda r: r.url.endswith("/api/ask")) as ask_response:
        page.press("#question", "Enter")
    page.wait_for_selector(f"{LAST} .feedback:not([hidden])")
    assert asked[-1] == {"question": SEED, "stream": True, "entry_year": year,
                         "as_of": "2024-04-01"}
    assert ask_response.value.status == 200
    assert page.locator(f"{LAST} .turn-error").is_hidden()

    # Rated already (another tab): the server keeps the first rating, answers 409, and
    # the page says so in Japanese and offers nothing more to send.
    answer_id = _done_id(ask_response.value.text())
    status, _ = _post_json(server["url"] + "/api/feedback", {"id": answer_id, "rating": "down"})
    assert status == 200
    turn = page.locator(LAST)
    turn.locator(".fb-up").click()
    with page.expect_response(lambda r: r.url.endswith("/api/feedback")) as fb_response:
        turn.locator(".fb-send").click()
    assert fb_response.value.status == 409
    page.wait_for_selector(f"{LAST} .fb-status:has-text('すでに評価済み')")
    assert not _english(turn.locator(".fb-status").text_content())
    assert turn.locator(".fb-send").is_hidden() and turn.locator(".fb-up").is_disabled()
    ratings = sqlite3.connect(server["feedback_db"]).execute(
        "SELECT rating FROM feedback WHERE answer_id = ?", (answer_id,)).fetchall()
    assert ratings == [("down",)], ratings

    # 「指定しない」 sends no year (the server: as of today); forgotten on reload too.
    page.select_option("#entry-year", "")
    page.fill("#as-of", "")
    page.reload()
    assert page.input_value("#entry-year") == ""
    assert page.evaluate("localStorage.getItem('rag-entry-year')") is None

    # Fixed answers through routing: sources from editions, and refusals.
    replies: list = []

    def fulfil(route):
        status, body, ctype, *more = replies.pop(0)
        route.fulfill(status=status, body=body, content_type=ctype,
                      headers=more[0] if more else None)

    page.route("**/api/ask", fulfil)
    page.route("**/api/feedback", fulfil)
    title = "多摩美術大学学則"
    old = _source(1, "第42条", ART42, caption="除籍", title=title, source="tamabi-2022.txt",
                  edition={"title": title, "effective_from": "2022-04-01",
                           "effective_to": "2024-03-31"})
    current = _source(2, "第8条", "第８条　学生は、８年を超えて在学することができない。",
                      caption="在学期間", title=title, source="tamabi-2024.txt",
                      edition={"title": title, "effective_from": "2024-04-01",
                               "effective_to": None})
    undated = _source(3, "第5条", "第５条　修業年限は、４年とする。", caption="修業年限",
                      edition={"title": "東雲大学情報科学部学則", "effective_from": None,
                               "effective_to": None})
    answer = ("除籍されません（学則第42条）。\n"
              "※ 多摩美術大学学則（2022年4月1日施行の版、2024年3月31日まで）による。")
    replies.append((200, _reply(answer, [old, current, undated]), "text/event-stream"))
    page.select_option("#entry-year", str(now - 3))
    page.fill("#question", SEED)
    page.press("#question", "Enter")
    page.wait_for_selector(f"{LAST} .feedback:not([hidden])")
    sources = page.locator(f"{LAST} .sources > li")
    assert sources.count() == 3
    assert sources.nth(0).locator(".src-edition").text_content() == \
        "2022年4月1日施行の版、2024年3月31日まで"
    assert sources.nth(1).locator(".src-edition").text_content() == "2024年4月1日施行の版"
    assert sources.nth(2).locator(".src-edition").count() == 0       # no dates: no label
    first = sources.nth(0).locator("summary").inner_text()
    assert first.index(title) < first.index("2022年4月1日施行の版") < first.index("第42条"), first
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    _shots(page, tmp_path, "editions", capsys)

    # Feedback the server cannot store: a full disk, a busy database; in Japanese.
    turn = page.locator(LAST)
    for reply, words in (
            ((507, json.dumps({"error": "the rating could not be saved: the server's disk is "
                                        "full"}), "application/json"), "記録領域がいっぱい"),
            ((503, json.dumps({"error": "the rating could not be saved just now; try again "
                                        "shortly"}), "application/json", {"Retry-After": "5"}),
             "約5秒後")):
        replies.append(reply)
        turn.locator(".fb-down").click()
        turn.locator(".fb-send").click()
        page.wait_for_selector(f"{LAST} .fb-status:has-text('{words}')")
        assert not _english(turn.locator(".fb-status").text_content())
        assert turn.locator(".fb-send").is_enabled()                 # worth another try

    # A 400 about the date or the year: the page names the field, in Japanese.
    for message, words in (
            ("field 'as_of' must be a date YYYY-MM-DD, not '2024-13-01'", "基準日"),
            ("field 'entry_year' must be a year such as 2023, not '20x4'", "入学年度"),
            ("field 'as_of' must be a date YYYY-MM-DD and 'entry_year' a year", "基準日または入学年度")):
        replies.append((400, json.dumps({"error": message}), "application/json"))
        page.fill("#question", "卒業要件は？")
        page.click("#ask-button")
        page.wait_for_selector(f"#error:has-text('{words}')")
        assert not _english(page.text_content("#error")), page.text_content("#error")
        assert page.input_value("#question") == "卒業要件は？"

    # On a phone the settings row fits the screen's width.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.evaluate("window.scrollTo(0, 0)")
    # Polled from here: wait_for_function's in-page polling evaluates a string, which the
    # page's CSP (no 'unsafe-eval') refuses whenever the first check is not yet true.
    for _ in range(100):
        if page.evaluate("window.scrollY") == 0:
            break
        page.wait_for_timeout(20)
    assert page.evaluate("window.scrollY") == 0
    row = page.locator(".settings").bounding_box()
    assert row and row["width"] <= 390 and row["height"] < 120, row
    page.screenshot(path=str(tmp_path / "settings-phone.png"))
    _keep(tmp_path / "settings-phone.png")

    assert seen["dialogs"] == []
    unexpected = [e for e in seen["errors"] if not re.search(r"status of (4|5)\d\d", e)]
    assert unexpected == [], seen["errors"]
    context.close()
