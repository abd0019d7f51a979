"""What every command module shares: the resolved config and JSON output."""
from __future__ import annotations

import json

import click

from ..config import Config, load_config


def config(ctx: click.Context) -> Config:
    """rag.toml (--config, $RAG_CONFIG or ./rag.toml) with RAG_* variables applied."""
    return load_config(ctx.find_root().obj.get("config_path"))


def echo_json(obj, indent: int | None = None) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=indent))


def dim_log(s: str) -> None:
    click.echo(click.style(s, dim=True), err=True)
