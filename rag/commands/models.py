"""`rag models download`: fetch models for machines without internet."""
from __future__ import annotations

import click

from .common import config, echo_json


@click.group()
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
    from ingest.embedder import DEFAULT_EMBEDDER

    from ..models import download

    cfg = config(ctx)
    wanted = [("model", model or cfg.model), ("adapter", adapter or cfg.adapter),
              ("embedder", embedder or cfg.embedder or DEFAULT_EMBEDDER)]
    fetched = download(wanted, kinds=set(only) or None, allow_pickle=cfg.allow_pickle,
                       remote_code=cfg.gen_trust_remote_code or cfg.trust_remote_code,
                       log=lambda s: click.echo(s, err=True))
    if as_json:
        echo_json(fetched)
    else:
        for name, path in fetched.items():
            click.echo(f"{name}: {path}")


