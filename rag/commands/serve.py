"""`rag serve` (the HTTP API and the students' page) and `rag feedback export`."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..errors import RagError
from ..factory import pick
from .answer import generation_options
from .common import config, dim_log


@click.command()
@generation_options
@click.option("--host", help="Address to listen on [config: serve.host; default 127.0.0.1, "
              "this machine only; 0.0.0.0 opens it to the network: set RAG_API_TOKEN then].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port [config: serve.port; env "
              "RAG_PORT; default 8000].")
@click.option("--feedback-db", type=click.Path(dir_okay=False, path_type=Path),
              help="SQLite file for the students' ratings [config: serve.feedback_db; env "
              "RAG_FEEDBACK_DB; default feedback/feedback.sqlite3].")
@click.option("--batch-size", type=click.IntRange(1), help="Most questions generated "
              "together [config: serve.batch_size; default 16]; 1 = one at a time.")
@click.option("--batch-wait-ms", type=click.FloatRange(0), help="How long the model worker "
              "waits for more questions to join a batch [config: serve.batch_wait_ms; "
              "default 20].")
@click.option("--queue-size", type=click.IntRange(1), help="Questions that may wait for the "
              "model; more get 503 with Retry-After [config: serve.queue_size; default 64].")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True),
              help="A question's time limit in seconds, waiting included; 504 after it "
              "[config: serve.timeout_s; default 120].")
@click.option("--rate-per-minute", type=click.FloatRange(0), help="Requests per minute per "
              "client address on /api and /v1, after a burst of serve.rate_burst; 429 "
              "beyond; 0 = no limit [config: serve.rate_per_minute; default 30].")
@click.option("--forwarded-allow-ips", help="Comma-separated addresses or networks of reverse "
              "proxies whose X-Forwarded-For is believed (the rate limits then count the "
              "proxy's clients) [config: serve.forwarded_allow_ips; env "
              "RAG_FORWARDED_ALLOW_IPS; default none: the header is ignored].")
@click.option("--allowed-hosts", help="Comma-separated Host names answered (\".example.ac.jp\" "
              "with subdomains, \"*\" any); others get 400 [config: serve.allowed_hosts; "
              "default localhost, 127.0.0.1, ::1 when bound to loopback, else any].")
@click.option("--model-name", help="The model's name in /v1 answers and /v1/models [config: "
              "serve.model_name; default the Hugging Face id, or a local directory's name].")
@click.option("--no-retrieval", is_flag=True, help="Serve the model alone (no index): an "
              "OpenAI-compatible generation server for another `rag` (whose rag.toml then "
              "sets [generate] backend = \"openai\", api = \"chat\"); requests are answered "
              "without retrieval and only [serve] max_body_bytes bounds them.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Server log detail (stderr).")
@click.pass_context
def serve(ctx, model_options, answer_options, host, port, feedback_db, batch_size,
          batch_wait_ms, queue_size, timeout_s, rate_per_minute, forwarded_allow_ips,
          allowed_hosts, model_name, no_retrieval, log_level):
    """Answer students over HTTP: a Japanese question page at /, the JSON API and an
    OpenAI-compatible /v1/chat/completions (docs/serve-api.md).

    \b
    The retriever and the model load once; questions from many clients are queued to
    one model worker and generated together in batches. After `rag ingest` swaps in a
    new index generation the server answers from it without a restart (/readyz shows
    the generation in use). Ratings (👍/👎, comments) go to --feedback-db; `rag
    feedback export` turns them into a question set.

    \b
    When RAG_API_TOKEN is set, /api and /v1 need `Authorization: Bearer <token>`.
    Bound to loopback, only Host: localhost/127.0.0.1/::1 is answered (--allowed-hosts
    names others); behind a reverse proxy, --forwarded-allow-ips names it so the rate
    limits count its clients (X-Forwarded-For is ignored otherwise).
    """
    import uvicorn

    from ..serve.app import ServeSettings, create_app
    from ..serve.hosts import forwarded_allow_ips as check_ips
    from ..serve.loader import WorkerOptions, build_engine
    from ..serve.server import uvicorn_config

    cfg = config(ctx)
    # The server's own messages at --log-level; libraries only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("rag.serve").setLevel(log_level.upper())
    host, port = pick(host, cfg.serve.host), pick(port, cfg.serve.port)

    def listed(text):
        return None if text is None else [v.strip() for v in text.split(",") if v.strip()]
    settings = ServeSettings.from_config(cfg, timeout_s=timeout_s, host=host,
                                         rate_per_minute=rate_per_minute,
                                         feedback_db=str(feedback_db) if feedback_db else None,
                                         forwarded_allow_ips=listed(forwarded_allow_ips),
                                         allowed_hosts=listed(allowed_hosts),
                                         model_name=model_name)
    try:
        check_ips(settings.forwarded_allow_ips)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--forwarded-allow-ips") from None
    workers = WorkerOptions.from_config(cfg, batch_size=batch_size, batch_wait_ms=batch_wait_ms,
                                        queue_size=queue_size)
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        dim_log(f"warning: listening on {host} without RAG_API_TOKEN: anyone who reaches "
                "this address can use the API")
    failed: list[str] = []

    def stop(message: str) -> None:        # a bad index or model ends the command
        failed.append(message)
        server.should_exit = True

    app = create_app(settings, lambda: build_engine(cfg, model_options, answer_options, workers,
                                                    retrieval=not no_retrieval, log=dim_log),
                     on_load_error=stop)
    # The model thread re-takes the GIL after every torch operation; with the default
    # 5 ms switch interval it waits that long whenever a search or the event loop runs
    # Python meanwhile (a convoy that halved batched throughput).
    sys.setswitchinterval(0.0005)
    server = uvicorn.Server(uvicorn_config(app, settings, host=host, port=port,
                                           log_level=log_level,
                                           access_log=log_level == "debug"))
    dim_log(f"rag serve on http://{host}:{port}/ (models loading; /readyz says when ready)")
    server.run()
    if failed:
        raise RagError(failed[0])


@click.group()
def feedback():
    """The students' ratings collected by `rag serve`."""


@feedback.command("export")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file to write (a question set).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="Feedback database [config: serve.feedback_db; default "
              "feedback/feedback.sqlite3].")
@click.option("--rating", type=click.Choice(["up", "down"]), help="Only answers rated so "
              "(default: all).")
@click.pass_context
def export(ctx, out, db, rating):
    """Write the rated questions as a question set for `rag eval` and `rag finetune
    build-data`.

    \b
    Each line has the question set's fields (id, question, answer, must_include,
    gold, type) with answer, must_include and gold left empty for staff to fill, and
    what the student saw: model_answer, rating, comment, sources, suggested_gold (the
    articles the answer cited), index_generation, model, adapter, asked_at. Until
    `gold` is filled, `rag eval` scores a question as unanswerable (a question the
    regulations do not cover should keep an empty gold and type "unanswerable").
    """
    from ..serve.feedback import export as write

    db = db or Path(config(ctx).serve.feedback_db)
    n = write(db, out, rating)
    click.echo(f"wrote {n} question(s) to {out}; fill in answer, must_include and gold "
               "(see suggested_gold) before using it with rag eval")
