"""Resolved settings -> the objects that do the work: Retriever, Generator, Answerer.

Every command that searches, answers or evaluates builds them here, so a bad index,
embedder, thesaurus, model or adapter is reported the same way everywhere, and a
setting given on the command line (anything not None) wins over rag.toml, which wins
over the built-in default.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .generator import GenerationOptions, Generator
from .models import ModelError
from .prompt import layout_mismatch, trained_layout

Log = Callable[[str], None]


def pick(given, configured):
    """The flag when it was given (an explicit "" or 0 counts), else the setting."""
    return configured if given is None else given


@dataclass
class ModelOptions:
    """Which generator to load and how: flags of ask, chat and eval (None = not given)."""
    model: str | None = None
    adapter: str | None = None
    no_adapter: bool = False
    device: str | None = None
    dtype: str | None = None
    allow_pickle: bool | None = None
    trust_remote_code: bool | None = None
    strict: bool = False     # refuse an adapter trained on another prompt layout


@dataclass
class AnswerOptions:
    """How to answer: retrieval and decoding flags of ask and chat (None = not given)."""
    index_dir: Path | None = None
    k: int | None = None
    mode: str | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    min_score: float | None = None
    context_tokens: int | None = None


def build_retriever(cfg: Config, index_dir: Path | None = None, mode: str | None = None, *,
                    embedder: str | None = None, device: str | None = None,
                    expand: bool = True, warm: bool = True):
    """The index with the configured search settings, loaded for `mode` (unless not
    `warm`: the server lends a reloaded index the embedder it already has)."""
    from .retrieve import Retriever

    retriever = Retriever(pick(index_dir, Path(cfg.index)), embedder=embedder,
                          device=pick(device, cfg.device),
                          trust_remote_code=cfg.trust_remote_code,
                          thesaurus=cfg.thesaurus if expand else None,
                          bm25_weight=cfg.bm25_weight, bigram_weight=cfg.bigram_weight)
    if warm:
        retriever.warm(pick(mode, cfg.mode))
    return retriever


def configured_adapter(cfg: Config, log: Log = lambda s: None) -> str | None:
    """The configured adapter when it is present: a local directory, or a Hub id that is
    in the local cache or fetchable. A path that does not exist (yet) is skipped."""
    from .models import adapter_base_model

    if not cfg.adapter:
        return None
    if Path(cfg.adapter).expanduser().exists():
        return str(Path(cfg.adapter).expanduser())
    try:
        adapter_base_model(cfg.adapter)
    except ModelError:
        log(f"configured adapter {cfg.adapter} not found; answering without it")
        return None
    return cfg.adapter


def resolve_adapter(cfg: Config, opts: ModelOptions, log: Log = lambda s: None) -> str | None:
    if opts.no_adapter:
        return None
    return opts.adapter if opts.adapter is not None else configured_adapter(cfg, log)


def _openai_generator(cfg: Config, opts: ModelOptions, max_new_tokens: int,
                      log: Log) -> Generator:
    """Generation on an OpenAI-compatible server (rag/openai_backend.py)."""
    from .openai_backend import OpenAIGenerator

    if opts.adapter:
        raise ModelError("with [generate] backend = \"openai\" the server applies the adapter "
                         "(vLLM: --lora-modules NAME=PATH); give its served name as --model")
    if cfg.adapter and not opts.no_adapter:
        log(f"configured adapter {cfg.adapter} not applied here: the openai backend's server "
            "serves the model (and its adapter) named by [generate] model")
    model = opts.model or cfg.model
    log(f"generating with {model} on {cfg.base_url} (OpenAI-compatible, {cfg.api})")
    generator = OpenAIGenerator(
        cfg.base_url or "", model, api=cfg.api, tokenizer=cfg.tokenizer, api_key=cfg.api_key,
        context_window=cfg.context_window,
        trust_remote_code=pick(opts.trust_remote_code, cfg.gen_trust_remote_code))
    _check_room(generator, max_new_tokens)
    return generator


def build_generator(cfg: Config, opts: ModelOptions, *, max_new_tokens: int,
                    log: Log = lambda s: None) -> Generator:
    """The generator (+ adapter). With an adapter and no model: the model the adapter
    was trained on. `max_new_tokens` must leave room for a question and its context."""
    from .ct2 import CT2Generator, is_export
    from .generate import TransformersGenerator
    from .models import base_model_for

    model = opts.model
    if cfg.backend == "openai":
        return _openai_generator(cfg, opts, max_new_tokens, log)
    if cfg.backend == "ctranslate2" or (cfg.backend == "auto" and is_export(
            model or cfg.model)):
        # An export carries its adapter merged in; a configured adapter does not apply.
        if opts.adapter:
            raise ModelError(f"{model or cfg.model} is a CTranslate2 export: its adapter was "
                             "merged when it was exported (`rag models export --adapter`)")
        if cfg.adapter and not opts.no_adapter:
            log(f"configured adapter {cfg.adapter} not applied: a CTranslate2 export carries "
                "the adapter it was exported with")
        log(f"loading {model or cfg.model} (CTranslate2)")
        generator = CT2Generator(model or cfg.model, device=pick(opts.device, cfg.gen_device),
                                 threads=cfg.threads)
        _check_layout(layout_mismatch(generator.record.get("trained_prompt"),
                                      generator.tokenizer), opts, log)
        _check_room(generator, max_new_tokens)
        return generator
    adapter = resolve_adapter(cfg, opts, log)
    if model is None:
        model = base_model_for(adapter, cfg.model) if adapter else cfg.model
    log(f"loading {model}" + (f" + adapter {adapter}" if adapter else ""))
    generator = TransformersGenerator(
        model, adapter=adapter, device=pick(opts.device, cfg.gen_device),
        dtype=pick(opts.dtype, cfg.dtype),
        trust_remote_code=pick(opts.trust_remote_code, cfg.gen_trust_remote_code),
        allow_pickle=pick(opts.allow_pickle, cfg.allow_pickle))
    if adapter:
        _check_layout(layout_mismatch(trained_layout(adapter), generator.tokenizer), opts, log)
    _check_room(generator, max_new_tokens)
    return generator


def _check_layout(why: str | None, opts: ModelOptions, log: Log) -> None:
    """An adapter sees at answering the prompt layout it was trained on, or we say so
    (warn; refuse with --strict)."""
    if not why:
        return
    if opts.strict:
        raise ModelError(f"{why}; train it again with this version, or leave out --strict")
    log(f"warning: {why}: its answers may suffer; train it again with this version "
        "(--strict refuses)")


def _check_room(generator: Generator, max_new_tokens: int) -> None:
    if max_new_tokens >= generator.context_window // 2:
        raise ModelError(
            f"--max-new-tokens {max_new_tokens} leaves too little of {generator.name}'s "
            f"{generator.context_window}-token window for the question and its context")


def build_answerer(cfg: Config, model: ModelOptions, answer: AnswerOptions, *,
                   retrieval: bool = True, log: Log = lambda s: None):
    """Retriever (unless answering without retrieval) + generator -> Answerer."""
    from .answer import Answerer

    options = GenerationOptions(max_new_tokens=pick(answer.max_new_tokens, cfg.max_new_tokens),
                                temperature=pick(answer.temperature, cfg.temperature))
    mode = pick(answer.mode, cfg.mode)
    retriever = build_retriever(cfg, answer.index_dir, mode) if retrieval else None
    generator = build_generator(cfg, model, max_new_tokens=options.max_new_tokens, log=log)
    return Answerer(generator, retriever, k=pick(answer.k, cfg.k), mode=mode,
                    min_score=pick(answer.min_score, cfg.min_score), options=options,
                    context_tokens=pick(answer.context_tokens, cfg.context_tokens))
