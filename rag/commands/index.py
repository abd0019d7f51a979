"""Index commands: `rag ingest`, `rag search`, `rag inspect`."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ingest.display import escape_controls

from ..config import DENSE_KINDS, MODES
from ..factory import build_retriever, pick
from .answer import server_option
from .common import config, echo_json
from .editions import edition_options, inspect_editions, server_fields


@click.command()
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
@click.option("--dense", type=click.Choice(DENSE_KINDS),
              help="FAISS index: exact inner product (flat) or HNSW for large corpora. An "
                   "existing index keeps its kind unless this flag names another (no "
                   "re-embedding needed); a new one uses ingest.dense of rag.toml (flat).")
@click.option("--device", help="Device for the embedder (cpu, cuda, mps; default: automatic).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--strict", is_flag=True, help="Fail (write nothing) if any file cannot be read.")
@click.option("--forget", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Drop a recorded input (a folder or file that is gone for good) and its "
                   "documents; repeatable.")
@click.option("--yes", is_flag=True, help="Go ahead even when more than half of the "
              "documents would be removed.")
@click.option("--explain", is_flag=True, help="First show how each document is read (title, "
              "articles found, furniture dropped, warnings), as `rag inspect` does.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def ingest(ctx, paths, index_dir, embedder, query_prefix, passage_prefix, max_tokens,
           batch_size, dense, device, dry_run, strict, forget, yes, explain, as_json, quiet):
    """Build or update an index from regulation files.

    PATHS are files or directories (.txt/.md in UTF-8, Shift_JIS or EUC-JP, .html,
    .pdf, .docx). The index records every path it was given: `rag ingest PATH` adds
    or refreshes PATH and keeps every other document; a bare `rag ingest` re-reads
    every recorded path (a new index: [ingest] paths of rag.toml, i.e. corpus/). A
    document is removed only when its file is gone from a folder that is read; a
    recorded path that is missing is an error (see --forget). Only changed documents
    are re-split and only changed passages re-embedded; the new index replaces the
    old one atomically. Files that cannot be
    read are reported by name and skipped (see --strict); .doc and .rtf are listed
    with how to convert them. A `.ragignore` in a directory excludes files (glob
    patterns, one a line; `drafts/` excludes a directory). Titles for documents whose
    pages do not name the regulation: [ingest.titles] in rag.toml.
    """
    from ingest.pipeline import IngestSettings
    from ingest.pipeline import ingest as run_ingest

    cfg = config(ctx)
    index_dir = index_dir or Path(cfg.index)
    settings = IngestSettings(
        embedder=embedder, default_embedder=cfg.ingest.embedder,
        query_prefix=pick(query_prefix, cfg.ingest.query_prefix),
        passage_prefix=pick(passage_prefix, cfg.ingest.passage_prefix),
        max_tokens=pick(max_tokens, cfg.ingest.max_tokens), batch_size=pick(batch_size, cfg.ingest.batch_size),
        dense=dense, default_dense=cfg.ingest.dense, device=pick(device, cfg.ingest.device),
        trust_remote_code=cfg.ingest.trust_remote_code, titles=cfg.ingest.titles,
        editions=cfg.ingest.editions,
        max_file_bytes=int(cfg.ingest.max_file_mb * 1_000_000) or None)
    if explain:
        _explain(paths or _recorded_inputs(index_dir) or [Path(p) for p in cfg.ingest.paths],
                 cfg.ingest.titles, as_json)
    from ingest.progress import write

    # A bar on a terminal; elsewhere (a Slurm .err file, a pipe) plain lines, but not
    # among --json output unless stderr is a terminal.
    progress = not quiet and (sys.stderr.isatty() or not as_json)
    log = (lambda s: None) if (quiet or as_json) else write    # above a bar, not into it
    report = run_ingest(list(paths), index_dir, settings, strict=strict, dry_run=dry_run,
                        progress=progress, forget=list(forget), yes=yes,
                        default_paths=[Path(p) for p in cfg.ingest.paths], log=log)
    if as_json:
        echo_json(report.to_dict())
        return
    for doc in report.documents:
        if doc.status == "unchanged":
            continue
        color = {"failed": "red", "removed": "yellow", "added": "green"}.get(doc.status)
        click.echo(click.style(doc.describe(), fg=color, dim=doc.status == "skipped"),
                   err=doc.status in ("failed", "skipped"))
    for note in report.notes:
        click.echo(escape_controls(f"note: {note}"), err=True)
    unchanged = sum(d.status == "unchanged" for d in report.documents)
    verb = "would index" if dry_run else ("indexed" if report.written else "up to date:")
    click.echo(f"{verb} {report.passages} passages from {report.indexed_documents} documents "
               f"into {index_dir} "
               f"({unchanged} unchanged, {report.embedded} passages "
               f"{'to embed' if dry_run else 'embedded'}, "
               f"{report.reused} reused, {report.seconds:.1f}s)")
    if report.failures:
        click.echo(click.style(f"{len(report.failures)} file(s) skipped; see above "
                               "(--strict makes this an error)", fg="red"), err=True)


def _recorded_inputs(index_dir: Path) -> list[Path]:
    from ingest import store
    try:
        return [Path(p) for p in store.read_manifest(index_dir).inputs if Path(p).exists()]
    except store.IndexStoreError:
        return []


def _explain(paths, titles: dict[str, str], as_json: bool) -> None:
    """`rag ingest --explain`: how each document under PATHS reads (to stderr with --json)."""
    from ingest.inspect import inspect_file, render
    from ingest.document import LoadError
    from ingest.pipeline import declared_title, discover

    files, _ = discover(list(paths))
    for f in files:
        try:
            report = inspect_file(f.path, f.source, declared_title(titles, f.source))
        except LoadError:
            continue                   # ingest reports it with its reason
        for line in render(report, all_units=False):
            click.echo(line, err=as_json)


@click.command()
@click.argument("files", nargs=-1,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--editions", "editions", is_flag=True, help="Instead of FILES: the index's "
              "regulations with several editions, each edition's period and where its date "
              "comes from, and each 経過措置 with its sentence and the rule read from it.")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --editions: the index [config: index].")
@click.option("--brief", is_flag=True, help="Summary only, without the list of articles.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file: title and "
              "where it came from, structure, articles (label, caption, page, first "
              "characters), share of the text inside articles, dropped lines, warnings.")
@click.pass_context
def inspect(ctx, files, editions, index_dir, brief, as_json):
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
    from ingest.document import LoadError
    from ingest.pipeline import declared_title

    if editions:
        inspect_editions(ctx, index_dir, as_json)
        return
    if not files:
        raise click.UsageError("give FILES to inspect, or --editions")
    cfg = config(ctx)
    failed = False
    for f in files:
        try:
            report = inspect_file(f, f.name, declared_title(cfg.ingest.titles, f.resolve().as_posix()))
        except LoadError as e:
            click.echo(click.style(escape_controls(f"{f}: cannot be read: {e}"), fg="red"),
                       err=True)
            failed = True
            continue
        if as_json:
            click.echo(json.dumps(report, ensure_ascii=False))
        else:
            for line in render(report, all_units=not brief):
                click.echo(line)
    if failed:
        sys.exit(1)


def _print_hits(query: str, hits: list[dict], full: bool) -> None:
    """One question's results as `rag search` prints them, from their JSON form (local
    hits' or a server's), cited as answers cite them (rag.citations)."""
    from ..citations import citation_parts

    click.echo(click.style(f"Q: {query}", bold=True))
    if not hits:
        click.echo("  (no matching passages)")
    for h in hits:
        n, cite, _, where = citation_parts(h, h["rank"])
        click.echo(f"{n} {click.style(cite, fg='cyan')}  {click.style(where, dim=True)}  "
                   f"score {h['score']:.4f}")
        if h.get("heading"):
            click.echo(f"    {h['heading']}")
        text = h.get("text") or ""
        text = text if full or len(text) <= 240 else text[:240] + "…"
        for line in text.splitlines():
            click.echo(f"    {line}")
    click.echo()


@click.command()
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
              "article, heading, text, ...} (score: the mode's, see above); with --queries "
              "one object a line: {query, id, results}.")
@edition_options
@server_option
@click.pass_context
def search(ctx, question, index_dir, k, mode, queries_file, embedder, device, no_expand, full,
           as_json, server, editions):
    """Find the passages of the regulations that answer QUESTION.

    The score shown is the mode's own: in hybrid mode (the default) the reciprocal
    rank fusion of the dense and BM25 rankings (small numbers such as 0.03, comparable
    only within one question), in dense mode the cosine similarity, in bm25 mode the
    BM25 score. `rag ask --min-score` compares the best passage's dense (cosine)
    similarity to the question, which only `--mode dense` shows as its score.
    """
    if bool(question) == bool(queries_file):
        raise click.UsageError("give a QUESTION or --queries FILE (one of them)")
    if question is not None and not question.strip():
        raise click.UsageError("the question is empty")
    cfg = config(ctx)
    from ..evaluation.questions import read_queries

    queries = read_queries(queries_file) if queries_file else [{"query": question}]
    server = pick(server, cfg.server)
    if server:
        from ..client import Client
        from .answer import _ignored_with_server

        _ignored_with_server(ctx, ["index_dir", "embedder", "device", "no_expand"])
        client = Client(server, token=cfg.api_token)
        # k and mode go only when given: otherwise the server's settings apply.
        results = [client.search(q["query"], k=k, mode=mode, **server_fields(editions))
                   for q in queries]
        _print_results(queries, results, as_json, bool(queries_file), full)
        return
    k, mode = pick(k, cfg.search.k), pick(mode, cfg.search.mode)
    # Only search checks an explicit embedder (flag or RAG_EMBEDDER) against the index's.
    retriever = build_retriever(cfg, index_dir, mode,
                                embedder=embedder or os.environ.get("RAG_EMBEDDER"),
                                device=device, expand=not no_expand)
    results = retriever.search_many([q["query"] for q in queries], k=k, mode=mode,
                                    editions=editions)
    _print_results(queries, [[h.to_json() for h in hits] for hits in results], as_json,
                   bool(queries_file), full)


def _print_results(queries: list[dict], results: list[list[dict]], as_json: bool,
                   many: bool, full: bool) -> None:
    for q, hits in zip(queries, results):
        if as_json and many:
            echo_json({**q, "results": hits})
        elif as_json:
            click.echo(json.dumps(hits, ensure_ascii=False, indent=1))
        else:
            _print_hits(q["query"], hits, full)


