"""Resolved settings -> the objects that do the work: Retriever, Generator,
GenerationOptions, Answerer.

Every command that searches, answers, evaluates or serves builds them here (`rag ask`,
`rag chat`, `rag eval` and `rag serve` all get their Answerer from `build_answerer`), so
a bad index, embedder, thesaurus, model or adapter is reported the same way everywhere,
and a setting given on the command line (anything not None) wins over rag.toml, which
wins over the built-in default.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .generation.base import GenerationOptions, Generator
from .generation.models import ModelError
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
    strict_grounding: bool | None = None


def build_retriever(cfg: Config, index_dir: Path | None = None, mode: str | None = None, *,
                    embedder: str | None = None, device: str | None = None,
                    expand: bool = True, warm: bool = True):
    """The index with the configured search settings, loaded for `mode` (unless not
    `warm`: the server lends a reloaded index the embedder it already has)."""
    from .retrieval.retriever import Retriever

    retriever = Retriever(pick(index_dir, Path(cfg.index)), embedder=embedder,
                          device=pick(device, cfg.ingest.device),
                          trust_remote_code=cfg.ingest.trust_remote_code,
                          thesaurus=cfg.search.thesaurus if expand else None,
                          bm25_weight=cfg.search.bm25_weight,
                          bigram_weight=cfg.search.bigram_weight,
                          query_encoder=cfg.search.query_encoder)
    if warm:
        retriever.warm(pick(mode, cfg.search.mode))
    return retriever


def configured_adapter(cfg: Config, log: Log = lambda s: None) -> str | None:
    """The configured adapter when it is present: a local directory, or a Hub id that is
    in the local cache or fetchable. A path that does not exist (yet) is skipped."""
    from .generation.models import adapter_base_model

    if not cfg.generate.adapter:
        return None
    if Path(cfg.generate.adapter).expanduser().exists():
        return str(Path(cfg.generate.adapter).expanduser())
    try:
        adapter_base_model(cfg.generate.adapter)
    except ModelError:
        log(f"configured adapter {cfg.generate.adapter} not found; answering without it")
        return None
    return cfg.generate.adapter


def resolve_adapter(cfg: Config, opts: ModelOptions, log: Log = lambda s: None) -> str | None:
    if opts.no_adapter:
        return None
    return opts.adapter if opts.adapter is not None else configured_adapter(cfg, log)


def _openai_generator(cfg: Config, opts: ModelOptions, max_new_tokens: int,
                      log: Log) -> Generator:
    """Generation on an OpenAI-compatible server (rag/generation/openai_compat.py)."""
    from .generation.openai_compat import OpenAIGenerator

    if opts.adapter:
        raise ModelError("with [generate] backend = \"openai\" the server applies the adapter "
                         "(vLLM: --lora-modules NAME=PATH); give its served name as --model")
    if cfg.generate.adapter and not opts.no_adapter:
        log(f"configured adapter {cfg.generate.adapter} not applied here: the openai backend's server "
            "serves the model (and its adapter) named by [generate] model")
    model = opts.model or cfg.generate.model
    log(f"generating with {model} on {cfg.generate.base_url} (OpenAI-compatible, {cfg.generate.api})")
    generator = OpenAIGenerator(
        cfg.generate.base_url or "", model, api=cfg.generate.api, tokenizer=cfg.generate.tokenizer, api_key=cfg.generate.api_key,
        context_window=cfg.generate.context_window,
        trust_remote_code=pick(opts.trust_remote_code, cfg.generate.trust_remote_code))
    _check_room(generator, max_new_tokens)
    return generator


def build_generator(cfg: Config, opts: ModelOptions, *, max_new_tokens: int,
                    log: Log = lambda s: None) -> Generator:
    """The generator (+ adapter). With an adapter and no model: the model the adapter
    was trained on. `max_new_tokens` must leave room for a question and its context."""
    from .generation.ct2 import CT2Generator, is_export
    from .generation.hf import TransformersGenerator
    from .generation.models import base_model_for

    model = opts.model
    if cfg.generate.backend == "openai":
        return _openai_generator(cfg, opts, max_new_tokens, log)
    if cfg.generate.backend == "ctranslate2" or (cfg.generate.backend == "auto" and is_export(
            model or cfg.generate.model)):
        # An export carries its adapter merged in; a configured adapter does not apply.
        if opts.adapter:
            raise ModelError(f"{model or cfg.generate.model} is a CTranslate2 export: its adapter was "
                             "merged when it was exported (`rag models export --adapter`)")
        if cfg.generate.adapter and not opts.no_adapter:
            log(f"configured adapter {cfg.generate.adapter} not applied: a CTranslate2 export carries "
                "the adapter it was exported with")
        log(f"loading {model or cfg.generate.model} (CTranslate2)")
        generator = CT2Generator(model or cfg.generate.model, device=pick(opts.device, cfg.generate.device),
                                 threads=cfg.generate.threads)
        _check_layout(layout_mismatch(generator.record.get("trained_prompt"),
                                      generator.tokenizer), opts, log)
        _check_room(generator, max_new_tokens)
        return generator
    adapter = resolve_adapter(cfg, opts, log)
    if model is None:
        model = base_model_for(adapter, cfg.generate.model) if adapter else cfg.generate.model
    log(f"loading {model}" + (f" + adapter {adapter}" if adapter else ""))
    generator = TransformersGenerator(
        model, adapter=adapter, device=pick(opts.device, cfg.generate.device),
        dtype=pick(opts.dtype, cfg.generate.dtype),
        trust_remote_code=pick(opts.trust_remote_code, cfg.generate.trust_remote_code),
        allow_pickle=pick(opts.allow_pickle, cfg.generate.allow_pickle))
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


def generation_options(cfg: Config, answer: AnswerOptions) -> GenerationOptions:
    """How to decode: the flags, else [generate]."""
    return GenerationOptions(max_new_tokens=pick(answer.max_new_tokens, cfg.generate.max_new_tokens),
                             temperature=pick(answer.temperature, cfg.generate.temperature))


def build_answerer(cfg: Config, model: ModelOptions, answer: AnswerOptions, *,
                   retrieval: bool = True, retriever=None, log: Log = lambda s: None):
    """Retriever (unless answering without retrieval, or one is given: evaluation shares
    one between its variants) + generator -> Answerer. Without retrieval the Answerer
    has no retriever (the server lends it its live index's, per request)."""
    from .answer import Answerer
    from .trust import Trust

    options = generation_options(cfg, answer)
    mode = pick(answer.mode, cfg.search.mode)
    if retriever is None and retrieval:
        retriever = build_retriever(cfg, answer.index_dir, mode)
    generator = build_generator(cfg, model, max_new_tokens=options.max_new_tokens, log=log)
    # Evidence, citations, the numeric check and the index's calibrated abstention decision
    # (INDEX/abstention.json) on every answer (rag/trust.py).
    trust = Trust(strict_grounding=pick(answer.strict_grounding, cfg.generate.strict_grounding))
    from .retrieval.editions import note_finisher

    return Answerer(generator, retriever, k=pick(answer.k, cfg.search.k), mode=mode,
                    min_score=pick(answer.min_score, cfg.generate.min_score), options=options,
                    context_tokens=pick(answer.context_tokens, cfg.generate.context_tokens),
                    # the edition note last: it says which edition the checked answer rests on
                    finishers=[trust, note_finisher], precheck=trust.before)
