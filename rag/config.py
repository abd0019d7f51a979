"""Settings: built-in defaults < rag.toml < RAG_* environment variables < flags.

rag.toml is read from --config, else $RAG_CONFIG, else ./rag.toml. Every setting is a
field of `Config` with its type, default, help, section and variable (rag.settings
loads it); an unknown key is an error naming the file and the key, so a typo never
silently does nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .settings import ConfigError, apply_env, apply_file, read_toml, setting

MODES = ("hybrid", "dense", "bm25")


@dataclass
class Config:
    index: str = setting("indexes/default", section="index", env="RAG_INDEX",
                         help="Where `rag ingest` writes and the other commands read.")
    server: str | None = setting(None, env="RAG_SERVER", help=(
        "A running `rag serve` (http://host:port) that `rag ask` and `rag search` send the "
        "question to instead of loading the index and the model here."))
    paths: list[str] = setting(factory=lambda: ["corpus"], section="ingest", help=(
        "Documents `rag ingest` reads when given no paths and the index records none."))
    embedder: str | None = setting(None, section="ingest", env="RAG_EMBEDDER", help=(
        "Sentence-transformers model for a new index (default: the index's own, else "
        "cl-nagoya/ruri-v3-30m)."))
    query_prefix: str | None = setting(None, section="ingest",
                                       help="Prefix for questions (default: the model's own).")
    passage_prefix: str | None = setting(None, section="ingest",
                                         help="Prefix for passages (default: the model's own).")
    max_tokens: int | None = setting(None, section="ingest", env="RAG_MAX_TOKENS", help=(
        "Largest passage in embedder tokens, title and headings included (default: the "
        "embedder's window)."))
    batch_size: int = setting(32, section="ingest", env="RAG_BATCH_SIZE",
                              help="Passages per embedding batch.")
    dense: str = setting("flat", section="ingest", help=(
        "FAISS index of a new index: flat (exact) or hnsw (approximate, for large corpora)."))
    device: str | None = setting(None, section="ingest", env="RAG_DEVICE",
                                 help="Device of the embedder (default: automatic).")
    trust_remote_code: bool = setting(False, section="ingest",
                                      help="Run the embedder repository's own code.")
    titles: dict[str, str] = setting(factory=dict, section="ingest", help=(
        "[ingest.titles]: document path (relative to the ingested directory) or file name "
        "-> the regulation's name, for files whose pages do not say it (booklet excerpts)."))
    k: int = setting(5, section="search", env="RAG_K", help="Passages retrieved.")
    mode: str = setting("hybrid", section="search", env="RAG_MODE", help=(
        "hybrid (dense + BM25 fused by reciprocal rank), dense or bm25."))
    thesaurus: str = setting("default", section="search", help=(
        "Everyday words -> regulation terms added to queries: default (shipped), a TSV "
        "path, or \"\" for none."))
    # Sudachi-tokenised BM25 finds the articles of the sample corpus better than
    # multilingual-e5-small (hit@1 0.79 vs 0.64), the dense model those of the real public
    # set (0.58 vs 0.77); 1.5 is best over the three question sets (docs/benchmarks.md).
    # Chosen on the public sets (scripts/bench/tune_fusion.py, docs/benchmarks.md): with
    # the bigram channel beside it, Sudachi's BM25 votes less than before (it was 1.5).
    bm25_weight: float = setting(0.5, section="search", help=(
        "BM25's vote in hybrid fusion, the dense ranking's being 1."))
    bigram_weight: float = setting(1.0, section="search", help=(
        "The character-bigram BM25's vote in hybrid fusion, the dense ranking's being 1 "
        "(0: off)."))
    model: str = setting("cyberagent/open-calm-3b", section="generate", env="RAG_MODEL",
                         help="The answering model: a Hugging Face id or a local directory.")
    adapter: str | None = setting(None, section="generate", env="RAG_ADAPTER", help=(
        "A PEFT LoRA adapter used when present (a path that exists, or a Hub id)."))
    max_new_tokens: int = setting(256, section="generate", help="Longest answer in tokens.")
    # On a CPU the prompt's prefill dominates the wait for the first token (a 1,800-token
    # prompt: ~9 s for a 0.5B model on two cores), so a CPU box caps the prompt.
    context_tokens: int | None = setting(None, section="generate", env="RAG_CONTEXT_TOKENS",
                                         help=(
        "Most tokens a prompt may take (instructions, passages, question): fewer, tighter "
        "passages for a faster first token on a CPU (default: the model's window minus "
        "max_new_tokens)."))
    temperature: float = setting(0.0, section="generate",
                                 help="0 = greedy: the same question gives the same answer.")
    dtype: str = setting("auto", section="generate", help="auto | bf16 | fp16 | fp32.")
    allow_pickle: bool = setting(False, section="generate", help=(
        "Load pickled .bin weights (torch.load, weights only) when there are no safetensors."))
    min_score: float | None = setting(None, section="generate", help=(
        "Abstain when the best passage's dense similarity is below this."))
    gen_device: str | None = setting(None, section="generate", key="device",
                                     help="Device of the generator (default: automatic).")
    backend: str = setting("auto", section="generate", help=(
        "transformers, ctranslate2 (a directory made by `rag models export --to ct2`), "
        "openai (an OpenAI-compatible server at base_url generates; retrieval stays here), "
        "or auto: ctranslate2 for such a directory, else transformers."))
    threads: int = setting(0, section="generate", help=(
        "CPU threads of the CTranslate2 backend (0: its default)."))
    base_url: str | None = setting(None, section="generate", env="RAG_OPENAI_BASE_URL", help=(
        "The openai backend's server, e.g. http://gpu01:8001/v1 (vLLM)."))
    api: str = setting("completions", section="generate", help=(
        "The openai backend's endpoint: completions (the rendered prompt, as generated "
        "here: vLLM, llama.cpp) or chat (the prompt as one user message)."))
    api_key: str | None = setting(None, section="generate", env="RAG_OPENAI_API_KEY", help=(
        "The openai backend's bearer token (else $OPENAI_API_KEY); better in the "
        "environment than in a file."))
    tokenizer: str | None = setting(None, section="generate", help=(
        "The openai backend's tokenizer for counting prompt tokens (default: model); "
        "give it when model is a served name such as a vLLM LoRA module's."))
    context_window: int = setting(0, section="generate", help=(
        "The openai backend's context window in tokens (0: the server's max_model_len, "
        "else the tokenizer's)."))
    gen_trust_remote_code: bool = setting(False, section="generate", key="trust_remote_code",
                                          help="Run the generator repository's own code.")
    host: str = setting("127.0.0.1", section="serve", help=(
        "Address `rag serve` listens on (0.0.0.0 opens it to the network)."))
    port: int = setting(8000, section="serve", env="RAG_PORT", help="Port of `rag serve`.")
    serve_batch_size: int = setting(16, section="serve", key="batch_size", help=(
        "Most questions the model worker generates together."))
    batch_wait_ms: float = setting(20.0, section="serve", help=(
        "How long the worker waits for more questions to join a batch."))
    queue_size: int = setting(64, section="serve", help=(
        "Questions waiting for the model; beyond it the server answers 503."))
    timeout_s: float = setting(120.0, section="serve", help=(
        "A question's time limit, queueing included (504 after it)."))
    max_question_chars: int = setting(1000, section="serve", help=(
        "Longest question accepted (422 beyond)."))
    max_body_bytes: int = setting(65536, section="serve", help=(
        "Largest request body (413 beyond)."))
    rate_per_minute: float = setting(30.0, section="serve", help=(
        "Requests per minute per client address on /api and /v1 (429 beyond; 0: no limit)."))
    rate_burst: int = setting(10, section="serve", help=(
        "Requests a client may send at once before the per-minute rate applies."))
    feedback_db: str = setting("feedback/feedback.sqlite3", section="serve",
                               env="RAG_FEEDBACK_DB", help=(
                                   "SQLite file of the students' ratings (`rag feedback export`)."))
    source: str = field(default="defaults", metadata={"internal": True})   # the file read


BM25_WEIGHT = Config.bm25_weight        # for code that searches without a config
BIGRAM_WEIGHT = Config.bigram_weight


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
    if cfg.mode not in MODES:
        raise ConfigError(f"{where}: mode must be one of {', '.join(MODES)}, not {cfg.mode!r}")
    if cfg.dense not in ("flat", "hnsw"):
        raise ConfigError(f"{where}: dense must be flat or hnsw, not {cfg.dense!r}")
    if cfg.bm25_weight < 0:
        raise ConfigError(f"{where}: bm25_weight must be 0 or more, not {cfg.bm25_weight!r}")
    if cfg.bigram_weight < 0:
        raise ConfigError(f"{where}: bigram_weight must be 0 or more, "
                          f"not {cfg.bigram_weight!r}")
    for key in ("k", "batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{where}: {key} must be a positive integer")
    if cfg.backend not in ("auto", "transformers", "ctranslate2", "openai"):
        raise ConfigError(f"{where}: backend must be auto, transformers, ctranslate2 or "
                          f"openai, not {cfg.backend!r}")
    if cfg.api not in ("completions", "chat"):
        raise ConfigError(f"{where}: api must be completions or chat, not {cfg.api!r}")
    if cfg.context_window < 0:
        raise ConfigError(f"{where}: context_window must be 0 or more")
    for key in ("port", "serve_batch_size", "queue_size", "max_question_chars",
                "max_body_bytes", "rate_burst"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{where}: [serve] {key.removeprefix('serve_')} must be a "
                              "positive integer")
    if cfg.batch_wait_ms < 0 or cfg.timeout_s <= 0 or cfg.rate_per_minute < 0:
        raise ConfigError(f"{where}: [serve] batch_wait_ms and rate_per_minute must be 0 or "
                          "more, timeout_s more than 0")
    if cfg.threads < 0:
        raise ConfigError(f"{where}: threads must be 0 or more")
    if cfg.min_score is not None and not -1 <= cfg.min_score <= 1:
        raise ConfigError(f"{where}: min_score is a cosine similarity, between -1 and 1, not "
                          f"{cfg.min_score!r}")
    if cfg.context_tokens is not None and cfg.context_tokens < 64:
        raise ConfigError(f"{where}: context_tokens must be at least 64, not "
                          f"{cfg.context_tokens!r}")
    if cfg.temperature < 0 or cfg.max_new_tokens < 1:
        raise ConfigError(f"{where}: temperature must be 0 or more and max_new_tokens at "
                          "least 1")
    if any(not v.strip() for v in cfg.titles.values()):
        raise ConfigError(f"{where}: [ingest.titles] has an empty title")


__all__ = ["Config", "ConfigError", "MODES", "BM25_WEIGHT", "BIGRAM_WEIGHT", "load_config"]
