// The question page of `rag serve` (docs/serve-api.md). Plain JS, no build step, no
// inline handlers (the page runs under a strict Content-Security-Policy).
//
// Everything that comes from a regulation or from the model is put in the page with
// textContent, never innerHTML: a regulation that contains <script> or an answer that
// contains HTML shows as text.
"use strict";

(function () {
  const TOKEN_KEY = "rag-api-token";
  // Relative URLs, so that the page also works behind a proxy under a sub-path.
  const ASK_URL = "api/ask";
  const FEEDBACK_URL = "api/feedback";

  const $ = (id) => document.getElementById(id);
  const form = $("ask-form");
  const question = $("question");
  const askButton = $("ask-button");
  const statusEl = $("status");
  const errorEl = $("error");
  const result = $("result");
  const answerEl = $("answer");
  const abstainNotice = $("abstain-notice");
  const sourcesHeading = $("sources-heading");
  const sourcesEl = $("sources");
  const noSources = $("no-sources");
  const feedbackForm = $("feedback");
  const fbComment = $("fb-comment");
  const fbSend = $("fb-send");
  const fbStatus = $("fb-status");
  const thumbs = Array.from(document.querySelectorAll(".thumb"));
  const tokenForm = $("token-form");
  const tokenInput = $("token-input");

  let controller = null;     // the AbortController of the request in flight
  let answerId = null;       // from the `done` event, for /api/feedback
  let rating = null;         // "up" | "down"
  let lastQuestion = "";

  // ---- the API token (only when the server sets RAG_API_TOKEN) ----------------------

  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function headers(extra) {
    const h = Object.assign({ "Content-Type": "application/json" }, extra || {});
    const token = storedToken();
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  function askForToken() {
    tokenForm.hidden = false;
    tokenInput.value = storedToken();
    tokenInput.focus();
  }

  tokenForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const token = tokenInput.value.trim();
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (err) { /* private mode: the token lasts for this page only */ }
    tokenForm.hidden = true;
    clearError();
    if (lastQuestion) ask(lastQuestion);
  });

  // ---- status and errors -----------------------------------------------------------

  function setStatus(text) {
    statusEl.textContent = text;
    statusEl.classList.toggle("busy", Boolean(text));
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = false;
  }

  function clearError() {
    errorEl.textContent = "";
    errorEl.hidden = true;
  }

  function setBusy(busy) {
    askButton.disabled = busy;
    askButton.textContent = busy ? "送信中…" : "送信";
    answerEl.setAttribute("aria-busy", busy ? "true" : "false");
    answerEl.classList.toggle("streaming", busy);
  }

  // The Japanese message for an HTTP error; the server's own message (English or
  // Japanese) follows as detail.
  function httpErrorMessage(status, body, retryAfter) {
    const wait = retryAfter ? `（約${retryAfter}秒後）` : "";
    let msg;
    switch (status) {
      case 400: msg = "質問の形式に誤りがあります。"; break;
      case 401: msg = "API トークンが必要です。トークンを入力してから、もう一度送信してください。"; break;
      case 404: msg = "回答が見つかりません。もう一度質問してください。"; break;
      case 413: msg = "送信した内容が大きすぎます。質問を短くしてください。"; break;
      case 422: msg = "質問が長すぎます。短くしてもう一度送信してください。"; break;
      case 429: msg = `質問が続けて送られました。少し待ってから${wait}もう一度送信してください。`; break;
      case 503: msg = `ただいま混み合っているか、準備中です。少し待ってから${wait}もう一度送信してください。`; break;
      case 504: msg = "回答に時間がかかりすぎたため中断しました。もう一度送信してください。"; break;
      default: msg = status >= 500
        ? `サーバーでエラーが発生しました（${status}）。時間をおいてもう一度お試しください。`
        : `リクエストが受け付けられませんでした（${status}）。`;
    }
    const detail = body && typeof body.error === "string" ? body.error : "";
    return detail ? `${msg}（詳細: ${detail}）` : msg;
  }

  async function readError(response) {
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    if (response.status === 401) askForToken();
    return httpErrorMessage(response.status, body, response.headers.get("Retry-After"));
  }

  // ---- rendering -------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null && text !== "") node.textContent = String(text);
    return node;
  }

  function resetResult() {
    answerId = null;
    rating = null;
    answerEl.textContent = "";
    abstainNotice.hidden = true;
    sourcesHeading.textContent = "根拠となった条文";
    sourcesHeading.hidden = false;
    sourcesEl.replaceChildren();
    noSources.hidden = true;
    feedbackForm.hidden = true;
    fbComment.value = "";
    fbStatus.textContent = "";
    fbSend.disabled = true;
    fbSend.hidden = false;
    feedbackForm.querySelectorAll("button, textarea").forEach((b) => { if (b !== fbSend) b.disabled = false; });
    thumbs.forEach((b) => b.setAttribute("aria-pressed", "false"));
    result.hidden = false;
  }

  function pageLabel(page) {
    if (page === null || page === undefined || page === "") return "";
    return `${page}ページ`;
  }

  // One source: 「[1] 東雲大学情報科学部学則 第42条（除籍） 12ページ」, its text on click.
  function renderSource(s, i) {
    const li = el("li", "source");
    const details = el("details");
    const summary = el("summary");
    summary.appendChild(el("span", "src-n", `[${s.n || i + 1}]`));
    summary.appendChild(el("span", "src-title", s.title || s.source || ""));
    // 第42条（除籍）stays together on one line where it fits.
    const article = el("span", "src-article");
    if (typeof s.article === "string") {
      if (s.article) article.appendChild(el("span", "src-label", s.article));
      if (s.caption) article.appendChild(el("span", "src-caption", `（${s.caption}）`));
    } else if (s.label) {
      // Passage.label: 第42条（除籍）第2項, caption and 項 included.
      article.appendChild(el("span", "src-label", s.label));
    }
    if (article.childNodes.length) summary.appendChild(article);
    if (typeof s.article === "string" && s.paragraph) {
      summary.appendChild(el("span", "src-paragraph", String(s.paragraph)));
    }
    if (s.cross_reference_from) {
      summary.appendChild(el("span", "src-ref", `${s.cross_reference_from}から参照`));
    }
    const page = pageLabel(s.page);
    if (page) summary.appendChild(el("span", "src-page", page));
    details.appendChild(summary);

    const body = el("div", "src-body");
    if (s.source && s.source !== s.title) body.appendChild(el("p", "src-file", s.source));
    if (s.text) {
      body.appendChild(el("div", "src-text", s.text));
    } else {
      body.appendChild(el("p", "muted", "この条文の本文は表示できません。"));
    }
    details.appendChild(body);
    li.appendChild(details);
    return li;
  }

  function renderSources(data) {
    const abstained = Boolean(data && data.abstained);
    const sources = (data && Array.isArray(data.sources)) ? data.sources : [];
    abstainNotice.hidden = !abstained;
    result.classList.toggle("abstained", abstained);
    sourcesHeading.textContent = abstained ? "参考: 質問に近い条文" : "根拠となった条文";
    sourcesEl.replaceChildren(...sources.map(renderSource));
    // Abstaining with nothing near: the notice says it all.
    sourcesHeading.hidden = abstained && !sources.length;
    $("abstain-nearest").hidden = !sources.length;
    noSources.hidden = sources.length > 0 || abstained;
  }

  // ---- server-sent events over a fetch() POST (EventSource cannot POST) -------------

  // Calls onEvent(name, data) for each complete event in the stream.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      // CRLF or CR line ends; a CR at the end of a read may be half of a CRLF.
      buffer = buffer.replace(/\r\n|\r(?=[\s\S])/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        dispatch(block, onEvent);
      }
    }
    buffer = (buffer + decoder.decode()).replace(/\r\n?/g, "\n");
    if (buffer.trim()) dispatch(buffer, onEvent);
  }

  function dispatch(block, onEvent) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;          // comment / keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let parsed;
    try { parsed = JSON.parse(data.join("\n")); } catch (e) { parsed = data.join("\n"); }
    onEvent(name, parsed);
  }

  // ---- asking ----------------------------------------------------------------------

  async function ask(text) {
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    lastQuestion = text;
    clearError();
    resetResult();
    setBusy(true);
    setStatus("送信中…");

    let finished = false;
    let sawToken = false;
    try {
      const response = await fetch(ASK_URL, {
        method: "POST",
        headers: headers({ "Accept": "text/event-stream" }),
        body: JSON.stringify({ question: text, stream: true }),
        signal: mine.signal,
      });
      if (!response.ok) {
        result.hidden = true;
        showError(await readError(response));
        return;
      }
      setStatus("生成中…");
      await readEvents(response, (name, data) => {
        if (mine !== controller) return;
        if (name === "token") {
          const piece = data && typeof data === "object" ? data.text : data;
          if (piece) {
            sawToken = true;
            answerEl.appendChild(document.createTextNode(String(piece)));
          }
        } else if (name === "sources") {
          renderSources(data);
        } else if (name === "done") {
          finished = true;
          if (data && typeof data === "object") {
            // The whole answer object: authoritative for the text and the sources.
            if (typeof data.answer === "string" && data.answer !== answerEl.textContent
                && (data.answer || !sawToken)) {
              answerEl.textContent = data.answer;
            }
            if (Array.isArray(data.sources)) renderSources(data);
            answerId = data.id || null;
          }
          if (answerId) feedbackForm.hidden = false;
        } else if (name === "error") {
          finished = true;
          const detail = data && data.error ? `（詳細: ${data.error}）` : "";
          showError(`回答の生成中にエラーが発生しました。もう一度お試しください。${detail}`);
        }
      });
      if (!finished && mine === controller) {
        showError("回答が途中で途切れました。通信状況を確認して、もう一度送信してください。");
      }
    } catch (e) {
      if (e && e.name === "AbortError") return;
      showError("サーバーに接続できませんでした。通信状況を確認して、もう一度送信してください。");
    } finally {
      if (mine === controller) {
        controller = null;
        setBusy(false);
        setStatus("");
        if (!answerEl.textContent && !sourcesEl.children.length && !errorEl.hidden) {
          result.hidden = true;
        }
      }
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = question.value.trim();
    if (!text) { question.focus(); return; }
    ask(text);
  });

  // Enter sends, Shift+Enter breaks the line; Enter that confirms a kana-kanji
  // conversion (IME composition) does neither.
  question.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey || e.isComposing || e.keyCode === 229) return;
    e.preventDefault();
    if (!askButton.disabled) form.requestSubmit();
  });

  // ---- feedback --------------------------------------------------------------------

  thumbs.forEach((button) => {
    button.addEventListener("click", () => {
      rating = button.dataset.rating;
      thumbs.forEach((b) => b.setAttribute("aria-pressed", b === button ? "true" : "false"));
      fbSend.disabled = !answerId;
      fbStatus.textContent = "";
    });
  });

  feedbackForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!answerId || !rating) return;
    fbSend.disabled = true;
    fbStatus.textContent = "送信中…";
    const body = { id: answerId, rating: rating };
    const comment = fbComment.value.trim();
    if (comment) body.comment = comment;
    try {
      const response = await fetch(FEEDBACK_URL, {
        method: "POST", headers: headers(), body: JSON.stringify(body),
      });
      if (!response.ok) {
        fbStatus.textContent = "";
        showError(await readError(response));
        fbSend.disabled = false;
        return;
      }
      fbStatus.textContent = "ご意見ありがとうございました。";
      feedbackForm.querySelectorAll("button, textarea").forEach((b) => { b.disabled = true; });
      fbSend.hidden = true;
    } catch (err) {
      fbStatus.textContent = "";
      showError("フィードバックを送信できませんでした。もう一度お試しください。");
      fbSend.disabled = false;
    }
  });

  // On a phone, focusing the box at once would cover the page with the keyboard.
  if (!window.matchMedia("(pointer: coarse)").matches) question.focus();
})();
