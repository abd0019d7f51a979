"""Editions on the command line: the --as-of / --entry-year / --all-editions options of
`rag search`, `rag ask` and `rag chat`, `rag diff` (what changed between two editions)
and `rag inspect --editions` (the index's editions, periods and 経過措置)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from .common import config, echo_json


def edition_options(f):
    """--as-of, --entry-year, --all-editions -> `editions` (an EditionChoice)."""
    opts = [
        click.option("--as-of", "as_of", metavar="YYYY-MM-DD", help="Answer by the editions "
                     "in force on this date (default: today)."),
        click.option("--entry-year", type=click.IntRange(1900, 2200), metavar="YYYY",
                     help="The student's year of entry: a 経過措置 that keeps earlier "
                     "cohorts under an older edition applies."),
        click.option("--all-editions", is_flag=True, help="Search every edition of a "
                     "regulation, not only the one that governs."),
    ]

    @functools.wraps(f)
    def collect(*args, as_of, entry_year, all_editions, **kw):
        from ..retrieval.editions import EditionChoiceError, parse_choice

        try:
            choice = parse_choice(as_of, entry_year, all_editions)
        except EditionChoiceError as e:
            raise click.BadParameter(str(e), param_hint="--as-of") from None
        return f(*args, editions=choice, **kw)

    for opt in reversed(opts):
        collect = opt(collect)
    return collect


def server_fields(choice) -> dict:
    """The request fields of an edition choice, for `--server` (only what was given)."""
    out = {}
    if choice is not None and choice.as_of:
        out["as_of"] = choice.as_of.isoformat()
    if choice is not None and choice.entry_year:
        out["entry_year"] = choice.entry_year
    if choice is not None and choice.all_editions:
        out["all_editions"] = True
    return out


def _table(ctx, index_dir):
    from ingest import store

    from ..retrieval.editions import load_table

    cfg = config(ctx)
    path = Path(index_dir or cfg.index)
    index = store.load_index(path)
    return index, load_table(index)


@click.command()
@click.argument("regulation")
@click.option("--from", "from_", metavar="EDITION", help="The older edition: its source "
              "path, its effective date (YYYY-MM-DD) or year [default: the one before --to].")
@click.option("--to", metavar="EDITION", help="The newer edition [default: the newest].")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Index directory [config: index].")
@click.option("--json", "as_json", is_flag=True, help="Print {regulation, from, to, added, "
              "removed, changed, unchanged} as JSON.")
@click.pass_context
def diff(ctx, regulation, from_, to, index_dir, as_json):
    """List the articles added, removed and changed between two editions of REGULATION.

    REGULATION is the regulation's name (as `rag inspect --editions` lists it, or the end
    of it: 学則) or one edition's source path. Articles are compared as ingest compares
    a changed document: by article (and 附則 scope), text normalised. An article outside
    an excerpt's pages is not "removed": only what both editions cover is compared, and
    the rest is counted as not covered.
    """
    from ingest.editions import diff_editions

    index, table = _table(ctx, index_dir)
    try:
        result = diff_editions(table, index.passages, regulation, from_, to)
    except LookupError as e:
        raise click.UsageError(str(e)) from None
    if as_json:
        echo_json(result, indent=1)
        return
    a, b = result["from"], result["to"]
    click.echo(click.style(f"{result['regulation']}: {a['source']} ({a['effective_from'] or '?'})"
                           f" → {b['source']} ({b['effective_from'] or '?'})", bold=True))
    for kind, color in (("added", "green"), ("removed", "red"), ("changed", "yellow")):
        for item in result[kind]:
            click.echo(click.style(f"  {kind:8} {item['article']}", fg=color)
                       + (f"（{item['caption']}）" if item.get("caption") else ""))
            for side in ("before", "after"):
                if item.get(side):
                    click.echo(click.style(f"      {side}: {item[side][:120]}", dim=True))
    click.echo(f"{len(result['added'])} added, {len(result['removed'])} removed, "
               f"{len(result['changed'])} changed, {len(result['unchanged'])} unchanged; "
               f"{len(result['not_covered'])} outside one edition's pages (not compared)")


def inspect_editions(ctx, index_dir, as_json: bool) -> None:
    """`rag inspect --editions`: every regulation with more than one edition, each edition's
    period and where its date comes from, and every 経過措置 with its sentence."""
    _, table = _table(ctx, index_dir)
    groups = table.groups()
    if as_json:
        click.echo(json.dumps({name: [e.to_dict() for e in eds] for name, eds in groups.items()},
                              ensure_ascii=False, indent=1))
        return
    if not groups:
        click.echo("no regulation has more than one edition in this index")
    for name, editions in groups.items():
        click.echo(click.style(name, bold=True))
        for e in editions:
            period = f"{e.effective_from or '?'} – {e.effective_to or ''}"
            where = e.date_source or "no date: give effective_from in [ingest.editions]"
            click.echo(f"  {e.source}  {period}  (date: {where}"
                       + (f": {e.date_sentence}" if e.date_sentence else "")
                       + (f"; {e.note}" if e.note else "") + ")")
            for t in e.transitional:
                click.echo(f"    経過措置 [{t.applies}] {t.describe()}")
                click.echo(click.style(f"      「{t.sentence}」 ({t.origin}"
                                       + (f", {t.scope}" if t.scope else "") + ")", dim=True))
