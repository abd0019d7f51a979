"""Settings: built-in defaults < rag.toml < RAG_* environment variables < flags.

rag.toml is read from --config, else $RAG_CONFIG, else ./rag.toml. Each section is a
dataclass of its own (`IngestSection`, `SearchSection`, `GenerateSection`,
`ServeSection`: `cfg.search.k` is [search] k) whose fields carry the setting's type,
default, allowed values, help and RAG_* variable, each written once (rag.settings loads
them); an unknown key is an error naming the file and the key, so a typo never silently
does nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .generation.base import DEFAULT_GENERATOR
from .settings import ConfigError, apply_env, apply_file, check_choices, read_toml, section, setting

MODES = ("hybrid", "dense", "bm25")
DENSE_KINDS = ("flat", "hnsw")
QUERY_ENCODERS = ("auto", "numpy", "sentence-transformers")
DTYPES = ("auto", "bf16", "fp16", "fp32")
BACKENDS = ("auto", "transformers", "ctranslate2", "openai")
APIS = ("completions", "chat")


@dataclass
class IngestSection:
    """[ingest]: how `rag ingest` reads documents and embeds passages."""
    paths: list[str] = setting(factory=lambda: ["corpus"], help=(
        "Documents `rag ingest` reads when given no paths and the index records none."))
    embedder: str | None = setting(None, env="RAG_EMBEDDER", help=(
        "Sentence-transformers model for a new index (default: the index's own, else "
        "cl-nagoya/ruri-v3-30m)."))
    query_prefix: str | None = setting(None, help="Prefix for questions (default: the model's own).")
    passage_prefix: str | None = setting(None, help="Prefix for passages (default: the model's own).")
    max_tokens: int | None = setting(None, env="RAG_MAX_TOKENS", help=(
        "Largest passage in embedder tokens, title and headings included (default: the "
        "embedder's window)."))
    batch_size: int = setting(32, env="RAG_BATCH_SIZE",
                              help="Passages per embedding batch.")
    dense: str = setting("flat", choices=DENSE_KINDS, help=(
        "FAISS index of a new index: flat (exact) or hnsw (approximate, for large corpora)."))
    device: str | None = setting(None, env="RAG_DEVICE",
                                 help="Device of the embedder (default: automatic).")
    trust_remote_code: bool = setting(False, help="Run the embedder repository's own code.")
    max_file_mb: float = setting(20.0, help=(
        "Largest file `rag ingest` reads, in MB (10^6 bytes); a larger one is reported by "
        "name and skipped (0: no limit)."))
    titles: dict[str, str] = setting(factory=dict, help=(
        "[ingest.titles]: document path (relative to the ingested directory) or file name "
        "-> the regulation's name, for files whose pages do not say it (booklet excerpts)."))
    editions: dict[str, dict | str] = setting(factory=dict, help=(
        "[ingest.editions]: document path (or file name) -> the date its edition takes "
        "effect (\"2024-04-01\"), or a table {regulation = name shared by its editions, "
        "effective_from, effective_to, transitional = [{entered_before = date, edition = "
        "path}], note}; the admin's word over the 施行日 read from its 附則."))


@dataclass
class SearchSection:
    """[search]: how questions find passages (rag search, ask, chat, eval, serve)."""
    k: int = setting(5, env="RAG_K", help="Passages retrieved.")
    mode: str = setting("hybrid", env="RAG_MODE", choices=MODES, help=(
        "hybrid (dense + BM25 fused by reciprocal rank), dense or bm25."))
    thesaurus: str = setting("default", help=(
        "Everyday words -> regulation terms added to queries: default (shipped), a TSV "
        "path, or \"\" for none."))
    # Sudachi-tokenised BM25 finds the articles of the sample corpus better than
    # multilingual-e5-small (hit@1 0.79 vs 0.64), the dense model those of the real public
    # set (0.58 vs 0.77); 1.5 is best over the three question sets (docs/benchmarks.md).
    # Chosen on the public sets (scripts/bench/tune_fusion.py, docs/benchmarks.md): with
    # the bigram channel beside it, Sudachi's BM25 votes less than before (it was 1.5).
    bm25_weight: float = setting(0.5, help=(
        "BM25's vote in hybrid fusion, the dense ranking's being 1."))
    bigram_weight: float = setting(1.0, help=(
        "The character-bigram BM25's vote in hybrid fusion, the dense ranking's being 1 "
        "(0: off)."))
    query_encoder: str = setting("auto", env="RAG_QUERY_ENCODER", choices=QUERY_ENCODERS,
                                 help=(
        "What embeds questions: auto (numpy, without torch, when it reproduces the index's "
        "embedder exactly, else sentence-transformers), numpy, or sentence-transformers."))


@dataclass
class GenerateSection:
    """[generate]: the answering model and how it decodes."""
    model: str = setting(DEFAULT_GENERATOR, env="RAG_MODEL",
                         help="The answering model: a Hugging Face id or a local directory.")
    adapter: str | None = setting(None, env="RAG_ADAPTER", help=(
        "A PEFT LoRA adapter used when present (a path that exists, or a Hub id)."))
    max_new_tokens: int = setting(256, help="Longest answer in tokens.")
    # On a CPU the prompt's prefill dominates the wait for the first token (a 1,800-token
    # prompt: ~9 s for a 0.5B model on two cores), so a CPU box caps the prompt.
    context_tokens: int | None = setting(None, env="RAG_CONTEXT_TOKENS", help=(
        "Most tokens a prompt may take (instructions, passages, question): fewer, tighter "
        "passages for a faster first token on a CPU (default: the model's window minus "
        "max_new_tokens)."))
    temperature: float = setting(0.0, help="0 = greedy: the same question gives the same answer.")
    dtype: str = setting("auto", choices=DTYPES, help="auto | bf16 | fp16 | fp32.")
    allow_pickle: bool = setting(False, help=(
        "Load pickled .bin weights (torch.load, weights only) when there are no safetensors."))
    min_score: float | None = setting(None, help=(
        "Abstain when the best passage's dense similarity is below this (an index with a "
        "calibrated abstention.json, `rag calibrate`, is decided by that as well)."))
    strict_grounding: bool = setting(False, help=(
        "Replace an answer whose numbers, dates or amounts are in none of the passages by "
        "the deciding clause, quoted (rag ask/chat --strict-grounding; the server too)."))
    device: str | None = setting(None, help="Device of the generator (default: automatic).")
    backend: str = setting("auto", choices=BACKENDS, help=(
        "transformers, ctranslate2 (a directory made by `rag models export --to ct2`), "
        "openai (an OpenAI-compatible server at base_url generates; retrieval stays here), "
        "or auto: ctranslate2 for such a directory, else transformers."))
    threads: int = setting(0, help=(
        "CPU threads of the CTranslate2 backend (0: its default)."))
    base_url: str | None = setting(None, env="RAG_OPENAI_BASE_URL", help=(
        "The openai backend's server, e.g. http://gpu01:8001/v1 (vLLM)."))
    api: str = setting("completions", choices=APIS, help=(
        "The openai backend's endpoint: completions (the rendered prompt, as generated "
        "here: vLLM, llama.cpp) or chat (the prompt as one user message)."))
    api_key: str | None = setting(None, env="RAG_OPENAI_API_KEY", help=(
        "The openai backend's bearer token (else $OPENAI_API_KEY); better in the "
        "environment than in a file."))
    tokenizer: str | None = setting(None, help=(
        "The openai backend's tokenizer for counting prompt tokens (default: model); "
        "give it when model is a served name such as a vLLM LoRA module's."))
    context_window: int = setting(0, help=(
        "The openai backend's context window in tokens (0: the server's max_model_len, "
        "else the tokenizer's)."))
    trust_remote_code: bool = setting(False, help="Run the generator repository's own code.")


@dataclass
class ServeSection:
    """[serve]: `rag serve`'s address, batching and limits."""
    host: str = setting("127.0.0.1", help=(
        "Address `rag serve` listens on (0.0.0.0 opens it to the network)."))
    port: int = setting(8000, env="RAG_PORT", help="Port of `rag serve`.")
    batch_size: int = setting(16, help=(
        "Most questions the model worker generates together."))
    batch_wait_ms: float = setting(20.0, help=(
        "How long the worker waits for more questions to join a batch."))
    queue_size: int = setting(64, help=(
        "Questions waiting for the model; beyond it the server answers 503."))
    timeout_s: float = setting(120.0, help=(
        "A question's time limit, queueing included (504 after it)."))
    max_question_chars: int = setting(1000, help=(
        "Longest question accepted (422 beyond)."))
    max_body_bytes: int = setting(65536, help=(
        "Largest request body (413 beyond)."))
    rate_per_minute: float = setting(30.0, help=(
        "Requests per minute per client address on /api and /v1 (429 beyond; 0: no limit)."))
    rate_burst: int = setting(10, help=(
        "Requests a client may send at once before the per-minute rate applies."))
    feedback_db: str = setting("feedback/feedback.sqlite3", env="RAG_FEEDBACK_DB", help=(
        "SQLite file of the students' ratings (`rag feedback export`)."))
    forwarded_allow_ips: list[str] = setting(factory=list, env="RAG_FORWARDED_ALLOW_IPS", help=(
        "Addresses (or networks such as 10.0.0.0/8) of reverse proxies whose "
        "X-Forwarded-For / X-Forwarded-Proto are believed; the client address of the rate "
        "limits is then the proxy's client's. Default: none (a header names no one)."))
    allowed_hosts: list[str] = setting(factory=list, env="RAG_ALLOWED_HOSTS", help=(
        "Host header values served (name without port; \".example.ac.jp\" takes its "
        "subdomains too, \"*\" any); others get 400 (DNS rebinding). Default: localhost, "
        "127.0.0.1 and ::1 when bound to a loopback address, else any."))
    auth_failures_per_minute: int = setting(5, help=(
        "Wrong bearer tokens an address may send a minute; past them every request from it "
        "gets 429 until the minute has refilled."))
    header_timeout_s: float = setting(10.0, help=(
        "Seconds a connection may take to send a request's line and headers (it is closed "
        "after)."))
    body_timeout_s: float = setting(30.0, help=(
        "Seconds a request may take to send its body (408 after, and the connection closes)."))
    keep_alive_s: float = setting(5.0, help=(
        "Seconds an idle keep-alive connection stays open between requests."))
    model_name: str | None = setting(None, help=(
        "The model's name in /v1 answers and /v1/models (default: the model's Hugging Face "
        "id, or its directory's name for a local path)."))


@dataclass
class Config:
    """rag.toml: top-level settings, then one object per section."""
    index: str = setting("indexes/default", env="RAG_INDEX",
                         help="Where `rag ingest` writes and the other commands read.")
    server: str | None = setting(None, env="RAG_SERVER", help=(
        "A running `rag serve` (http://host:port) that `rag ask` and `rag search` send the "
        "question to instead of loading the index and the model here."))
    api_token: str | None = setting(None, env="RAG_API_TOKEN", help=(
        "The bearer token of `rag serve`: the server requires it on /api and /v1 when it "
        "is set, and `--server` clients send it; better in the environment than in a file."))
    ingest: IngestSection = section(IngestSection)
    search: SearchSection = section(SearchSection)
    generate: GenerateSection = section(GenerateSection)
    serve: ServeSection = section(ServeSection)
    source: str = field(default="defaults", metadata={"internal": True})   # the file read


BM25_WEIGHT = SearchSection.bm25_weight        # for code that searches without a config
BIGRAM_WEIGHT = SearchSection.bigram_weight


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Built-in defaults < rag.toml < RAG_* environment variables (flags come last, in
    the commands). rag.toml is --config, else $RAG_CONFIG, else ./rag.toml."""
    cfg = Config()
    explicit = path or os.environ.get("RAG_CONFIG")
    file = Path(explicit) if explicit else Path("rag.toml")
    if explicit and not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    if file.is_file():
        apply_file(cfg, read_toml(file), str(file))
        cfg.source = str(file)
        _validate(cfg, str(file))
    apply_env(cfg)
    _validate(cfg, "settings")
    return cfg


def _validate(cfg: Config, where: str) -> None:
    check_choices(cfg, where)
    ingest, search, gen, serve = cfg.ingest, cfg.search, cfg.generate, cfg.serve
    if ingest.max_file_mb < 0:
        raise ConfigError(f"{where}: [ingest] max_file_mb must be 0 (no limit) or more, not "
                          f"{ingest.max_file_mb!r}")
    if search.bm25_weight < 0:
        raise ConfigError(f"{where}: bm25_weight must be 0 or more, not {search.bm25_weight!r}")
    if search.bigram_weight < 0:
        raise ConfigError(f"{where}: bigram_weight must be 0 or more, "
                          f"not {search.bigram_weight!r}")
    for key, value in (("k", search.k), ("batch_size", ingest.batch_size)):
        if value < 1:
            raise ConfigError(f"{where}: {key} must be a positive integer")
    if gen.context_window < 0:
        raise ConfigError(f"{where}: context_window must be 0 or more")
    for key in ("port", "batch_size", "queue_size", "max_question_chars", "max_body_bytes",
                "rate_burst"):
        if getattr(serve, key) < 1:
            raise ConfigError(f"{where}: [serve] {key} must be a positive integer")
    if min(serve.header_timeout_s, serve.body_timeout_s, serve.keep_alive_s) <= 0 or \
            serve.auth_failures_per_minute < 1:
        raise ConfigError(f"{where}: [serve] header_timeout_s, body_timeout_s and keep_alive_s "
                          "must be more than 0, auth_failures_per_minute at least 1")
    if serve.batch_wait_ms < 0 or serve.timeout_s <= 0 or serve.rate_per_minute < 0:
        raise ConfigError(f"{where}: [serve] batch_wait_ms and rate_per_minute must be 0 or "
                          "more, timeout_s more than 0")
    if gen.threads < 0:
        raise ConfigError(f"{where}: threads must be 0 or more")
    if gen.min_score is not None and not -1 <= gen.min_score <= 1:
        raise ConfigError(f"{where}: min_score is a cosine similarity, between -1 and 1, not "
                          f"{gen.min_score!r}")
    if gen.context_tokens is not None and gen.context_tokens < 64:
        raise ConfigError(f"{where}: context_tokens must be at least 64, not "
                          f"{gen.context_tokens!r}")
    if gen.temperature < 0 or gen.max_new_tokens < 1:
        raise ConfigError(f"{where}: temperature must be 0 or more and max_new_tokens at "
                          "least 1")
    if any(not v.strip() for v in ingest.titles.values()):
        raise ConfigError(f"{where}: [ingest.titles] has an empty title")
    from ingest.editions import EditionError, check_declared

    try:
        check_declared(ingest.editions)
    except EditionError as e:
        raise ConfigError(f"{where}: {e}") from None


__all__ = ["Config", "IngestSection", "SearchSection", "GenerateSection", "ServeSection",
           "ConfigError", "MODES", "DENSE_KINDS", "QUERY_ENCODERS", "DTYPES", "BACKENDS", "APIS",
           "BM25_WEIGHT", "BIGRAM_WEIGHT", "load_config"]
