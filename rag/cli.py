"""The `rag` command line: the group, its commands, and the one place errors are reported.

Commands live in rag/commands/ (index: ingest, search, inspect; answer: ask, chat;
evaluation; models; slurm; serve: serve, feedback), registered below. Other packages add
theirs through the `rag.commands` entry-point group: each entry is a function
`register_commands(cli)` that adds its commands to the group (finetune/cli.py registers
`rag finetune` so), so rag never imports them. Every error that is the user's to fix
derives from RagError and is printed here as its message alone.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from importlib.metadata import entry_points

import click

from ingest.errors import RagError

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Library deprecation notices are for developers, not for someone asking about 除籍.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class RagGroup(click.Group):
    """Reports a RagError from any command below it as `Error: <message>`, exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RagError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=RagGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
      rag ask "半年で15単位しか取れませんでした。除籍されますか？"
    """
    ctx.ensure_object(dict)["config_path"] = config_path


COMMAND_GROUP = "rag.commands"     # entry points: register_commands(cli) functions


def _register() -> None:
    from .commands import answer, editions, evaluation, index, models, serve, slurm

    for command in (index.ingest, index.search, index.inspect, answer.ask, answer.chat,
                    evaluation.eval, evaluation.calibrate, slurm.slurm, models.models,
                    serve.serve, serve.feedback, editions.diff):
        cli.add_command(command)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(cli)


_register()


def main() -> None:
    if os.environ.get("SLURM_JOB_ID"):       # for measuring the batch scripts' overhead
        click.echo(f"rag-slurm: python entry {time.time():.3f}", err=True)
    cli(obj={})


if __name__ == "__main__":
    main()
    sys.exit(0)
