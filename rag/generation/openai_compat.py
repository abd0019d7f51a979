"""The generator interface over an OpenAI-compatible server: `[generate] backend = "openai"`.

Retrieval, context packing and the prompt stay here; only generation goes to the server
(vLLM serving OpenCALM + the LoRA adapter on a GPU node, see
scripts/slurm/vllm-serve.sbatch; llama.cpp's server; another `rag serve`). What is sent:

- `api = "completions"` (the default): POST {base_url}/completions with the prompt the
  Answerer rendered with the model's own chat template, exactly as the local backends
  generate from it. With greedy decoding the answer is the one the transformers backend
  gives on the same weights. `add_special_tokens: false` (a vLLM extension others
  ignore) keeps the server from putting a second BOS before a prompt that has one.
- `api = "chat"`: POST {base_url}/chat/completions with the rendered prompt as the one
  user message, for servers that offer only the chat endpoint. The server wraps it in
  its own template, so answers can differ from local ones. A `rag serve` answers this
  call with its own retrieval around the message: to use a department's `rag serve`
  from the command line, `rag ask --server URL` is the direct way.

Token counting (context packing) uses the served model's tokenizer, loaded here
(`[generate] tokenizer`, default `[generate] model`): small, and no weights. The context
window is `[generate] context_window`, else what the server's /models says (vLLM's
`max_model_len`), else the tokenizer's `model_max_length`, else 2048. Streaming reads the
server-sent events; `cancel()` or an exception in `on_text` closes the connection, which
stops the generation on the server. The API key: `[generate] api_key`, RAG_OPENAI_API_KEY
or OPENAI_API_KEY.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..client import Client, ServerError, sse_events
from ..config import APIS
from .base import Generation, GenerationOptions, Generator, rate
from .models import ModelError, load_tokenizer

WHAT = "OpenAI-compatible server"


class OpenAIGenerator(Generator):
    """Generation on an OpenAI-compatible server; the tokenizer local."""

    def __init__(self, base_url: str, model: str, *, api: str = "completions",
                 tokenizer: str | None = None, api_key: str | None = None,
                 context_window: int = 0, trust_remote_code: bool = False,
                 timeout_s: float = 600.0):
        super().__init__()
        started = time.perf_counter()
        if api not in APIS:
            raise ModelError(f"[generate] api must be one of {', '.join(APIS)}, not {api!r}")
        if not base_url:
            raise ModelError('[generate] backend = "openai" needs [generate] base_url (the '
                             "server's http://host:port/v1)")
        # RAG_OPENAI_API_KEY is [generate] api_key's variable; OpenAI's own is the fallback.
        key = api_key or os.environ.get("OPENAI_API_KEY") or ""
        self.client = Client(base_url, token=key, read_timeout=timeout_s, what=WHAT,
                             token_variable="RAG_OPENAI_API_KEY", setting="[generate] base_url")
        self.base_url, self.api = self.client.url, api
        self.name, self.adapter = model, None
        self.tokenizer = load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code)
        eos = self.tokenizer.eos_token_id
        self.stop_ids = [eos] if eos is not None else []
        self.context_window = int(context_window or self._served_window() or
                                  self._tokenizer_window() or 2048)
        self.load_s = time.perf_counter() - started

    def _served_window(self) -> int | None:
        """max_model_len of the served model as vLLM's /models lists it (None when the
        server does not say). An unreachable server is an error here, at load."""
        try:
            listing = self.client.json("GET", "/models")
        except ServerError as e:
            if "404" in str(e) or "405" in str(e):
                return None
            raise
        for entry in (listing.get("data") or []) if isinstance(listing, dict) else []:
            if isinstance(entry, dict) and entry.get("id") == self.name:
                window = entry.get("max_model_len") or entry.get("context_length")
                return int(window) if window else None
        return None

    def _tokenizer_window(self) -> int | None:
        window = getattr(self.tokenizer, "model_max_length", None)
        return int(window) if window and window < 1_000_000 else None

    # ------------------------------------------------------------------ requests

    def _check(self, prompt: str, max_new_tokens: int) -> None:
        self.check_window(self.count_tokens(prompt), max_new_tokens)

    def _body(self, prompt, options: GenerationOptions, stream: bool) -> tuple[str, dict]:
        body: dict = {"model": self.name, "max_tokens": options.max_new_tokens,
                      "temperature": options.temperature, "stream": stream}
        if options.temperature > 0:
            body["top_p"] = 0.95
        if options.fixed_length:             # vLLM's extensions, for benchmarks
            body.update(ignore_eos=True, min_tokens=options.max_new_tokens)
        if self.api == "completions":
            body.update(prompt=prompt, add_special_tokens=False)
            return "/completions", body
        body["messages"] = [{"role": "user", "content": prompt}]
        return "/chat/completions", body

    @staticmethod
    def _piece(choice: dict) -> str:
        if "text" in choice:
            return choice.get("text") or ""
        part = choice.get("delta") or choice.get("message") or {}
        return part.get("content") or ""

    def generate(self, prompt: str, options: GenerationOptions = GenerationOptions(), *,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        self._cancel.clear()
        return self._stream(prompt, options, on_text, self._cancel)

    def stream_batch(self, prompts: list[str], options: GenerationOptions = GenerationOptions(),
                     on_text: Sequence[Callable[[str], None] | None] | None = None,
                     cancelled: Sequence[threading.Event] | None = None) -> list[Generation]:
        """Several prompts streamed at once, one request each in its own thread, so the
        server batches them (`rag serve` with this backend in front of vLLM). A sequence
        whose `cancelled[i]` is set or whose `on_text[i]` raises stops alone (its
        connection closes), with `cancelled` set."""
        on_text = list(on_text or [None] * len(prompts))
        cancelled = list(cancelled or [threading.Event() for _ in prompts])

        def one(i: int) -> Generation:
            pieces: list[str] = []

            def forward(text: str) -> None:
                pieces.append(text)
                if on_text[i]:
                    on_text[i](text)

            if cancelled[i].is_set():
                return Generation("", 0, None, None, False, cancelled=True)
            try:
                return self._stream(prompts[i], options, forward, cancelled[i])
            except ServerError:
                raise
            except Exception:  # noqa: BLE001 - this sequence's reader failed: it stops alone
                text = "".join(pieces)
                return Generation(text, self.count_tokens(text), None, None, False,
                                  cancelled=True)

        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(32, len(prompts))) as pool:
            return list(pool.map(one, range(len(prompts))))

    def _stream(self, prompt: str, options: GenerationOptions,
                on_text: Callable[[str], None] | None, stop: threading.Event) -> Generation:
        """One streamed request; `stop` set (cancel) or `on_text` raising closes it."""
        self._check(prompt, options.max_new_tokens)
        path, body = self._body(prompt, options, stream=True)
        started = time.perf_counter()
        response = self.client.request("POST", path, body, accept="text/event-stream")
        first, pieces, finish, usage = None, [], None, None
        reader_error: BaseException | None = None
        try:
            for _, data in sse_events(response):
                if data.strip() == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise ServerError(f"{WHAT} at {self.base_url}: a stream event is not "
                                      f"JSON: {data[:200]!r}") from None
                if "error" in chunk:
                    error = chunk["error"]
                    raise ServerError(f"{WHAT} at {self.base_url} failed while generating: "
                                      f"{error.get('message') if isinstance(error, dict) else error}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    piece = self._piece(choice)
                    if piece:
                        if first is None:
                            first = (time.perf_counter() - started) * 1000
                        pieces.append(piece)
                        if on_text:
                            try:
                                on_text(piece)
                            except BaseException as e:  # noqa: BLE001 - re-raised below
                                reader_error = e        # the reader went away (Ctrl-C)
                                break
                    finish = choice.get("finish_reason") or finish
                if stop.is_set() or reader_error is not None:
                    break
        except (TimeoutError, OSError) as e:
            raise ServerError(f"{WHAT} at {self.base_url}: the stream broke off ({e})") from None
        finally:
            response.conn.close()      # also what stops the server's generation early
        if reader_error is not None:
            raise reader_error
        text = "".join(pieces)
        elapsed = time.perf_counter() - started
        n = int((usage or {}).get("completion_tokens") or self.count_tokens(text))
        return Generation(text, n, first, rate(n, elapsed), finish == "stop",
                          cancelled=stop.is_set())

    def generate_batch(self, prompts: list[str],
                       options: GenerationOptions = GenerationOptions()) -> list[Generation]:
        """Greedy answers: one request with all prompts (completions), else concurrent
        chat requests; the server batches them."""
        options = GenerationOptions(options.max_new_tokens, 0.0, options.fixed_length)
        for p in prompts:
            self._check(p, options.max_new_tokens)
        started = time.perf_counter()
        if self.api == "completions":
            path, body = self._body(prompts, options, stream=False)
            answer = self.client.json("POST", path, body)
            choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != len(prompts):
                raise ServerError(f"{WHAT} at {self.base_url}: {len(choices)} completions for "
                                  f"{len(prompts)} prompts")
        else:
            def one(prompt):
                path, body = self._body(prompt, options, stream=False)
                return (self.client.json("POST", path, body).get("choices") or [{}])[0]
            with ThreadPoolExecutor(max_workers=min(8, len(prompts) or 1)) as pool:
                choices = list(pool.map(one, prompts))
        elapsed = time.perf_counter() - started
        out = []
        for choice in choices:
            text = self._piece(choice)
            out.append(Generation(text, self.count_tokens(text), None, None,
                                  choice.get("finish_reason") == "stop"))
        total = sum(g.new_tokens for g in out)
        for g in out:
            g.tokens_per_s = rate(total, elapsed)
        return out
