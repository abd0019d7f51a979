"""The `rag` command line."""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import click

from .config import MODES, ConfigError, load_config

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Library deprecation notices are for developers, not for someone asking about 除籍.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _config(ctx: click.Context):
    try:
        return load_config(ctx.obj.get("config_path"))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=None))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Settings file (default: $RAG_CONFIG, else ./rag.toml). "
                   "Flags override it; RAG_* environment variables sit in between.")
@click.version_option(package_name="gakusoku-rag")
@click.pass_context
def cli(ctx, config_path):
    """Answer questions from a department's regulations (学則・規程・細則・申合せ).

    \b
    Typical use:
      rag ingest corpus/                 build or update the index
      rag search "除籍になるのはどんな場合？"   find the articles that decide a question
    """
    ctx.ensure_object(dict)["config_path"] = config_path


# --------------------------------------------------------------------------- ingest

@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Index directory to build or update [config: index; env RAG_INDEX; "
                   "default indexes/default].")
@click.option("--embedder", help="Sentence-transformers model (Hugging Face id or local path). "
              "An existing index keeps the embedder it was built with unless this flag names "
              "another (then everything is re-embedded); a new index uses this, else "
              "RAG_EMBEDDER, else ingest.embedder of rag.toml (cl-nagoya/ruri-v3-30m).")
@click.option("--query-prefix", help="Prefix for questions (default: the model's own, "
              "e.g. 「検索クエリ: 」 for ruri-v3, 'query: ' for multilingual-e5).")
@click.option("--passage-prefix", help="Prefix for passages (default: the model's own).")
@click.option("--max-tokens", type=click.IntRange(16), help="Largest passage, in embedder "
              "tokens, title and headings included (default: the embedder's window).")
@click.option("--batch-size", type=click.IntRange(1), help="Passages per embedding batch.")
@click.option("--dense", type=click.Choice(["flat", "hnsw"]),
              help="FAISS index: exact inner product (flat) or HNSW for large corpora. An "
                   "existing index keeps its kind unless this flag names another (no "
                   "re-embedding needed); a new one uses ingest.dense of rag.toml (flat).")
@click.option("--device", help="Device for the embedder (cpu, cuda, mps; default: automatic).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--strict", is_flag=True, help="Fail (write nothing) if any file cannot be read.")
@click.option("--explain", is_flag=True, help="First show how each document is read (title, "
              "articles found, furniture dropped, warnings), as `rag inspect` does.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def ingest(ctx, paths, index_dir, embedder, query_prefix, passage_prefix, max_tokens,
           batch_size, dense, device, dry_run, strict, explain, as_json, quiet):
    """Build or update an index from regulation files.

    PATHS are files or directories (.txt/.md in UTF-8, Shift_JIS or EUC-JP, .html,
    .pdf, .docx); default: the index's own sources, else [ingest] paths of rag.toml
    (corpus/). Only changed documents are re-split and only changed passages
    re-embedded; the new index replaces the old one atomically. Files that cannot be
    read are reported by name and skipped (see --strict); .doc and .rtf are listed
    with how to convert them. A `.ragignore` in a directory excludes files (glob
    patterns, one a line; `drafts/` excludes a directory). Titles for documents whose
    pages do not name the regulation: [ingest.titles] in rag.toml.
    """
    from ingest import store
    from ingest.embedder import EmbedderError
    from ingest.pipeline import IngestError, IngestSettings
    from ingest.pipeline import ingest as run_ingest

    cfg = _config(ctx)
    index_dir = index_dir or Path(cfg.index)
    if not paths:
        try:
            paths = [Path(p) for p in store.read_manifest(index_dir).inputs]
        except store.IndexStoreError:
            paths = []
        paths = [p for p in paths if p.exists()] or [Path(p) for p in cfg.paths]
    settings = IngestSettings(
        embedder=embedder, default_embedder=cfg.embedder, query_prefix=query_prefix or cfg.query_prefix,
        passage_prefix=passage_prefix or cfg.passage_prefix,
        max_tokens=max_tokens or cfg.max_tokens, batch_size=batch_size or cfg.batch_size,
        dense=dense, default_dense=cfg.dense, device=device or cfg.device,
        trust_remote_code=cfg.trust_remote_code, titles=cfg.titles)
    if explain:
        _explain(paths, cfg.titles, as_json)
    progress = not quiet and sys.stderr.isatty()
    log = (lambda s: None) if (quiet or as_json) else (lambda s: click.echo(s, err=True))
    try:
        report = run_ingest(list(paths), index_dir, settings, strict=strict, dry_run=dry_run,
                            progress=progress, log=log)
    except (IngestError, EmbedderError, store.IndexStoreError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        _echo_json(report.to_dict())
        return
    for doc in report.documents:
        if doc.status == "unchanged":
            continue
        color = {"failed": "red", "removed": "yellow", "added": "green"}.get(doc.status)
        click.echo(click.style(doc.describe(), fg=color), err=doc.status == "failed")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    unchanged = sum(d.status == "unchanged" for d in report.documents)
    verb = "would index" if dry_run else ("indexed" if report.written else "up to date:")
    click.echo(f"{verb} {report.passages} passages from "
               f"{len(report.documents) - len(report.failures)} documents into {index_dir} "
               f"({unchanged} unchanged, {report.embedded} passages embedded, "
               f"{report.reused} reused, {report.seconds:.1f}s)")
    if report.failures:
        click.echo(click.style(f"{len(report.failures)} file(s) skipped; see above "
                               "(--strict makes this an error)", fg="red"), err=True)


def _explain(paths, titles: dict[str, str], as_json: bool) -> None:
    """`rag ingest --explain`: how each document under PATHS reads (to stderr with --json)."""
    from ingest.inspect import inspect_file, render
    from ingest.loaders import LoadError
    from ingest.pipeline import IngestError, declared_title, discover

    try:
        files, _ = discover(list(paths))
    except IngestError as e:
        raise click.ClickException(str(e)) from None
    for f in files:
        try:
            report = inspect_file(f.path, f.source, declared_title(titles, f.source))
        except LoadError:
            continue                   # ingest reports it with its reason
        for line in render(report, all_units=False):
            click.echo(line, err=as_json)


@cli.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--brief", is_flag=True, help="Summary only, without the list of articles.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file: title and "
              "where it came from, structure, articles (label, caption, page, first "
              "characters), share of the text inside articles, dropped lines, warnings.")
@click.pass_context
def inspect(ctx, files, brief, as_json):
    """Show how a document is read: title, articles found, page furniture dropped.

    \b
    For each FILE: the regulation's title and where it came from (the text, a
    ○ title line, metadata, [ingest.titles] of rag.toml, or the file name), each
    article split out (label, caption, page, first characters), the share of the
    text inside articles, the lines dropped as page furniture (page counters,
    running headers), and warnings when a document mentions many articles but few
    were split. Nothing is indexed and no model is loaded.
    """
    from ingest.inspect import inspect_file, render
    from ingest.loaders import LoadError
    from ingest.pipeline import declared_title

    cfg = _config(ctx)
    failed = False
    for f in files:
        try:
            report = inspect_file(f, f.name, declared_title(cfg.titles, f.resolve().as_posix()))
        except LoadError as e:
            click.echo(click.style(f"{f}: cannot be read: {e}", fg="red"), err=True)
            failed = True
            continue
        if as_json:
            click.echo(json.dumps(report, ensure_ascii=False))
        else:
            for line in render(report, all_units=not brief):
                click.echo(line)
    if failed:
        sys.exit(1)


# --------------------------------------------------------------------------- search

def _read_queries(path: Path) -> list[dict]:
    """One question a line, or JSONL objects with a `question` field (and maybe `id`)."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{path}: not UTF-8 text (byte {e.start}); save the "
                                   "questions as UTF-8") from None
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise click.ClickException(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(obj.get("question"), str) or not obj["question"].strip():
                raise click.ClickException(f"{path}:{n}: missing field 'question'")
            out.append({"query": obj["question"], **({"id": obj["id"]} if "id" in obj else {})})
        else:
            out.append({"query": line})
    if not out:
        raise click.ClickException(f"{path}: no questions in the file")
    return out


def _print_hits(query: str, hits, full: bool) -> None:
    click.echo(click.style(f"Q: {query}", bold=True))
    if not hits:
        click.echo("  (no matching passages)")
    for h in hits:
        p = h.passage
        page = f" p.{p.page}" if p.page else ""
        cite = " ".join(x for x in (p.title, p.label) if x)
        click.echo(f"[{h.rank}] {click.style(cite, fg='cyan')}  "
                   f"{click.style(p.source + page, dim=True)}  score {h.score:.4f}")
        if p.heading:
            click.echo(f"    {p.heading}")
        text = p.text if full or len(p.text) <= 240 else p.text[:240] + "…"
        for line in text.splitlines():
            click.echo(f"    {line}")
    click.echo()


@cli.command()
@click.argument("question", required=False)
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Index directory [config: index; env RAG_INDEX; default indexes/default].")
@click.option("-k", "k", type=click.IntRange(1), help="Passages to return [config: search.k; "
              "default 5].")
@click.option("--mode", type=click.Choice(MODES), help="hybrid (dense + BM25 fused by "
              "reciprocal rank; default), dense, or bm25 [config: search.mode].")
@click.option("--queries", "queries_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Run many questions in one process: a text file of one "
              "question a line, or JSONL with a 'question' (and optional 'id') field.")
@click.option("--embedder", help="Must match the index's embedder; by default the index's own "
              "is used [env RAG_EMBEDDER].")
@click.option("--device", help="Device for the embedder (cpu, cuda, mps).")
@click.option("--no-expand", is_flag=True, help="Search the question as typed, without adding "
              "the regulation terms for everyday words (学費 -> 授業料) from the thesaurus "
              "[config: search.thesaurus].")
@click.option("--full", is_flag=True, help="Print whole passages, not the first 240 characters.")
@click.option("--json", "as_json", is_flag=True, help="JSON: a list of {rank, score, source, "
              "article, heading, text, ...}; with --queries one object a line: "
              "{query, id, results}.")
@click.pass_context
def search(ctx, question, index_dir, k, mode, queries_file, embedder, device, no_expand, full,
           as_json):
    """Find the passages of the regulations that answer QUESTION."""
    if bool(question) == bool(queries_file):
        raise click.UsageError("give a QUESTION or --queries FILE (one of them)")
    cfg = _config(ctx)
    k = k or cfg.k
    mode = mode or cfg.mode
    queries = _read_queries(queries_file) if queries_file else [{"query": question}]
    # Only search checks an explicit embedder (flag or RAG_EMBEDDER) against the index's.
    retriever = _load_retriever(cfg, index_dir, mode,
                                embedder=embedder or os.environ.get("RAG_EMBEDDER"),
                                device=device, expand=not no_expand)
    results = retriever.search_many([q["query"] for q in queries], k=k, mode=mode)
    for q, hits in zip(queries, results):
        if as_json and queries_file:
            _echo_json({**q, "results": [h.to_json() for h in hits]})
        elif as_json:
            click.echo(json.dumps([h.to_json() for h in hits], ensure_ascii=False, indent=1))
        else:
            _print_hits(q["query"], hits, full)


# --------------------------------------------------------------------------- ask / chat

def _generation_options(f):
    """Options shared by `ask` and `chat`."""
    opts = [
        click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Index to retrieve from [config: index; default indexes/default]."),
        click.option("-k", "k", type=click.IntRange(1), help="Passages to retrieve before "
                     "packing [config: search.k; default 5]."),
        click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [default hybrid]."),
        click.option("--model", help="Generator: Hugging Face id or local path [config: "
                     "generate.model; env RAG_MODEL; default cyberagent/open-calm-3b; with "
                     "--adapter alone, the base model recorded in the adapter]."),
        click.option("--adapter", help="PEFT LoRA adapter (path or id) [config: "
                     "generate.adapter; env RAG_ADAPTER]."),
        click.option("--no-adapter", is_flag=True, help="Ignore the configured adapter."),
        click.option("--max-new-tokens", type=click.IntRange(1), help="Longest answer in "
                     "tokens [config: generate.max_new_tokens; default 256]."),
        click.option("--temperature", type=click.FloatRange(0), help="0 = greedy, "
                     "reproducible (default); above 0 samples."),
        click.option("--min-score", type=float, help="Abstain when the best passage's dense "
                     "similarity is below this [config: generate.min_score; default: never]."),
        click.option("--device", help="cuda, cuda:1, mps or cpu (default: automatic)."),
        click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
                     help="Weights dtype (auto: bf16 on GPUs that have it, fp16 on V100/MPS, "
                     "fp32 on CPU)."),
        click.option("--allow-pickle", is_flag=True, default=None, help="Allow .bin "
                     "(pickled) weights when a model has no safetensors."),
        click.option("--trust-remote-code", is_flag=True, default=None,
                     help="Run model code from the model's repository (off by default)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _load_generator(cfg, model=None, adapter=None, *, device=None, dtype=None,
                    allow_pickle=None, trust_remote_code=None, max_new_tokens=None,
                    log=lambda s: None):
    """The generator (+ adapter) for ask, chat and eval, flags over rag.toml. With an
    adapter and no model: the model the adapter was trained on."""
    from .generate import Generator, GeneratorError, base_model_for

    try:
        if model is None:
            model = base_model_for(adapter, cfg.model) if adapter else cfg.model
        log(f"loading {model}" + (f" + adapter {adapter}" if adapter else ""))
        generator = Generator(
            model, adapter=adapter, device=device or cfg.gen_device, dtype=dtype or cfg.dtype,
            trust_remote_code=cfg.gen_trust_remote_code if trust_remote_code is None
            else trust_remote_code,
            allow_pickle=cfg.allow_pickle if allow_pickle is None else allow_pickle)
    except GeneratorError as e:
        raise click.ClickException(str(e)) from None
    new_tokens = max_new_tokens or cfg.max_new_tokens
    if new_tokens >= generator.context_window // 2:
        raise click.ClickException(
            f"--max-new-tokens {new_tokens} leaves too little of {generator.name}'s "
            f"{generator.context_window}-token window for the question and its context")
    return generator


def _load_retriever(cfg, index_dir, mode=None, *, embedder=None, device=None, expand=True):
    """The index with the configured search settings, loaded for `mode`; every command
    that retrieves comes through here, so they all report a bad index, embedder or
    thesaurus the same way."""
    from ingest import store
    from ingest.embedder import EmbedderError

    from .retrieve import EmbedderMismatch, Retriever
    from .thesaurus import ThesaurusError

    try:
        retriever = Retriever(index_dir or Path(cfg.index),
                              embedder=embedder, device=device or cfg.device,
                              trust_remote_code=cfg.trust_remote_code,
                              thesaurus=cfg.thesaurus if expand else None,
                              bm25_weight=cfg.bm25_weight)
        retriever.warm(mode or cfg.mode)
    except (store.IndexStoreError, EmbedderMismatch, EmbedderError, ThesaurusError) as e:
        raise click.ClickException(str(e)) from None
    return retriever


def _answerer(cfg, index_dir, k, mode, model, adapter, no_adapter, max_new_tokens,
              temperature, min_score, device, dtype, allow_pickle, trust_remote_code,
              retrieval: bool, log):
    from .answer import Answerer

    if no_adapter:
        adapter = None
    elif adapter is None:
        adapter = _configured_adapter(cfg, log)
    retriever = _load_retriever(cfg, index_dir, mode) if retrieval else None
    generator = _load_generator(cfg, model, adapter, device=device, dtype=dtype,
                                allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                                max_new_tokens=max_new_tokens, log=log)
    return Answerer(generator, retriever, k=k or cfg.k, mode=mode or cfg.mode,
                    min_score=cfg.min_score if min_score is None else min_score,
                    max_new_tokens=max_new_tokens or cfg.max_new_tokens,
                    temperature=cfg.temperature if temperature is None else temperature)


def _configured_adapter(cfg, log) -> str | None:
    """The configured adapter when it is present: a local directory, or a Hub id that is
    in the local cache or fetchable. A path that does not exist (yet) is skipped."""
    if not cfg.adapter:
        return None
    if Path(cfg.adapter).expanduser().exists():
        return str(Path(cfg.adapter).expanduser())
    from .models import ModelError as GeneratorError, adapter_base_model
    try:
        adapter_base_model(cfg.adapter)
    except GeneratorError:
        log(f"configured adapter {cfg.adapter} not found; answering without it")
        return None
    return cfg.adapter


def _print_sources(answer) -> None:
    if not answer.sources:
        return
    click.echo(click.style("近い条文:" if answer.abstained else "根拠:", bold=True))
    for i, s in enumerate(answer.sources, start=1):
        p = s.passage
        cite = " ".join(x for x in (p.title, p.label) if x)
        page = f" p.{p.page}" if p.page else ""
        via = f"（{s.via}から参照）" if s.via else ""
        click.echo(f"[{i}] {click.style(cite, fg='cyan')}{via}  "
                   f"{click.style(p.source + page, dim=True)}")


def _timing_line(answer) -> str:
    t = answer.timings
    parts = []
    if "retrieval_ms" in t:
        parts.append(f"retrieval {t['retrieval_ms']:.0f} ms")
    parts.append(f"model load {t['model_load_s']:.1f} s")
    if t.get("first_token_ms") is not None:
        parts.append(f"first token {t['first_token_ms']:.0f} ms")
    if t.get("tokens_per_s"):
        parts.append(f"{t['tokens_per_s']:.1f} tokens/s")
    return "(" + ", ".join(parts) + ")"


@cli.command()
@click.argument("question")
@_generation_options
@click.option("--no-retrieval", is_flag=True, help="Ask the model alone, without context "
              "(for comparison).")
@click.option("--show-context", is_flag=True, help="Print the prompt given to the model.")
@click.option("--json", "as_json", is_flag=True, help="Print {question, answer, abstained, "
              "sources: [{n, source, article, score, ...}], timings} instead of streaming.")
@click.pass_context
def ask(ctx, question, index_dir, k, mode, model, adapter, no_adapter, max_new_tokens,
        temperature, min_score, device, dtype, allow_pickle, trust_remote_code, no_retrieval,
        show_context, as_json):
    """Answer QUESTION from the regulations, citing the articles used.

    The answer streams as it is generated, then its grounds are listed. When nothing
    relevant is retrieved (see --min-score) it says the regulations do not appear to
    cover the question and shows the nearest passages instead of guessing.
    """
    from .generate import GeneratorError

    cfg = _config(ctx)
    log = (lambda s: None) if as_json else (lambda s: click.echo(click.style(s, dim=True),
                                                                  err=True))
    answerer = _answerer(cfg, index_dir, k, mode, model, adapter, no_adapter, max_new_tokens,
                         temperature, min_score, device, dtype, allow_pickle,
                         trust_remote_code, not no_retrieval, log)
    stream = None if as_json else (lambda t: click.echo(t, nl=False))
    try:
        answer = answerer.ask(question, retrieval=not no_retrieval, on_text=stream)
    except (GeneratorError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        obj = answer.to_json()
        obj["model"], obj["adapter"] = answerer.generator.name, answerer.generator.adapter
        if show_context:
            obj["prompt"] = answer.prompt
        _echo_json(obj)
        return
    click.echo()
    if show_context and answer.prompt:
        click.echo(click.style("--- prompt ---\n" + answer.prompt + "\n--- end ---", dim=True),
                   err=True)
    _print_sources(answer)
    click.echo(click.style(_timing_line(answer), dim=True), err=True)


@cli.command()
@_generation_options
@click.pass_context
def chat(ctx, index_dir, k, mode, model, adapter, no_adapter, max_new_tokens, temperature,
         min_score, device, dtype, allow_pickle, trust_remote_code):
    """Talk with the model about the regulations; it is loaded once.

    \b
    Follow-up questions are searched together with the previous question.
    Commands: /sources (grounds of the last answer), /reset (forget the
    conversation), /quit (or Ctrl-D).
    """
    from .generate import GeneratorError
    from .prompt import Turn

    cfg = _config(ctx)
    log = lambda s: click.echo(click.style(s, dim=True), err=True)  # noqa: E731
    answerer = _answerer(cfg, index_dir, k, mode, model, adapter, no_adapter, max_new_tokens,
                         temperature, min_score, device, dtype, allow_pickle,
                         trust_remote_code, True, log)
    click.echo("規程について質問してください。/sources 根拠  /reset 会話を消去  /quit 終了")
    history: list[Turn] = []
    last = None
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo()
            break
        if not line:
            continue
        if line in ("/quit", "/exit", "/q"):
            break
        if line == "/reset":
            history, last = [], None
            click.echo("会話を消去しました。")
            continue
        if line == "/sources":
            if last:
                _print_sources(last)
            else:
                click.echo("まだ回答がありません。")
            continue
        if line.startswith("/"):
            click.echo("コマンド: /sources /reset /quit")
            continue
        try:
            last = answerer.ask(line, history, on_text=lambda t: click.echo(t, nl=False))
        except (GeneratorError, ValueError) as e:
            click.echo(click.style(f"Error: {e}", fg="red"), err=True)
            continue
        except KeyboardInterrupt:            # stop this answer, keep the conversation
            click.echo(click.style("\n(中断しました)", dim=True))
            continue
        click.echo()
        history.append(Turn(line, last.text))


# --------------------------------------------------------------------------- eval

class _EvalGroup(click.Group):
    """`rag eval QUESTIONS ...` runs an evaluation; `rag eval merge ...` merges shards."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_EvalGroup)
def eval():  # noqa: A001 - the command is called eval
    """Evaluate answers (or retrieval alone) on a question set.

    \b
    rag eval QUESTIONS.jsonl --index DIR --out DIR [options]   (see `rag eval run --help`)
    rag eval merge DIR... --out DIR                           combine --shard outputs
    """


@eval.command("run")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Index to retrieve from [config: index].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: results.jsonl/.csv, summary.json, report.md, chart.png. "
                   "Re-running with the same --out continues an interrupted run.")
@click.option("--conditions", help="Comma-separated: none (model alone), bm25, dense, hybrid "
              "[default: none,hybrid].")
@click.option("--retrieval-only", is_flag=True, help="Score retrieval alone (hit@1, hit@k, "
              "MRR, recall); no model is loaded. Default conditions: bm25,dense,hybrid.")
@click.option("--model", help="Generator [config: generate.model].")
@click.option("--adapter", "adapters", multiple=True, help="LoRA adapter; repeat to compare "
              "several in one run (each is a variant; 'none' = the base model).")
@click.option("-k", "k", type=click.IntRange(1), help="Passages retrieved [config: search.k].")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True,
              help="Questions generated together (left-padded, greedy).")
@click.option("--max-new-tokens", type=click.IntRange(1), help="Longest answer [config].")
@click.option("--shard", default="0/1", show_default=True, help="Evaluate every n-th question "
              "starting at i (i/n), e.g. for Slurm array jobs; combine with `rag eval merge`.")
@click.option("--device", help="Generator device (default: automatic).")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout.")
@click.pass_context
def eval_run(ctx, questions, index_dir, out_dir, conditions, retrieval_only, model, adapters,
             k, batch_size, max_new_tokens, shard, device, as_json):
    """Answer every question in each condition and write the report."""
    from .evaluate import EvalError, EvalSettings, parse_shard, run
    from .questions import QuestionSetError

    cfg = _config(ctx)
    try:
        settings = EvalSettings(
            conditions=[c.strip() for c in (conditions or "").split(",") if c.strip()] or None,
            k=k or cfg.k, batch_size=batch_size,
            max_new_tokens=max_new_tokens or cfg.max_new_tokens, retrieval_only=retrieval_only,
            shard=parse_shard(shard),
            adapters=[None if a in ("none", "base") else a for a in adapters] or [
                _configured_adapter(cfg, lambda s: None)])
    except EvalError as e:
        raise click.ClickException(str(e)) from None
    retriever = None
    if retrieval_only or any(c != "none" for c in settings.conditions):
        dense = any(c in ("dense", "hybrid") for c in settings.conditions) or retrieval_only
        retriever = _load_retriever(cfg, index_dir, "hybrid" if dense else "bm25")

    log = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))
    try:
        summary = run(questions, out_dir, settings, retriever=retriever,
                      make_answerer=lambda a: _eval_answerer(cfg, model, a, device, retriever,
                                                             settings),
                      progress=sys.stderr.isatty(), log=log)
    except (EvalError, QuestionSetError) as e:
        raise click.ClickException(str(e)) from None
    _eval_output(summary, out_dir, as_json)


def _eval_answerer(cfg, model, adapter, device, retriever, settings):
    from .answer import Answerer

    generator = _load_generator(cfg, model, adapter, device=device,
                                max_new_tokens=settings.max_new_tokens)
    return Answerer(generator, retriever, k=settings.k, min_score=cfg.min_score,
                    max_new_tokens=settings.max_new_tokens)


def _eval_output(summary: dict, out_dir: Path, as_json: bool) -> None:
    if as_json:
        _echo_json(summary)
        return
    for name, e in summary["metrics"].items():
        shown = {k: v for k, v in e.items() if isinstance(v, float)}
        click.echo(f"{name} (n={e['questions']}): "
                   + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
    click.echo(f"report: {out_dir / 'report.md'}")


@eval.command("merge")
@click.argument("dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the combined report goes.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout.")
def eval_merge(dirs, out_dir, as_json):
    """Combine the outputs of `rag eval --shard i/n` runs into one report."""
    from .evaluate import EvalError, merge

    try:
        summary = merge(list(dirs), out_dir)
    except EvalError as e:
        raise click.ClickException(str(e)) from None
    _eval_output(summary, out_dir, as_json)


# --------------------------------------------------------------------------- finetune

@cli.group()
def finetune():
    """Fine-tune a LoRA adapter (train), make training data from the corpus (build-data),
    merge an adapter into its base model (merge)."""


@finetune.command("train")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Settings file (see finetune/examples/*.toml).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one setting of the file (repeatable), e.g. --set lr=1e-4.")
@click.option("--model", help="Base model: Hugging Face id or local path.")
@click.option("--data", multiple=True, help="Training data: a dataset id or a JSON/JSONL/CSV "
              "file of Alpaca (instruction/input/output) or chat (messages) rows; repeatable.")
@click.option("--out", help="Output directory: adapter, tokenizer, run.json, metrics.jsonl.")
@click.option("--max-steps", type=click.IntRange(1), help="Optimizer steps (overrides epochs).")
@click.option("--epochs", type=float, help="Passes over the data.")
@click.option("--resume", is_flag=True, default=None,
              help="Continue from OUT/checkpoint at its step, with the same data order.")
@click.option("--json", "as_json", is_flag=True, help="Print run.json at the end.")
def finetune_train(config_file, sets, model, data, out, max_steps, epochs, resume, as_json):
    """Train a LoRA adapter. Under torchrun or srun (RANK/WORLD_SIZE set) it trains with
    DDP on every GPU: `torchrun --nproc_per_node 4 -m rag finetune train ...`."""
    from finetune.config import ConfigError, load_config
    from finetune.data import DataError
    from finetune.train import Interrupted, TrainError, train

    try:
        cfg = load_config(config_file, list(sets), model=model, data=data, out=out,
                          max_steps=max_steps, epochs=epochs, resume=resume)
        card = train(cfg, progress=sys.stderr.isatty(),
                     log=lambda s: click.echo(s, err=True))
    except (ConfigError, DataError, TrainError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot load model: {e}") from None
    except Interrupted:
        sys.exit(75)                   # EX_TEMPFAIL: checkpointed, resume later
    if card is not None:               # rank 0
        if as_json:
            _echo_json(card)
        else:
            losses = ", ".join(f"{k.replace('_', ' ')} {card[k]:.4f}" for k in (
                "first_train_loss", "final_train_loss", "final_eval_loss")
                if card.get(k) is not None)
            click.echo(f"adapter: {cfg.out} (steps {card['steps']}; {losses})")


@finetune.command("build-data")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Index to retrieve context from [config: index].")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file of Alpaca rows (instruction/input/output).")
@click.option("-k", "k", type=click.IntRange(1), default=4, show_default=True,
              help="Passages per example (gold + distractors).")
@click.option("--seed", type=int, default=0, show_default=True, help="Order of passages.")
@click.option("--no-negatives", is_flag=True, help="No examples whose context lacks the answer.")
@click.pass_context
def finetune_build_data(ctx, questions, index_dir, out_file, k, seed, no_negatives):
    """Make training examples for answering from context: question + retrieved
    passages (gold and distractors, shuffled) -> reference answer citing the article;
    and contexts without the answer -> the abstaining answer."""
    from collections import Counter

    from finetune.build_data import build, write

    from .questions import QuestionSetError

    cfg = _config(ctx)
    retriever = _load_retriever(cfg, index_dir, "hybrid")
    try:
        rows = build(retriever, questions, k=k, seed=seed, negatives=not no_negatives)
    except (QuestionSetError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    write(rows, out_file)
    counts = Counter(r["kind"] for r in rows)
    click.echo(f"{len(rows)} examples -> {out_file} ("
               + ", ".join(f"{n} {kind}" for kind, n in counts.items()) + ")")


@finetune.command("merge")
@click.argument("adapter", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the merged model (safetensors) and tokenizer.")
@click.option("--model", help="Base model (default: the one recorded in the adapter).")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp16",
              show_default=True, help="dtype of the merged weights.")
def finetune_merge(adapter, out_dir, model, dtype):
    """Merge ADAPTER into its base model, for serving without PEFT."""
    from finetune.merge import merge

    from .generate import GeneratorError
    try:
        path = merge(adapter, out_dir, model=model, dtype=dtype)
    except (GeneratorError, OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"merged model: {path}")


# --------------------------------------------------------------------------- slurm

@cli.group()
def slurm():
    """Run ingest, fine-tuning and evaluation as Slurm jobs (scripts/slurm/)."""


@slurm.command("submit")
@click.argument("kind", type=click.Choice(["finetune", "finetune-multi", "ingest", "eval"]))
@click.option("--partition", help="Slurm partition.")
@click.option("--gpus", type=click.IntRange(0), default=0, show_default=True,
              help="GPUs per node (finetune-multi) or per job.")
@click.option("--gpu-type", help="GPU type as the cluster names it (--gpus tesla:1).")
@click.option("--time", "time_limit", help="Time limit, e.g. 04:00:00.")
@click.option("--nodes", type=click.IntRange(1), help="Nodes (finetune-multi).")
@click.option("--ntasks", type=click.IntRange(1), help="Tasks, one torchrun each "
              "(finetune-multi; default one per node).")
@click.option("--cpus", type=click.IntRange(1), help="CPUs per task.")
@click.option("--mem", help="Memory per node, e.g. 32G.")
@click.option("--job-name", help="Job name (default rag-<kind>).")
@click.option("--container", help="Apptainer/Singularity image to run in (default: plain "
              "Python, the current interpreter).")
@click.option("--config", "ft_config", help="finetune: the training config file.")
@click.option("--out", help="finetune: adapter directory; eval: output directory.")
@click.option("--index", "index_dir", help="ingest/eval: index directory.")
@click.option("--questions", help="eval: question set (default corpus/questions.jsonl).")
@click.option("--shards", type=click.IntRange(1), default=2, show_default=True,
              help="eval: array tasks; a merge job runs after them.")
@click.option("--args", "extra", default="", help="Extra arguments for the rag command, "
              "e.g. --args '--set lr=1e-4' or --args '--retrieval-only'.")
@click.option("--paths", default="", help="ingest: documents to index.")
@click.option("--dry-run", is_flag=True, help="Show the rendered script(s); submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the submitted jobs as JSON.")
def slurm_submit(kind, partition, gpus, gpu_type, time_limit, nodes, ntasks, cpus, mem,
                 job_name, container, ft_config, out, index_dir, questions, shards, extra,
                 paths, dry_run, as_json):
    """Render the batch script for KIND with these options and submit it with sbatch;
    print the job id and its log. Settings become RAG_* exports in the script."""
    from .slurm import SlurmError, SubmitOptions, submit

    env = {}
    if kind.startswith("finetune"):
        env.update({k: v for k, v in (("RAG_FT_CONFIG", ft_config), ("RAG_FT_OUT", out),
                                      ("RAG_FT_ARGS", extra)) if v})
    elif kind == "ingest":
        env.update({k: v for k, v in (("RAG_INGEST_PATHS", paths), ("RAG_INDEX", index_dir),
                                      ("RAG_INGEST_ARGS", extra)) if v})
    else:
        args = extra + (f" --index {index_dir}" if index_dir else "")
        env["RAG_EVAL_SHARDS"] = str(shards)
        env.update({k: v for k, v in (("RAG_EVAL_QUESTIONS", questions),
                                      ("RAG_EVAL_OUT", out or f"eval/{time.strftime('%Y%m%d-%H%M%S')}"),
                                      ("RAG_EVAL_ARGS", args.strip())) if v})
    opts = SubmitOptions(partition=partition, gpus=gpus, gpu_type=gpu_type, time=time_limit,
                         nodes=nodes, ntasks=ntasks, cpus=cpus, mem=mem, job_name=job_name,
                         container=container, shards=shards, env=env)
    try:
        jobs = submit(kind, opts, dry_run=dry_run)
    except SlurmError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        _echo_json(jobs)
        return
    for job in jobs:
        if dry_run:
            click.echo(click.style(f"# --- {job['script']} ---", dim=True))
            click.echo(job["rendered"])
        else:
            click.echo(f"submitted {job['script']} as job {job['job_id']}; log: {job['log']}")


@slurm.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
def slurm_status(as_json):
    """Show this project's jobs (names starting with rag-) in the queue."""
    from .slurm import SlurmError, status

    try:
        rows = status()
    except SlurmError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        _echo_json(rows)
    elif not rows:
        click.echo("no rag jobs in the queue")
    else:
        for r in rows:
            click.echo(f"{r['job_id']:>10}  {r['name']:<20} {r['state']:<10} {r['elapsed']:>10} "
                       f"/ {r['limit']:<10} {r['reason']}")


# --------------------------------------------------------------------------- models

@cli.group()
def models():
    """Fetch models for offline use (cluster nodes often have no internet)."""


@models.command("download")
@click.option("--model", help="Generator to fetch [default: generate.model].")
@click.option("--adapter", help="Adapter to fetch [default: generate.adapter, if a Hub id].")
@click.option("--embedder", help="Embedder to fetch [default: ingest.embedder].")
@click.option("--only", type=click.Choice(["model", "adapter", "embedder"]), multiple=True,
              help="Fetch only these (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print {name: local path} as JSON.")
@click.pass_context
def models_download(ctx, model, adapter, embedder, only, as_json):
    """Download the configured generator, adapter and embedder into the Hugging Face
    cache (run where there is internet; the cache then works with HF_HUB_OFFLINE=1)."""
    from huggingface_hub import snapshot_download

    from ingest.embedder import DEFAULT_EMBEDDER

    from .models import adapter_base_model

    cfg = _config(ctx)
    wanted = [("model", model or cfg.model), ("adapter", adapter or cfg.adapter),
              ("embedder", embedder or cfg.embedder or DEFAULT_EMBEDDER)]
    # Weights as safetensors; pickled .bin only where allowed (OpenCALM ships only those);
    # chat templates; model code only when remote code is trusted.
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja",
                "*/*.json", "*/*.safetensors"]
    patterns += ["*.bin"] if cfg.allow_pickle else []
    patterns += ["*.py"] if cfg.gen_trust_remote_code or cfg.trust_remote_code else []
    fetched: dict[str, str] = {}
    while wanted:
        kind, name = wanted.pop(0)
        if not name or (only and kind not in only) or Path(name).exists() or name in fetched:
            continue
        click.echo(f"fetching {kind} {name} …", err=True)
        try:
            fetched[name] = snapshot_download(name, allow_patterns=patterns)
        except Exception as e:  # noqa: BLE001 - network, auth and missing-repo errors alike
            raise click.ClickException(f"cannot fetch {kind} {name!r}: {e}") from None
        if kind == "adapter":        # and the model it was trained on
            base = adapter_base_model(fetched[name])
            if base and not Path(base).exists():
                wanted.append(("model", base))
    if as_json:
        _echo_json(fetched)
    else:
        for name, path in fetched.items():
            click.echo(f"{name}: {path}")


def main() -> None:
    if os.environ.get("SLURM_JOB_ID"):       # for measuring the batch scripts' overhead
        click.echo(f"rag-slurm: python entry {time.time():.3f}", err=True)
    cli(obj={})


if __name__ == "__main__":
    main()
