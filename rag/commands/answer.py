"""Answer commands: `rag ask` and `rag chat`."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from ..citations import OTHERS_HEADING, citation_parts, grounds_heading, other
from ..config import DTYPES, MODES
from ..factory import AnswerOptions, ModelOptions, build_answerer, pick
from .common import config, dim_log, echo_json
from .editions import edition_options, server_fields


def generation_options(f):
    """Options shared by `ask` and `chat`."""
    opts = [
        click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Index to retrieve from [config: index; default indexes/default]."),
        click.option("-k", "k", type=click.IntRange(1), help="Passages to retrieve before "
                     "packing [config: search.k; default 5]."),
        click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [default hybrid]."),
        click.option("--model", help="Generator: Hugging Face id or local path [config: "
                     "generate.model; env RAG_MODEL; default cyberagent/open-calm-3b; with "
                     "--adapter alone, the base model recorded in the adapter]."),
        click.option("--adapter", help="PEFT LoRA adapter (path or id) [config: "
                     "generate.adapter; env RAG_ADAPTER]."),
        click.option("--no-adapter", is_flag=True, help="Ignore the configured adapter."),
        click.option("--max-new-tokens", type=click.IntRange(1), help="Longest answer in "
                     "tokens [config: generate.max_new_tokens; default 256]."),
        click.option("--context-tokens", type=click.IntRange(64), help="Most tokens the "
                     "prompt may take: fewer, tighter passages for a faster first token on "
                     "a CPU [config: generate.context_tokens; env RAG_CONTEXT_TOKENS; "
                     "default: the model's window]."),
        click.option("--temperature", type=click.FloatRange(0), help="0 = greedy, "
                     "reproducible (default); above 0 samples."),
        click.option("--min-score", type=click.FloatRange(-1, 1), help="Abstain when the best "
                     "passage's dense (cosine) similarity to the question is below this: the "
                     "score `rag search --mode dense` shows, not the hybrid score (a rank "
                     "fusion, ~0.03) [config: generate.min_score; default: never]."),
        click.option("--device", help="cuda, cuda:1, mps or cpu (default: automatic)."),
        click.option("--dtype", type=click.Choice(DTYPES),
                     help="Weights dtype (auto: bf16 on GPUs that have it, fp16 on V100/MPS, "
                     "fp32 on CPU)."),
        click.option("--allow-pickle", is_flag=True, default=None, help="Allow .bin "
                     "(pickled) weights when a model has no safetensors."),
        click.option("--trust-remote-code", is_flag=True, default=None,
                     help="Run model code from the model's repository (off by default)."),
        click.option("--strict", is_flag=True, help="Refuse an adapter (or an export of "
                     "one) trained on another prompt layout than this version renders, "
                     "instead of warning."),
        click.option("--strict-grounding/--no-strict-grounding", default=None,
                     help="Replace an answer with a number, date or amount that none of the "
                     "passages has by the deciding clause, quoted (the answer is then shown "
                     "when finished, not streamed) [config: generate.strict_grounding; "
                     "default off: such an answer is marked 要確認]."),
    ]

    @functools.wraps(f)
    def collect(*args, index_dir, k, mode, model, adapter, no_adapter, max_new_tokens,
                context_tokens, temperature, min_score, device, dtype, allow_pickle,
                trust_remote_code, strict, strict_grounding, **kw):
        return f(*args, model_options=ModelOptions(model, adapter, no_adapter, device, dtype,
                                                   allow_pickle, trust_remote_code, strict),
                 answer_options=AnswerOptions(index_dir, k, mode, max_new_tokens, temperature,
                                              min_score, context_tokens, strict_grounding),
                 **kw)

    for opt in reversed(opts):
        collect = opt(collect)
    return collect


def _print_sources(answer) -> None:
    print_answer_notes(answer.to_json())


def print_answer_notes(answer: dict) -> None:
    """What `rag ask` prints under an answer, from its JSON form (a local answer's, or a
    server's): the grounds it rests on with their quoted sentences (根拠), 要確認 with
    the numbers no passage has and the deciding clause, then the other candidates
    (その他の候補). An answer that rests on no source lists every source as before."""
    sources, abstained = answer.get("sources") or [], bool(answer.get("abstained"))
    rests = [s for s in sources if s.get("rests_on")]
    if abstained or not rests:
        print_sources(sources, abstained)
    else:
        quotes: dict[str, list[str]] = {}
        for e in answer.get("evidence") or []:
            quotes.setdefault(e["passage_id"], []).append(e["quote"])
        print_sources(rests, False, quotes)
    grounding = answer.get("grounding") or {}
    if answer.get("needs_check") and grounding.get("unsupported"):
        numbers = "、".join(f"「{c['text']}」" for c in grounding["unsupported"])
        click.echo(click.style("要確認:", bold=True, fg="yellow")
                   + f" 回答の {numbers} は条文に見当たりません。")
        clause = grounding.get("clause")
        if clause:
            click.echo(f"    「{clause['quote']}」 {clause['title']}{clause['label']}")
    if rests and not abstained and len(rests) < len(sources):
        others = [other(s) for s in sources if not s.get("rests_on")]
        click.echo(click.style(OTHERS_HEADING + " " + "、".join(others), dim=True))


def print_sources(sources: list[dict], abstained: bool,
                  quotes: dict[str, list[str]] | None = None) -> None:
    """The grounds as `rag ask` lists them (rag.citations), from the JSON form of its
    sources; `quotes`: the evidence sentences of each source (by passage id), shown
    under it."""
    if not sources:
        return
    click.echo(click.style(grounds_heading(abstained), bold=True))
    for i, s in enumerate(sources, start=1):
        n, cite, via, where = citation_parts(s, s.get("n", i) if quotes is not None else i)
        click.echo(f"{n} {click.style(cite, fg='cyan')}{via}  {click.style(where, dim=True)}")
        for q in (quotes or {}).get(s.get("id"), []):
            click.echo(f"    「{q}」")


def _timing_line(timings: dict) -> str:
    t = timings
    parts = []
    if "retrieval_ms" in t:
        parts.append(f"retrieval {t['retrieval_ms']:.0f} ms")
    if t.get("model_load_s") is not None:
        parts.append(f"model load {t['model_load_s']:.1f} s")
    if t.get("first_token_ms") is not None:
        parts.append(f"first token {t['first_token_ms']:.0f} ms")
    if t.get("prefill_tokens_per_s"):
        parts.append(f"prompt {t['prompt_tokens']} tokens at {t['prefill_tokens_per_s']:.0f}/s")
    if t.get("decode_tokens_per_s"):
        parts.append(f"decoding {t['decode_tokens_per_s']:.1f} tokens/s")
    elif t.get("tokens_per_s"):
        parts.append(f"{t['tokens_per_s']:.1f} tokens/s")
    return "(" + ", ".join(parts) + ")"


def server_option(f):
    return click.option(
        "--server", metavar="URL", help="Send the question to a running `rag serve` "
        "(http://host:port) instead of loading the index and model here; its settings "
        "apply [config: server; env RAG_SERVER; --server '' answers locally]. "
        "RAG_API_TOKEN is sent as its bearer token.")(f)


def _ignored_with_server(ctx, names: list[str]) -> None:
    given = [n for n in names
             if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]
    if given:
        flags = ", ".join("--" + n.replace("_", "-").removesuffix("-dir") for n in given)
        dim_log(f"note: {flags} not used with --server (the server's settings apply)")


@click.command()
@click.argument("question")
@generation_options
@click.option("--no-retrieval", is_flag=True, help="Ask the model alone, without context "
              "(for comparison).")
@click.option("--show-context", is_flag=True, help="Print the prompt given to the model.")
@click.option("--json", "as_json", is_flag=True, help="Print {question, answer, abstained, "
              "sources: [{n, source, article, score, rests_on, ...}], evidence, "
              "citations_attached, grounding, needs_check, abstention, strict_replaced, "
              "timings} instead of streaming.")
@edition_options
@server_option
@click.pass_context
def ask(ctx, question, model_options, answer_options, no_retrieval, show_context, as_json,
        server, editions):
    """Answer QUESTION from the regulations, citing the articles used.

    The answer streams as it is generated, then its grounds are listed. When nothing
    relevant is retrieved (see --min-score) it says the regulations do not appear to
    cover the question and shows the nearest passages instead of guessing.
    """
    cfg = config(ctx)
    server = pick(server, cfg.server)
    if server:
        _ignored_with_server(ctx, ["index_dir", "k", "mode", "model", "adapter", "no_adapter",
                                   "temperature", "min_score", "device", "dtype",
                                   "allow_pickle", "trust_remote_code", "show_context",
                                   "context_tokens", "strict", "strict_grounding"])
        _ask_server(server, cfg.api_token, question, answer_options.max_new_tokens,
                    not no_retrieval, as_json, server_fields(editions))
        return
    from ..retrieval.editions import with_editions

    log = (lambda s: None) if as_json else dim_log
    answerer = with_editions(build_answerer(cfg, model_options, answer_options,
                                            retrieval=not no_retrieval, log=log), editions)
    stream = None if as_json else (lambda t: click.echo(t, nl=False))
    answer = answerer.ask(question, retrieval=not no_retrieval, on_text=stream)
    if as_json:
        obj = answer.to_json()
        obj["model"], obj["adapter"] = answerer.generator.name, answerer.generator.adapter
        if show_context:
            obj["prompt"] = answer.prompt
        echo_json(obj)
        return
    click.echo()
    if show_context and answer.prompt:
        click.echo(click.style("--- prompt ---\n" + answer.prompt + "\n--- end ---", dim=True),
                   err=True)
    _print_sources(answer)
    click.echo(click.style(_timing_line(answer.timings), dim=True), err=True)


def _ask_server(url: str, token: str | None, question: str, max_new_tokens: int | None,
                retrieval: bool, as_json: bool, editions: dict | None = None) -> None:
    """`rag ask --server`: the same output as answering here, from `rag serve`."""
    from ..client import Client

    if not question.strip():
        raise click.UsageError("the question is empty")
    client = Client(url, token=token)
    if as_json:
        echo_json(client.ask(question, max_new_tokens=max_new_tokens, retrieval=retrieval,
                             editions=editions))
        return
    answer = client.ask_stream(question, max_new_tokens=max_new_tokens, retrieval=retrieval,
                               on_text=lambda t: click.echo(t, nl=False), editions=editions)
    click.echo()
    print_answer_notes(answer)
    timings = dict(answer.get("timings") or {})
    click.echo(click.style(_timing_line(timings) + f" via {client.url}", dim=True), err=True)


@click.command()
@generation_options
@edition_options
@click.pass_context
def chat(ctx, model_options, answer_options, editions):
    """Talk with the model about the regulations; it is loaded once.

    \b
    Follow-up questions are searched together with the previous question. Under
    each answer: the sentences it rests on (根拠), numbers to check (要確認) and
    the other candidates. Commands: /sources (grounds of the last answer), /reset
    (forget the conversation), /quit (or Ctrl-D).
    """
    from ..prompt import Turn
    from ..errors import RagError

    from ..retrieval.editions import with_editions

    answerer = with_editions(build_answerer(config(ctx), model_options, answer_options,
                                            log=dim_log), editions)
    click.echo("規程について質問してください。/sources 根拠  /reset 会話を消去  /quit 終了")
    history: list[Turn] = []
    last = None
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo()
            break
        if not line:
            continue
        if line in ("/quit", "/exit", "/q"):
            break
        if line == "/reset":
            history, last = [], None
            click.echo("会話を消去しました。")
            continue
        if line == "/sources":
            if last:
                _print_sources(last)
            else:
                click.echo("まだ回答がありません。")
            continue
        if line.startswith("/"):
            click.echo("コマンド: /sources /reset /quit")
            continue
        try:
            last = answerer.ask(line, history, on_text=lambda t: click.echo(t, nl=False))
        except RagError as e:
            click.echo(click.style(f"Error: {e}", fg="red"), err=True)
            continue
        except KeyboardInterrupt:            # the model stops too; the conversation stays
            click.echo(click.style("\n(中断しました)", dim=True))
            continue
        click.echo()
        print_answer_notes(last.to_json())
        history.append(Turn(line, last.text))


