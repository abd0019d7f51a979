"""`rag models download`: fetch models for machines without internet."""
from __future__ import annotations

import click

from .common import config, echo_json


@click.group()
def models():
    """Fetch models for offline use (download) and convert them for other engines (export)."""


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

    from ..generation.models import download

    cfg = config(ctx)
    wanted = [("model", model or cfg.generate.model), ("adapter", adapter or cfg.generate.adapter),
              ("embedder", embedder or cfg.ingest.embedder or DEFAULT_EMBEDDER)]
    fetched = download(wanted, kinds=set(only) or None, allow_pickle=cfg.generate.allow_pickle,
                       remote_code=cfg.generate.trust_remote_code or cfg.ingest.trust_remote_code,
                       log=lambda s: click.echo(s, err=True))
    if as_json:
        echo_json(fetched)
    else:
        for name, path in fetched.items():
            click.echo(f"{name}: {path}")


@models.command("export")
@click.argument("model")
@click.option("--to", "engine", type=click.Choice(["ct2"]), default="ct2", show_default=True,
              help="The engine to export for: CTranslate2.")
@click.option("--adapter", help="A LoRA adapter to merge into MODEL first.")
@click.option("--quantization", type=click.Choice(["int8", "int8_float16", "int8_bfloat16",
                                                   "float16", "bfloat16", "float32"]),
              default="int8", show_default=True,
              help="Weights: int8 for CPUs, int8_float16 or float16 for GPUs, float32 exact.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write; use it as `rag ask --model DIR`.")
@click.pass_context
def models_export(ctx, model, engine, adapter, quantization, out_dir):
    """Convert MODEL (Hugging Face id or local path; with --adapter, merged first) for
    CTranslate2, which answers several times faster on a CPU in int8. The tokenizer and
    a record of what was exported go beside the weights."""
    from ..generation.ct2 import export

    cfg = config(ctx)
    path = export(model, out_dir, quantization=quantization, adapter=adapter,
                  allow_pickle=cfg.generate.allow_pickle, trust_remote_code=cfg.generate.trust_remote_code,
                  log=lambda s: click.echo(s, err=True))
    click.echo(f"exported: {path} (use it as `rag ask --model {path}`)")
