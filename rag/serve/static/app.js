// The question page of `rag serve` (docs/serve-api.md): a conversation. Plain JS, no
// build step, no inline handlers (the page runs under a strict Content-Security-Policy).
//
// Everything that comes from a regulation or from the model is put in the page with
// textContent, never innerHTML: a regulation that contains <script> or an answer that
// contains HTML shows as text.
//
// Each question is a turn of the thread. The finished turns (question and answer) go
// with the next question as `history`, so 「それは延長できますか？」 keeps its subject;
// 「新しい会話」 forgets them. A stopped or failed turn is not part of the history.
"use strict";

(function () {
  const TOKEN_KEY = "rag-api-token";
  const ENTRY_YEAR_KEY = "rag-entry-year";
  const ENTRY_YEARS_BACK = 15;      // 入学年度: this many years back, to next year
  // Relative URLs, so that the page also works behind a proxy under a sub-path.
  const ASK_URL = "api/ask";
  const FEEDBACK_URL = "api/feedback";
  const HISTORY_TURNS = 6;          // the server accepts up to 20; the prompt keeps fewer
  const MAIN_SOURCES = 3;           // 根拠 shown open; the rest under 「その他の候補」

  const $ = (id) => document.getElementById(id);
  const form = $("ask-form");
  const question = $("question");
  const askButton = $("ask-button");
  const stopButton = $("stop-button");
  const charCount = $("char-count");
  const errorEl = $("error");
  const thread = $("thread");
  const welcome = $("welcome");
  const newChat = $("new-chat");
  const template = $("turn-template");
  const tokenForm = $("token-form");
  const tokenInput = $("token-input");
  const entryYear = $("entry-year");
  const asOf = $("as-of");

  // The server's own limit (it writes it into the page); the textarea matches it.
  const limit = parseInt(document.body.dataset.maxQuestionChars, 10) || 1000;
  question.maxLength = limit;

  let controller = null;     // the AbortController of the request in flight
  let lastQuestion = "";
  const history = [];        // [{question, answer}] of the finished turns, oldest first

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
    if (lastQuestion && !controller) ask(lastQuestion);
  });

  // ---- which edition: 入学年度 (kept in this browser) and 基準日 (this page only) -------

  // 2024 -> 「2024（令和6）年度」: students often know their year by its era.
  function eraYear(y) {
    if (y >= 2019) return `令和${y === 2019 ? "元" : y - 2018}`;
    if (y >= 1989) return `平成${y === 1989 ? "元" : y - 1988}`;
    return "";
  }

  function yearOption(y) {
    const era = eraYear(y);
    const option = el("option", "", era ? `${y}（${era}）年度` : `${y}年度`);
    option.value = String(y);
    return option;
  }

  function setUpEntryYear() {
    const now = new Date().getFullYear();
    for (let y = now + 1; y >= now - ENTRY_YEARS_BACK; y--) entryYear.appendChild(yearOption(y));
    let kept = "";
    try { kept = localStorage.getItem(ENTRY_YEAR_KEY) || ""; } catch (e) { kept = ""; }
    if (/^\d{4}$/.test(kept)) {
      // A year chosen long ago stays chosen, though it has left the list's range.
      if (!Array.from(entryYear.options).some((o) => o.value === kept)) {
        const option = yearOption(parseInt(kept, 10));
        const later = Array.from(entryYear.options).find((o) => o.value && o.value < kept);
        entryYear.insertBefore(option, later || null);
      }
      entryYear.value = kept;
    }
    entryYear.addEventListener("change", () => {
      try {
        if (entryYear.value) localStorage.setItem(ENTRY_YEAR_KEY, entryYear.value);
        else localStorage.removeItem(ENTRY_YEAR_KEY);
      } catch (e) { /* private mode: the year lasts for this page only */ }
    });
    // 基準日 is not kept: a date left from last month would quietly answer for it.
  }

  // The request's edition fields: none when nothing is chosen (the server: today).
  function editionFields(body) {
    if (/^\d{4}$/.test(entryYear.value)) body.entry_year = parseInt(entryYear.value, 10);
    if (asOf.value) body.as_of = asOf.value;
    return body;
  }

  // ---- errors, all in Japanese -----------------------------------------------------

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = false;
  }

  function clearError() {
    errorEl.textContent = "";
    errorEl.hidden = true;
  }

  // The server's message ({"error": "..."} or OpenAI's {"error": {"message"}}): it is
  // English, for logs and scripts; the page only reads it to tell cases apart.
  function serverMessage(body) {
    if (!body || typeof body !== "object") return "";
    const e = body.error;
    if (typeof e === "string") return e;
    if (e && typeof e === "object") return String(e.message || e.code || "");
    return "";
  }

  function seconds(retryAfter) {
    const n = parseInt(retryAfter, 10);
    return n > 0 ? `約${n}秒後に` : "少し待ってから";
  }

  // The Japanese message for an HTTP error of /api/ask or /api/feedback.
  function httpErrorMessage(status, body, retryAfter, what) {
    const detail = serverMessage(body).toLowerCase();
    const wait = seconds(retryAfter);
    if (detail) console.info(`rag serve: ${status} ${serverMessage(body)}`);
    switch (status) {
      case 400:
        if (detail.includes("as_of") && detail.includes("entry_year")) return "基準日または入学年度の指定が正しくありません。選び直して、もう一度送信してください。";
        if (detail.includes("as_of")) return "基準日の指定が正しくありません（例: 2024年4月1日）。日付を選び直すか空欄にして、もう一度送信してください。";
        if (detail.includes("entry_year")) return "入学年度の指定が正しくありません。入学年度を選び直して、もう一度送信してください。";
        if (detail.includes("all_editions")) return "規程の版の指定が正しくありません。ページを再読み込みして、もう一度お試しください。";
        if (detail.includes("no index")) return "このサーバーには規程の索引がないため、条文を検索できません。管理者にお問い合わせください。";
        if (detail.includes("history")) return "これまでの会話を送れませんでした。「新しい会話」で始め直してください。";
        if (detail.includes("empty")) return "質問を入力してください。";
        if (detail.includes("rating") || detail.includes("comment")) return "フィードバックの内容を確認して、もう一度送信してください。";
        return "質問を受け付けられませんでした（送信内容の形式に誤りがあります）。ページを再読み込みして、もう一度お試しください。";
      case 401: return "API トークンが必要です。トークンを入力してから、もう一度送信してください。";
      case 403:
      case 421: return "このページのアドレスからの質問は受け付けられていません。管理者にお問い合わせください。";
      case 404:
        if (what === "feedback") return "この回答はもうサーバーに残っていないため、評価を送れませんでした。";
        return "サーバーに質問の窓口が見つかりません。管理者にお問い合わせください。";
      case 409:
        if (what === "feedback") return "この回答はすでに評価済みです（最初の評価とコメントが記録されています）。";
        return "この操作はすでに行われています。ページを再読み込みしてください。";
      case 408: return "送信に時間がかかりすぎました。通信状況を確認して、もう一度送信してください。";
      case 413: return "送信した内容が大きすぎます。質問を短くするか、「新しい会話」で始め直してください。";
      case 415: return "質問を受け付けられませんでした（送信形式の誤り）。ページを再読み込みして、もう一度お試しください。";
      case 422:
        if (what === "feedback") return "コメントが長すぎます。短くしてもう一度送信してください。";
        return `質問が長すぎます。${limit}文字以内にして、もう一度送信してください。`;
      case 429: return `質問が続けて送られました。${wait}もう一度送信してください。`;
      case 502: return "サーバーに接続できませんでした（中継サーバーのエラー）。時間をおいてもう一度お試しください。";
      case 503:
        if (what === "feedback" && !detail.startsWith("not ready")) return `ただいま評価を保存できませんでした。${wait}もう一度送信してください。`;
        if (detail.includes("loading")) return `サーバーは起動中です（モデルを読み込んでいます）。${wait}もう一度送信してください。`;
        if (detail.startsWith("not ready")) return "サーバーの準備ができていません（モデルや索引を読み込めませんでした）。管理者にお問い合わせください。";
        return `ただいま混み合っています。${wait}もう一度送信してください。`;
      case 504: return "回答に時間がかかりすぎたため中断しました。質問を短くするか、時間をおいてもう一度送信してください。";
      case 507:
        if (what === "feedback") return "サーバーの記録領域がいっぱいのため、評価を保存できませんでした。管理者にお問い合わせください。";
        return "サーバーの記録領域がいっぱいのため、保存できませんでした。管理者にお問い合わせください。";
      default:
        if (status >= 500) return `サーバーでエラーが発生しました（${status}）。時間をおいてもう一度お試しください。`;
        return `リクエストが受け付けられませんでした（${status}）。ページを再読み込みして、もう一度お試しください。`;
    }
  }

  // The Japanese message for an `error` event, after the stream started.
  function streamErrorMessage(data) {
    const detail = serverMessage(data).toLowerCase();
    if (detail) console.info(`rag serve: error event: ${serverMessage(data)}`);
    if (detail.includes("time limit")) return "回答に時間がかかりすぎたため中断しました。質問を短くするか、時間をおいてもう一度送信してください。";
    if (detail.includes("busy")) return "ただいま混み合っています。少し待ってからもう一度送信してください。";
    return "回答の生成中にエラーが発生しました。もう一度お試しください。";
  }

  async function readError(response, what) {
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    if (response.status === 401) askForToken();
    return httpErrorMessage(response.status, body, response.headers.get("Retry-After"), what);
  }

  // ---- the textarea: its limit is the server's --------------------------------------

  function updateCount() {
    const n = question.value.length;
    const near = n >= limit * 0.8;
    charCount.textContent = near ? `${n} / ${limit}文字` : "";
    charCount.classList.toggle("full", n >= limit);
  }
  question.addEventListener("input", updateCount);

  // ---- rendering -------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null && text !== "") node.textContent = String(text);
    return node;
  }

  // 「2022年4月1日施行の版」 (and 「、2024年3月31日まで」 for an edition since replaced):
  // which edition of its regulation a source is from, when the index knows its dates.
  function isoDate(v) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(typeof v === "string" ? v : "");
    return m ? `${+m[1]}年${+m[2]}月${+m[3]}日` : "";
  }

  function editionLabel(s) {
    const e = s && s.edition && typeof s.edition === "object" ? s.edition : null;
    if (!e) return "";
    if (typeof e.editions === "number" && e.editions < 2) return "";   // the only one
    const from = isoDate(e.effective_from);
    if (!from) return "";
    const to = isoDate(e.effective_to);
    return `${from}施行の版` + (to ? `、${to}まで` : "");
  }

  function pageLabel(page) {
    if (page === null || page === undefined || page === "") return "";
    return `${page}ページ`;
  }

  // 学則.txt -> 学則: a document without a title is named by its file, never shown as one.
  function documentName(s) {
    if (s.title) return String(s.title);
    const file = String(s.source || "").split("/").pop();
    return file.replace(/\.(txt|md|markdown|html?|pdf)$/i, "");
  }

  // What a passage without an article is called: its heading, else its first words.
  function proseLabel(s) {
    if (s.heading) return String(s.heading).split(/\s*>\s*|\n/).pop();
    const text = String(s.text || "").replace(/\s+/g, " ").trim();
    return text.length > 24 ? text.slice(0, 24) + "…" : text;
  }

  // [start, end) spans of `text` to highlight: each evidence quote, by its offsets when
  // they still hold, else found by its words; overlapping spans merged.
  function spansIn(text, quotes) {
    const spans = [];
    for (const q of quotes) {
      let start = Number.isInteger(q.start) ? q.start : -1;
      let end = Number.isInteger(q.end) ? q.end : -1;
      const quote = typeof q.quote === "string" ? q.quote : "";
      if (!(start >= 0 && end > start && end <= text.length
            && (!quote || text.slice(start, end) === quote))) {
        start = quote ? text.indexOf(quote) : -1;
        end = start + quote.length;
      }
      if (start >= 0 && end > start) spans.push([start, end]);
    }
    spans.sort((a, b) => a[0] - b[0]);
    const merged = [];
    for (const s of spans) {
      const last = merged[merged.length - 1];
      if (last && s[0] <= last[1]) last[1] = Math.max(last[1], s[1]);
      else merged.push(s.slice());
    }
    return merged;
  }

  function textWithMarks(text, quotes) {
    const box = el("div", "src-text");
    let at = 0;
    for (const [start, end] of spansIn(text, quotes)) {
      if (start > at) box.appendChild(document.createTextNode(text.slice(at, start)));
      box.appendChild(el("mark", "quote", text.slice(start, end)));
      at = end;
    }
    if (at < text.length) box.appendChild(document.createTextNode(text.slice(at)));
    return box;
  }

  // One source: 「[1] 東雲大学情報科学部学則 第42条（除籍） 12ページ」, the quoted
  // sentence under it, its text (the quote marked) on click.
  function renderSource(s, i, quotes) {
    const li = el("li", "source");
    li.dataset.id = s.id || "";
    const details = el("details");
    const summary = el("summary");
    summary.appendChild(el("span", "src-n", `[${s.n || i + 1}]`));
    summary.appendChild(el("span", "src-title", documentName(s)));
    const edition = editionLabel(s);
    if (edition) summary.appendChild(el("span", "src-edition", edition));
    // 第42条（除籍）stays together on one line where it fits.
    const article = el("span", "src-article");
    if (typeof s.article === "string" && s.article) {
      article.appendChild(el("span", "src-label", s.article));
      if (s.caption) article.appendChild(el("span", "src-caption", `（${s.caption}）`));
    } else if (s.label && !("article" in s)) {
      article.appendChild(el("span", "src-label", s.label));
    } else {
      const prose = proseLabel(s);
      if (prose) article.appendChild(el("span", "src-label src-heading-label", prose));
    }
    if (article.childNodes.length) summary.appendChild(article);
    if (typeof s.article === "string" && s.article && s.paragraph) {
      summary.appendChild(el("span", "src-paragraph", String(s.paragraph)));
    }
    if (s.cross_reference_from) {
      summary.appendChild(el("span", "src-ref", `${s.cross_reference_from}から参照`));
    }
    const page = pageLabel(s.page);
    if (page) summary.appendChild(el("span", "src-page", page));
    details.appendChild(summary);

    const body = el("div", "src-body");
    if (s.heading && s.article) body.appendChild(el("p", "src-heading", s.heading));
    if (s.text) {
      body.appendChild(textWithMarks(String(s.text), quotes));
    } else {
      body.appendChild(el("p", "muted", "この条文の本文は表示できません。"));
    }
    details.appendChild(body);
    li.appendChild(details);
    // The sentence the answer rests on, readable without opening the article.
    for (const q of quotes.slice(0, 1)) {
      if (typeof q.quote === "string" && q.quote.trim()) {
        li.appendChild(el("p", "src-quote", `「${q.quote.trim()}」`));
      }
    }
    return li;
  }

  // ---- a turn of the thread --------------------------------------------------------

  function newTurn(text) {
    const node = template.content.firstElementChild.cloneNode(true);
    const q = (cls) => node.querySelector(cls);
    const turn = {
      node, question: text, answer: "", answerId: null, rating: null, done: false,
      // The server retrieves before it answers: the wait before the first event is that.
      started: performance.now(), timer: null, phase: "条文を検索中",
      answerEl: q(".answer"), progress: q(".progress"), elapsed: q(".elapsed"),
      sourcesShown: false,
    };
    q(".q-text").textContent = text;
    wireFeedback(turn);
    wireCopy(turn);
    thread.appendChild(node);
    welcome.hidden = true;
    newChat.hidden = false;
    return turn;
  }

  function tick(turn) {
    const s = Math.floor((performance.now() - turn.started) / 1000);
    turn.progress.textContent = `${turn.phase}… ${s}秒`;
  }

  function setPhase(turn, phase) {
    turn.phase = phase;
    tick(turn);
  }

  function startClock(turn) {
    tick(turn);
    turn.timer = setInterval(() => tick(turn), 1000);
  }

  function stopClock(turn) {
    if (turn.timer) clearInterval(turn.timer);
    turn.timer = null;
    turn.progress.textContent = "";
    turn.progress.hidden = true;
    const s = (performance.now() - turn.started) / 1000;
    turn.elapsed.textContent = s < 10 ? `${s.toFixed(1)}秒` : `${Math.round(s)}秒`;
  }

  function renderSources(turn, data) {
    const q = (cls) => turn.node.querySelector(cls);
    const abstained = Boolean(data && data.abstained);
    const sources = (data && Array.isArray(data.sources)) ? data.sources : [];
    const evidence = (data && Array.isArray(data.evidence)) ? data.evidence : [];
    const quotesOf = (s) => evidence.filter((e) => e && e.passage_id && e.passage_id === s.id);
    // 根拠: those the answer rests on (evidence marks them), or all until it says.
    let main = sources, others = [];
    if (!abstained && sources.some((s) => typeof s.rests_on === "boolean")) {
      main = sources.filter((s) => s.rests_on === true).slice(0, MAIN_SOURCES);
      others = sources.filter((s) => !main.includes(s));
    }
    q(".abstain-notice").hidden = !abstained;
    q(".abstain-nearest").hidden = !sources.length;
    turn.node.classList.toggle("abstained", abstained);
    const heading = q(".sources-heading");
    heading.textContent = abstained ? "参考: 質問に近い条文" : "根拠となった条文";
    // Abstaining with nothing near: the notice says it all.
    heading.hidden = abstained && !sources.length;
    q(".main-sources").replaceChildren(...main.map((s, i) => renderSource(s, i, quotesOf(s))));
    q(".other-sources").replaceChildren(...others.map((s, i) => renderSource(s, i, quotesOf(s))));
    q(".others").hidden = !others.length;
    q(".others-count").textContent = String(others.length);
    const none = q(".no-sources");
    none.hidden = main.length > 0 || abstained;
    none.textContent = sources.length ? "回答が直接拠る条文は特定できませんでした。下の候補をご確認ください。"
      : "条文は示されていません。";
    turn.sourcesShown = true;
  }

  // 要確認: the answer states a number or date the articles do not, with the clause
  // that decides it.
  function renderCheck(turn, data) {
    const q = (cls) => turn.node.querySelector(cls);
    const needs = Boolean(data && data.needs_check);
    q(".check-badge").hidden = !needs;
    q(".check-note").hidden = !needs;
    if (!needs) return;
    const g = (data.grounding && typeof data.grounding === "object") ? data.grounding : {};
    const claims = (Array.isArray(g.unsupported) ? g.unsupported : [])
      .map((c) => (c && typeof c === "object") ? c.text : c)
      .filter((t) => typeof t === "string" && t.trim());
    q(".check-claims").textContent = claims.length
      ? `（${claims.slice(0, 3).map((t) => `「${t.trim()}」`).join("、")}）` : "";
    const c = g.clause && typeof g.clause === "object" ? g.clause : null;
    q(".check-clause").hidden = !(c && c.quote);
    if (c && c.quote) {
      q(".check-quote").textContent = `「${String(c.quote).trim()}」`;
      q(".check-cite").textContent = [c.title, c.label || c.article].filter(Boolean).join(" ");
    }
  }

  function finishTurn(turn) {
    turn.answerEl.setAttribute("aria-busy", "false");
    turn.answerEl.classList.remove("streaming");
    stopClock(turn);
  }

  function turnError(turn, text) {
    const e = turn.node.querySelector(".turn-error");
    e.textContent = text;
    e.hidden = false;
  }

  // ---- copy ------------------------------------------------------------------------

  function copyText(turn) {
    const lines = [turn.answer.trim()];
    const items = Array.from(turn.node.querySelectorAll(".main-sources > li summary"));
    if (items.length) {
      lines.push("", turn.node.classList.contains("abstained") ? "近い条文:" : "根拠:");
      for (const s of items) lines.push(s.textContent.replace(/\s+/g, " ").trim());
    }
    return lines.join("\n");
  }

  async function writeClipboard(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* below */ }
    }
    // Plain http on a department's network: no Clipboard API there.
    const area = el("textarea", "visually-hidden");
    area.value = text;
    area.setAttribute("readonly", "");
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  function wireCopy(turn) {
    const button = turn.node.querySelector(".copy");
    const status = turn.node.querySelector(".copy-status");
    button.addEventListener("click", async () => {
      const ok = await writeClipboard(copyText(turn));
      status.textContent = ok ? "コピーしました" : "コピーできませんでした。回答を選択してコピーしてください。";
      setTimeout(() => { status.textContent = ""; }, 4000);
    });
  }

  // ---- feedback --------------------------------------------------------------------

  function wireFeedback(turn) {
    const f = turn.node.querySelector(".feedback");
    const send = f.querySelector(".fb-send");
    const status = f.querySelector(".fb-status");
    const comment = f.querySelector(".fb-comment");
    comment.maxLength = 4 * limit;             // the server's bound on a comment
    const thumbs = Array.from(f.querySelectorAll(".thumb"));
    thumbs.forEach((button) => {
      button.addEventListener("click", () => {
        turn.rating = button.dataset.rating;
        thumbs.forEach((b) => b.setAttribute("aria-pressed", b === button ? "true" : "false"));
        send.disabled = !turn.answerId;
        status.textContent = "";
      });
    });
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!turn.answerId || !turn.rating) return;
      send.disabled = true;
      status.textContent = "送信中…";
      const body = { id: turn.answerId, rating: turn.rating };
      const text = comment.value.trim();
      if (text) body.comment = text;
      try {
        const response = await fetch(FEEDBACK_URL, {
          method: "POST", headers: headers(), body: JSON.stringify(body),
        });
        if (!response.ok) {
          status.textContent = await readError(response, "feedback");
          if (response.status === 409) {
            // Rated already (another tab, or a retry that had gone through): the first
            // rating stays, so there is nothing left to send.
            f.querySelectorAll("button, textarea").forEach((b) => { b.disabled = true; });
            send.hidden = true;
          } else {
            send.disabled = false;
          }
          return;
        }
        status.textContent = "ご意見ありがとうございました。";
        f.querySelectorAll("button, textarea").forEach((b) => { b.disabled = true; });
        send.hidden = true;
      } catch (err) {
        status.textContent = "フィードバックを送信できませんでした。もう一度お試しください。";
        send.disabled = false;
      }
    });
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

  function setBusy(busy) {
    askButton.disabled = busy;
    askButton.textContent = busy ? "回答中…" : "送信";
    stopButton.hidden = !busy;
    newChat.disabled = busy;
  }

  async function ask(text) {
    if (controller) return;                    // one question at a time
    const mine = new AbortController();
    controller = mine;
    lastQuestion = text;
    clearError();
    tokenForm.hidden = true;
    const turn = newTurn(text);
    const sent = history.slice(-HISTORY_TURNS);
    question.value = "";
    updateCount();
    setBusy(true);
    turn.answerEl.setAttribute("aria-busy", "true");
    turn.answerEl.classList.add("streaming");
    startClock(turn);
    turn.node.scrollIntoView({ block: "start", behavior: "smooth" });

    let finished = false;
    let sawToken = false;
    let failed = false;
    try {
      const body = editionFields({ question: text, stream: true });
      if (sent.length) body.history = sent;
      const response = await fetch(ASK_URL, {
        method: "POST",
        headers: headers({ "Accept": "text/event-stream" }),
        body: JSON.stringify(body),
        signal: mine.signal,
      });
      if (!response.ok) {
        // Not asked: the turn goes, the question comes back to the box.
        failed = true;
        const message = await readError(response, "ask");
        turn.node.remove();
        if (!question.value) { question.value = text; updateCount(); }
        showError(message);
        return;
      }
      await readEvents(response, (name, data) => {
        if (mine !== controller) return;
        if (name === "token") {
          const piece = data && typeof data === "object" ? data.text : data;
          if (piece) {
            if (!sawToken) setPhase(turn, "回答を生成中");
            sawToken = true;
            turn.answer += String(piece);
            turn.answerEl.appendChild(document.createTextNode(String(piece)));
          }
        } else if (name === "sources") {
          renderSources(turn, data);
          if (!sawToken) setPhase(turn, "回答を生成中");
        } else if (name === "done") {
          finished = true;
          if (data && typeof data === "object") {
            // The whole answer object: authoritative for the text and the sources.
            if (typeof data.answer === "string" && data.answer !== turn.answerEl.textContent
                && (data.answer || !sawToken)) {
              turn.answerEl.textContent = data.answer;
              turn.answer = data.answer;
            }
            if (Array.isArray(data.sources)) renderSources(turn, data);
            renderCheck(turn, data);
            turn.answerId = data.id || null;
          }
          turn.done = true;
          history.push({ question: text, answer: turn.answer });
          turn.node.querySelector(".tools").hidden = !turn.answer.trim();
          if (turn.answerId) turn.node.querySelector(".feedback").hidden = false;
        } else if (name === "error") {
          finished = true;
          failed = true;
          turnError(turn, streamErrorMessage(data));
        }
      });
      if (!finished && mine === controller) {
        failed = true;
        turnError(turn, "回答が途中で途切れました。通信状況を確認して、もう一度送信してください。");
      }
    } catch (e) {
      failed = true;
      if (e && e.name === "AbortError") {
        turn.node.querySelector(".stopped").hidden = false;
      } else {
        turnError(turn, "サーバーに接続できませんでした。通信状況を確認して、もう一度送信してください。");
      }
    } finally {
      finishTurn(turn);
      turn.node.classList.toggle("unfinished", failed);
      if (failed && turn.answer.trim()) turn.node.querySelector(".tools").hidden = false;
      if (mine === controller) {
        controller = null;
        setBusy(false);
      }
      if (!thread.children.length) { welcome.hidden = false; newChat.hidden = true; }
    }
  }

  function stop() {
    if (controller) controller.abort();        // the server stops generating on hang-up
  }

  stopButton.addEventListener("click", () => { stop(); question.focus(); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && controller) stop();
  });

  newChat.addEventListener("click", () => {
    if (controller) return;
    history.length = 0;
    thread.replaceChildren();
    clearError();
    welcome.hidden = false;
    newChat.hidden = true;
    question.focus();
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = question.value.trim();
    if (!text) { question.focus(); return; }
    if (text.length > limit) { showError(httpErrorMessage(422, null, null, "ask")); return; }
    ask(text);
  });

  // Enter sends, Shift+Enter breaks the line; Enter that confirms a kana-kanji
  // conversion (IME composition) does neither.
  question.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey || e.isComposing || e.keyCode === 229) return;
    e.preventDefault();
    if (!askButton.disabled) form.requestSubmit();
  });

  document.querySelectorAll(".example").forEach((button) => {
    button.addEventListener("click", () => {
      if (controller) return;
      question.value = button.textContent.trim();
      updateCount();
      form.requestSubmit();
    });
  });

  setUpEntryYear();
  updateCount();
  // On a phone, focusing the box at once would cover the page with the keyboard.
  if (!window.matchMedia("(pointer: coarse)").matches) question.focus();
})();
