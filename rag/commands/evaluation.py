"""`rag eval` (run, merge): answers and retrieval scored on a question set."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..factory import (AnswerOptions, ModelOptions, build_answerer, build_retriever,
                       configured_adapter, pick)
from .common import config, echo_json


class _EvalGroup(click.Group):
    """`rag eval QUESTIONS ...` runs an evaluation; `rag eval merge ...` merges shards."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_EvalGroup)
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
@click.option("--context-tokens", type=click.IntRange(64), help="Most tokens a prompt may "
              "take (see `rag ask --help`) [config: generate.context_tokens].")
@click.option("--shard", default="0/1", show_default=True, help="Evaluate every n-th question "
              "starting at i (i/n), e.g. for Slurm array jobs; combine with `rag eval merge`.")
@click.option("--device", help="Generator device (default: automatic).")
@click.option("--strict", is_flag=True, help="Refuse an adapter trained on another prompt "
              "layout than this version renders, instead of warning.")
@click.option("--overwrite", is_flag=True, help="Start over in an --out that holds a run "
              "with other settings (model, adapters, index, questions, ...) instead of "
              "refusing to mix them.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout.")
@click.pass_context
def eval_run(ctx, questions, index_dir, out_dir, conditions, retrieval_only, model, adapters,
             k, batch_size, max_new_tokens, context_tokens, shard, device, strict, overwrite, as_json):
    """Answer every question in each condition and write the report."""
    from ..evaluation.run import EvalSettings, parse_shard, run

    cfg = config(ctx)
    settings = EvalSettings(
        conditions=[c.strip() for c in (conditions or "").split(",") if c.strip()] or None,
        k=pick(k, cfg.search.k), batch_size=batch_size,
        max_new_tokens=pick(max_new_tokens, cfg.generate.max_new_tokens), retrieval_only=retrieval_only,
        context_tokens=pick(context_tokens, cfg.generate.context_tokens),
        shard=parse_shard(shard),
        adapters=[None if a in ("none", "base") else a for a in adapters] or [
            configured_adapter(cfg)],
        model=pick(model, cfg.generate.model), overwrite=overwrite)
    retriever = None
    if retrieval_only or any(c != "none" for c in settings.conditions):
        dense = any(c in ("dense", "hybrid") for c in settings.conditions) or retrieval_only
        retriever = build_retriever(cfg, index_dir, "hybrid" if dense else "bm25")

    def make_answerer(adapter: str | None):
        # Answers are greedy (Answerer.answer_batch), whatever [generate] temperature says.
        return build_answerer(
            cfg, ModelOptions(model, adapter, adapter is None, device, strict=strict),
            AnswerOptions(index_dir, settings.k, max_new_tokens=settings.max_new_tokens,
                          context_tokens=settings.context_tokens),
            retrieval=retriever is not None, retriever=retriever)

    log = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))
    summary = run(questions, out_dir, settings, retriever=retriever,
                  make_answerer=make_answerer, progress=sys.stderr.isatty(), log=log)
    _eval_output(summary, out_dir, as_json)


def _eval_output(summary: dict, out_dir: Path, as_json: bool) -> None:
    if as_json:
        echo_json(summary)
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
    from ..evaluation.run import merge

    summary = merge(list(dirs), out_dir)
    _eval_output(summary, out_dir, as_json)


