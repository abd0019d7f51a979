"""`rag eval` (run, merge): answers and retrieval scored on a question set."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import MODES
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
@click.option("--conditions", help="Comma-separated: none (model alone), bm25, dense, hybrid, "
              "oracle (only the gold articles as context: the generation-only upper bound) "
              "[default: none,hybrid].")
@click.option("--limit", type=click.IntRange(1), help="Answer only this many questions, "
              "spread evenly over the set (its mix of types kept): a quick run on a slow "
              "machine.")
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
def eval_run(ctx, questions, index_dir, out_dir, conditions, limit, retrieval_only, model,
             adapters, k, batch_size, max_new_tokens, context_tokens, shard, device, strict,
             overwrite, as_json):
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
        model=pick(model, cfg.generate.model), overwrite=overwrite, limit=limit)
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




@click.command()
@click.argument("questions", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The index the questions' gold articles are in [config: index].")
@click.option("-k", "k", type=click.IntRange(1), help="Passages retrieved [config: search.k].")
@click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [config: search.mode].")
@click.option("--max-false-abstention", type=click.FloatRange(0, 1), default=0.10,
              show_default=True, help="Largest share of answerable questions allowed to "
              "abstain.")
@click.option("--dry-run", is_flag=True, help="Report the figures; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def calibrate(ctx, questions, index_dir, k, mode, max_false_abstention, dry_run, as_json):
    """Calibrate the abstention decision on question sets and store it with the index.

    \b
    For every question (answerable: with gold; unanswerable: without) the retrieval
    signals are computed (no model runs); a logistic model is fitted on them and its
    threshold set so that at most --max-false-abstention of the answerable questions
    abstain. It is written to INDEX/abstention.json (kept by re-ingests), which
    rag ask, chat, eval and serve then use to decide, before generating, whether the
    regulations cover a question. Reported: cross-validated rates (5 folds x 8, on
    questions each model was not fitted on) and the in-sample ones.
    """
    from ..abstention import Vocabulary, calibrate as fit, cross_validate, rates, retrieval_signals
    from ..evaluation.questions import check_gold, load_questions

    cfg = config(ctx)
    k, mode = pick(k, cfg.search.k), pick(mode, cfg.search.mode)
    retriever = build_retriever(cfg, index_dir, mode)
    vocabulary = Vocabulary(retriever.passages)
    examples = []
    for path in questions:
        qs = load_questions(path)
        check_gold(qs, retriever.passages, path)
        hits = retriever.search_many([q.question for q in qs], k=k, mode=mode)
        examples += [(retrieval_signals(q.question, h, vocabulary, retriever.thesaurus),
                      not q.gold) for q, h in zip(qs, hits)]
    try:
        model = fit(examples, max_false=max_false_abstention)
        cv = cross_validate(examples, folds=5, repeats=8, max_false=max_false_abstention)
    except (ValueError, ZeroDivisionError) as e:
        raise click.ClickException(f"cannot calibrate: {e} (the sets need answerable and "
                                   "unanswerable questions, several of each)") from None
    report = {"index": str(retriever.index_dir), "embedder": retriever.info.name,
              "questions": [str(q) for q in questions], "k": k, "mode": mode,
              "max_false_abstention": max_false_abstention,
              "cross_validated": cv, "fitted_on_all": rates(model, examples)}
    if not dry_run:
        model.meta = dict(report)
        report["saved"] = str(model.save(retriever.index_dir))
    if as_json:
        echo_json(report)
        return
    fa = report["fitted_on_all"]
    click.echo(f"{fa['answerable']} answerable / {fa['unanswerable']} unanswerable questions "
               f"({mode}, k={k})")
    click.echo(f"cross-validated (5 folds x 8): abstains on {cv['abstention']:.0%} of "
               f"unanswerable, {cv['false_abstention']:.0%} of answerable")
    click.echo(f"fitted on all (in-sample): {fa['abstention']:.0%} / "
               f"{fa['false_abstention']:.0%}")
    click.echo(f"saved to {report['saved']}" if "saved" in report else "(dry run: nothing written)")
