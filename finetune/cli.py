"""`rag finetune` (train, build-data, merge), added to the `rag` group through the
`rag.commands` entry point (pyproject.toml) that names `register_commands`."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from rag.commands.common import config, echo_json
from rag.factory import build_retriever


def register_commands(cli: click.Group) -> None:
    """The `rag.commands` entry point: `rag finetune` on the `rag` group."""
    cli.add_command(finetune)


@click.group()
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
    from .config import load_config
    from .train import Interrupted, train

    cfg = load_config(config_file, list(sets), model=model, data=data, out=out,
                      max_steps=max_steps, epochs=epochs, resume=resume)
    try:
        card = train(cfg, progress=sys.stderr.isatty(),
                     log=lambda s: click.echo(s, err=True))
    except Interrupted:
        sys.exit(75)                   # EX_TEMPFAIL: checkpointed, resume later
    if card is not None:               # rank 0
        if as_json:
            echo_json(card)
        else:
            losses = ", ".join(f"{k.replace('_', ' ')} {card[k]:.4f}" for k in (
                "first_train_loss", "final_train_loss", "final_eval_loss")
                if card.get(k) is not None)
            click.echo(f"adapter: {cfg.out} (steps {card['steps']}; {losses})")


@finetune.command("build-data")
@click.argument("questions", nargs=-1,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Index to retrieve context from [config: index].")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file of Alpaca rows (instruction/input/output).")
@click.option("-k", "k", type=click.IntRange(1), default=4, show_default=True,
              help="Passages per example (gold + distractors).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Order of passages, and the document split.")
@click.option("--negatives", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Share of answerable questions that also make an example whose context "
              "lacks the answer (target: abstain); 0 for none. A small model on few steps "
              "may learn to abstain always from 1.0 (docs/benchmarks.md): the index's "
              "calibrated abstention decides before generating anyway.")
@click.option("--plain-answers", is_flag=True, help="Targets are the reference answers as "
              "written, not quote + answer + citation (RAFT layout).")
@click.option("--synthesize", is_flag=True, help="Also generate a question and answer per "
              "article of the training documents with the [generate] backend (or --model), "
              "keeping those whose key phrase occurs in the article.")
@click.option("--model", help="Generator for --synthesize [config: generate.model].")
@click.option("--max-articles", type=click.IntRange(1), help="Articles to synthesize from "
              "(the first N of the training documents).")
@click.option("--synth-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the kept synthesized questions as a question set (and every "
              "generation, with why it was rejected, beside it: .drafts.jsonl).")
@click.option("--eval-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of documents (editions of one regulation together) held out for "
                   "evaluation: none of their articles or questions is trained on.")
@click.option("--exclude-docs-of", "exclude_sets", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A question set whose gold documents are never trained on (repeatable).")
@click.option("--eval-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the given questions that fell on the evaluation side (a question "
                   "set for `rag eval`), and the split beside it (.split.json).")
@click.pass_context
def finetune_build_data(ctx, questions, index_dir, out_file, k, seed, negatives,
                        plain_answers, synthesize, model, max_articles, synth_out,
                        eval_fraction, exclude_sets, eval_out):
    """Make training examples for answering from context (RAFT-style): question + the
    gold article among retrieved distractors (shuffled) -> the deciding clause quoted,
    the answer, the citation; and contexts without the answer -> the abstaining answer.

    \b
    QUESTIONS: question sets over the index (none needed with --synthesize).
    With --eval-fraction / --exclude-docs-of the index's documents are split, and only
    the training side's questions and articles make examples."""
    import json
    from collections import Counter

    from rag.evaluation.questions import check_gold, load_questions

    from .build_data import (build, document_split, question_documents, split_questions,
                             write, write_questions)

    if not questions and not synthesize:
        raise click.UsageError("give a question set, or --synthesize")
    cfg = config(ctx)
    retriever = build_retriever(cfg, index_dir, "hybrid")
    train_docs, eval_docs = document_split(
        retriever.passages, eval_fraction=eval_fraction, seed=seed,
        exclude=question_documents(exclude_sets))
    train_qs, held_qs = [], []
    for path in questions:
        qs = load_questions(path)
        check_gold(qs, retriever.passages, path)
        t, h = split_questions(qs, eval_docs, seed=seed, eval_fraction=eval_fraction)
        train_qs += t
        held_qs += h
    if eval_docs:
        click.echo(f"documents: {len(train_docs)} for training, {len(eval_docs)} held out; "
                   f"questions: {len(train_qs)} for training, {len(held_qs)} held out")
    if synthesize:
        from rag.factory import ModelOptions, build_generator

        from .synthesize import SynthReport
        from .synthesize import synthesize as synth

        generator = build_generator(cfg, ModelOptions(model=model, no_adapter=True),
                                    max_new_tokens=160, log=lambda s: click.echo(s, err=True))
        report = SynthReport()
        made = synth(generator, retriever.passages, sources=train_docs,
                     max_articles=max_articles, report=report,
                     log=lambda s: click.echo(s, err=True))
        click.echo(report.line())
        if synth_out:
            write_questions(made, synth_out)
            with synth_out.with_suffix(".drafts.jsonl").open("w", encoding="utf-8") as fh:
                for d in report.drafts:         # what was generated, and why it was not kept
                    fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        train_qs += made
    rows = build(retriever, questions=train_qs, k=k, seed=seed,
                 negatives=negatives, raft=not plain_answers,
                 sources=train_docs if eval_docs else None)
    write(rows, out_file)
    if eval_out:
        write_questions(held_qs, eval_out)
        eval_out.with_suffix(".split.json").write_text(json.dumps(
            {"seed": seed, "eval_fraction": eval_fraction, "train": sorted(train_docs),
             "eval": sorted(eval_docs)}, ensure_ascii=False, indent=1) + "\n", "utf-8")
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
    from .merge import merge

    path = merge(adapter, out_dir, model=model, dtype=dtype)
    click.echo(f"merged model: {path}")


