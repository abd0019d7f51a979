"""`rag eval`: one question set, answered per condition, scored, reported.

Conditions: `none` (the model alone), the retrieval modes `bm25`, `dense`,
`hybrid`, and `oracle` (only the gold articles as context, no abstention decision: the
generation-only upper bound; an unanswerable question has no gold, so no context, and
abstains). Each answer row also carries its evidence, grounding, attached citations
and citation precision/recall (rag/trust.py, rag.evaluation.metrics). Rows are appended to results.jsonl as they are produced, so an
interrupted run continues where it stopped; `--shard i/n` takes every n-th
question and `merge` combines shard directories into the report a single run
would have written. report.md, results.csv, summary.json and chart.png are
rewritten from results.jsonl at the end of every run.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import RagError

from . import metrics
from .questions import Question, check_gold, load_questions

from .report import CONDITIONS, write_files


class EvalError(RagError):
    pass


@dataclass
class EvalSettings:
    # None: the model alone and with hybrid retrieval; every retrieval mode when
    # retrieval_only.
    conditions: list[str] | None = None
    adapters: list[str | None] = field(default_factory=lambda: [None])
    k: int = 5
    batch_size: int = 8
    max_new_tokens: int = 256
    context_tokens: int | None = None  # the prompt budget (None: the model's window)
    retrieval_only: bool = False
    shard: tuple[int, int] = (0, 1)
    model: str | None = None          # the generator (recorded; None when retrieval only)
    overwrite: bool = False           # start over in an --out that holds another run
    limit: int | None = None          # this many questions, spread evenly over the set

    def __post_init__(self):
        if not self.conditions:
            self.conditions = (["bm25", "dense", "hybrid"] if self.retrieval_only
                               else ["none", "hybrid"])


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise EvalError(f"--shard must look like i/n (e.g. 0/4), not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise EvalError(f"--shard {text}: need 0 <= i < n")
    return i, n


def limit(questions: list[Question], n: int | None) -> list[Question]:
    """`n` questions spread evenly over the set (so its mix of types stays), in order;
    all of them when `n` is None or not smaller."""
    if n is None or n >= len(questions):
        return questions
    if n < 1:
        raise EvalError("--limit must be at least 1")
    return [questions[i * len(questions) // n] for i in range(n)]


def variant_names(adapters: list[str | None]) -> list[str]:
    """Short, unique names: "base", the adapter's folder name, or more of its path when
    two adapters end in the same folder (runA/final, runB/final)."""
    if len(set(adapters)) != len(adapters):
        raise EvalError("the same adapter is given twice")
    names = []
    for a in adapters:
        if not a:
            names.append("base")
            continue
        parts = Path(a.rstrip("/")).parts
        for n in range(1, len(parts) + 1):
            name = "/".join(parts[-n:])
            if sum(1 for b in adapters if b and "/".join(Path(b.rstrip("/")).parts[-n:]) == name) == 1:
                break
        names.append(name)
    return names


# --------------------------------------------------------------------------- running

def run(questions_path: Path, out: Path, settings: EvalSettings, *, retriever=None,
        make_answerer: Callable[[str | None], object] | None = None,
        progress: bool = False, log: Callable[[str], None] = lambda s: None) -> dict:
    """Evaluate, append rows to out/results.jsonl, and write the report files."""
    from tqdm.auto import tqdm

    questions = load_questions(questions_path)
    bad = [c for c in settings.conditions if c not in CONDITIONS]
    if bad:
        raise EvalError(f"unknown condition(s) {', '.join(bad)} ({', '.join(CONDITIONS)})")
    needs_index = settings.retrieval_only or any(c != "none" for c in settings.conditions)
    if needs_index and retriever is None:
        raise EvalError("these conditions need an index (--index)")
    if retriever is not None:
        check_gold(questions, retriever.passages, questions_path)
    if len(set(settings.conditions)) != len(settings.conditions):
        raise EvalError("a condition is given twice")
    variants = variant_names(settings.adapters)
    questions = limit(questions, settings.limit)
    i, n = settings.shard
    questions = [q for pos, q in enumerate(questions) if pos % n == i]
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    meta = _meta(questions_path, retriever, settings)
    if settings.overwrite:
        for name in ("eval.json", "results.jsonl", "results.csv", "summary.json", "report.md",
                     "chart.png"):
            (out / name).unlink(missing_ok=True)
    _check_same_run(out, meta)
    _drop_partial_line(results)
    done = {_key(r) for r in _read_rows(results)}
    started = time.perf_counter()
    # Each row says what produced it, so rows of different runs can never pass as one.
    ident = {k: meta.get(k) for k in ("model", "index_generation", "embedder")}
    with results.open("a", encoding="utf-8") as sink:
        if settings.retrieval_only:
            modes = [c for c in settings.conditions if c not in ("none", "oracle")] or [
                "bm25", "dense", "hybrid"]
            for mode in modes:
                todo = [q for q in questions if ("retrieval", mode, q.id) not in done]
                hits = retriever.search_many([q.question for q in todo], k=settings.k,
                                             mode=mode, editions=_editions(todo)) if todo else []
                for q, h in zip(todo, hits):
                    _write(sink, {**_retrieval_row(q, "retrieval", mode, h, settings.k), **ident})
                    done.add(("retrieval", mode, q.id))
        else:
            for adapter, variant in zip(settings.adapters, variants):
                answerer = None
                for condition in settings.conditions:
                    todo = [q for q in questions if (variant, condition, q.id) not in done]
                    if not todo:
                        continue
                    if answerer is None:
                        log(f"loading the generator for {variant}")
                        answerer = make_answerer(adapter)
                    bar = tqdm(total=len(todo), desc=f"{variant}/{condition}", unit="q",
                               disable=not progress)
                    for start in range(0, len(todo), settings.batch_size):
                        batch = todo[start:start + settings.batch_size]
                        for row in _answer_batch(answerer, retriever, batch, variant,
                                                 condition, settings):
                            _write(sink, {**row, **ident, "adapter": adapter})
                            done.add(_key(row))
                        sink.flush()
                        bar.update(len(batch))
                    bar.close()
    meta["seconds_this_run"] = round(time.perf_counter() - started, 2)
    return write_report(out, meta)


def _answer_batch(answerer, retriever, batch: list[Question], variant: str, condition: str,
                  settings: EvalSettings) -> list[dict]:
    started = time.perf_counter()
    retrieval = condition != "none"
    if condition == "oracle":
        hits = [oracle_hits(q, retriever) for q in batch]
    else:
        hits = (retriever.search_many([q.question for q in batch], k=settings.k,
                                      mode=condition, editions=_editions(batch))
                if retrieval else None)
    answers = answerer.answer_batch([q.question for q in batch], hits,
                                    judge=condition != "oracle")
    elapsed_ms = (time.perf_counter() - started) * 1000
    # The batch's prompts are read in one prefill: its rate is the batch's tokens over it.
    prefill_ms = next((a.timings["first_token_ms"] for a in answers
                       if a.timings.get("first_token_ms")), None)
    prefill_rate = (sum(a.timings.get("prompt_tokens", 0) for a in answers)
                    / (prefill_ms / 1000)) if prefill_ms else None
    rows = []
    for i, (q, a) in enumerate(zip(batch, answers)):
        if condition == "oracle":
            row = {**_base_row(q, variant, condition),
                   "retrieved": [h.passage.citation() for h in hits[i]]}
        elif retrieval:
            row = _retrieval_row(q, variant, condition, hits[i], settings.k)
        else:
            row = _base_row(q, variant, condition)
        prepared_abstained = not a.timings.get("prompt_tokens") and a.abstained
        row.update(
            question=q.question, reference=q.answer, answer=a.text,
            retrieval_abstained=prepared_abstained, abstained=a.abstained,
            sources=[s.to_json() for s in a.sources],
            generated_tokens=a.timings.get("generated_tokens", 0),
            latency_ms=round(elapsed_ms / len(batch), 1),
            **_speed(a.timings, prefill_rate))
        row.update(_answer_scores(q, a.text, retriever))
        row.update(_trust_fields(q, a, retriever))
        rows.append(row)
    return rows


def oracle_hits(q: Question, retriever) -> list:
    """The gold articles (every passage of each) as hits: the oracle's only context."""
    from ..retrieval.retriever import Hit

    passages = [p for g in q.gold for p in retriever.article(g.file, g.article)]
    return [Hit(rank, 1.0, p) for rank, p in enumerate(passages, start=1)]


def _trust_fields(q: Question, a, retriever) -> dict:
    """What rag/trust.py found in the answer (absent for an answerer without it), and
    the citations scored: the 第N条 the answer mentions and those attached after it,
    against the gold articles and against the packed context (metrics.citation_scores)."""
    from ..evidence import citation_note

    if a.grounding is None:
        return {}
    row = {"evidence": [e.to_json() for e in a.evidence],
           "citations_attached": a.citations_attached,
           "needs_check": float(a.needs_check), "strict_replaced": a.strict_replaced,
           "abstention_decision": a.abstention}
    if a.abstained:
        return row
    row["grounded"] = float(a.grounding.grounded)
    row["grounding_fired"] = float(not a.grounding.grounded)
    row["posthoc_cited"] = float(bool(a.citations_attached))
    titles = retriever.titles() if retriever is not None else {}
    # The model's own text: without the edition note and the citation note appended after it.
    note = getattr(a, "edition_note", "")
    text = a.text.removesuffix("\n" + note) if note else a.text
    text = text.removesuffix(citation_note(a.citations_attached))
    scores = metrics.citation_scores(
        text, q.gold, titles, [(c["source"], c["article"]) for c in a.citations_attached],
        [(s.passage.source, s.passage.article) for s in a.sources])
    row.update({k: v for k, v in scores.items() if v is not None})
    return row


def _editions(questions: list[Question]) -> list:
    """Each question's edition choice: its as_of / entry_year, else as of today."""
    from ..retrieval.editions import question_choice

    return [question_choice(q) for q in questions]


def _speed(t: dict, prefill_rate: float | None) -> dict:
    """Prompt size, the batch's prefill (its first token, and prompt tokens/s over the
    batch) and this answer's decode rate; an abstention generated nothing and has none."""
    if not t.get("prompt_tokens"):
        return {}
    row = {"prompt_tokens": t["prompt_tokens"]}
    if t.get("first_token_ms"):
        row["first_token_ms"] = round(t["first_token_ms"], 1)
        row["prefill_tokens_per_s"] = round(prefill_rate, 1)
    if t.get("decode_tokens_per_s"):
        row["decode_tokens_per_s"] = round(t["decode_tokens_per_s"], 2)
    return row


def _base_row(q: Question, variant: str, condition: str) -> dict:
    return {"id": q.id, "order": q.line, "type": q.type, "variant": variant,
            "condition": condition, "answerable": bool(q.gold)}


def _retrieval_row(q: Question, variant: str, condition: str, hits, k: int) -> dict:
    row = _base_row(q, variant, condition)
    passages = [h.passage for h in hits]
    row["retrieved"] = [p.citation() for p in passages]
    if q.gold:
        row.update(metrics.retrieval_scores(passages, q.gold, k))
    return row


def _answer_scores(q: Question, answer: str, retriever) -> dict:
    abstained = metrics.abstained(answer)
    if not q.gold:
        return {"abstention": float(abstained)}
    titles = retriever.titles() if retriever is not None else {}
    return {"must_include": float(metrics.must_include(answer, q.must_include)),
            "char_f1": metrics.char_f1(answer, q.answer),
            "rouge_l": metrics.rouge_l(answer, q.answer),
            "citation": float(metrics.citation_correct(answer, q.gold, titles)),
            "false_abstention": float(abstained)}


def _meta(questions_path: Path, retriever, settings: EvalSettings) -> dict:
    digest = hashlib.sha256(Path(questions_path).read_bytes()).hexdigest()[:16]
    meta = {"questions": str(questions_path), "questions_sha256": digest, "k": settings.k,
            "max_new_tokens": settings.max_new_tokens,
            "context_tokens": settings.context_tokens, "batch_size": settings.batch_size,
            "shard": list(settings.shard), "limit": settings.limit,
            "model": None if settings.retrieval_only else settings.model,
            "adapters": [] if settings.retrieval_only else list(settings.adapters)}
    if retriever is not None:
        m = retriever.index.manifest
        meta["index"] = {"path": str(retriever.index_dir), "updated": m.updated,
                         "embedder": m.embedder.name,
                         "embedder_revision": m.embedder.revision,
                         "passages": m.passages}
        meta["index_generation"] = retriever.index.path.name
        meta["embedder"] = m.embedder.name
        meta["embedder_revision"] = m.embedder.revision
        meta["bm25_weight"] = retriever.bm25_weight
    return meta


# What must not change between an interrupted run and its continuation, or between shards.
_SAME = ("questions_sha256", "k", "max_new_tokens", "context_tokens", "bm25_weight", "model",
         "adapters",
         "index_generation", "embedder", "embedder_revision")


def _check_same_run(out: Path, meta: dict) -> None:
    """A continued run must be the same evaluation; its settings live in eval.json."""
    path = out / "eval.json"
    if path.is_file():
        try:
            before = json.loads(path.read_text("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise EvalError(f"{path} is damaged ({e}); use another --out, or delete it to "
                            "start this run over") from None
        changed = [k for k in _SAME + ("shard",) if before.get(k) != meta.get(k)]
        if changed:
            raise EvalError(f"{out} holds a run with other settings ({', '.join(changed)}: "
                            f"{[before.get(k) for k in changed]} vs "
                            f"{[meta.get(k) for k in changed]}); use another --out, or "
                            "--overwrite to start it over")
    else:
        path.write_text(json.dumps({k: meta.get(k) for k in _SAME + ("shard",)}) + "\n",
                        "utf-8")


def _drop_partial_line(path: Path) -> None:
    """A kill can leave half a line; cut it so the next row starts on its own line."""
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[:data.rfind(b"\n") + 1])


def _key(row: dict) -> tuple[str, str, str]:
    return row["variant"], row["condition"], row["id"]


def _write(sink, row: dict) -> None:
    sink.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue                 # a line cut short by a kill: it is redone
    return rows


# --------------------------------------------------------------------------- merging

def merge(dirs: list[Path], out: Path) -> dict:
    rows: dict[tuple, dict] = {}
    metas = []
    for d in dirs:
        if not (d / "results.jsonl").is_file() or not (d / "summary.json").is_file():
            raise EvalError(f"{d}: no results.jsonl/summary.json (not a finished eval run)")
        for r in _read_rows(d / "results.jsonl"):
            rows.setdefault(_key(r), r)
        metas.append(json.loads((d / "summary.json").read_text("utf-8"))["settings"])
    for key in _SAME:
        if len({json.dumps(m.get(key)) for m in metas}) > 1:
            raise EvalError(f"the directories differ in {key}: they are not shards of one run")
    shards = {tuple(m.get("shard", (0, 1))) for m in metas}
    total = {n for _, n in shards}
    if len(total) != 1 or {i for i, _ in shards} != set(range(next(iter(total)))):
        raise EvalError(f"shards {sorted(shards)} do not cover the question set: every i/n "
                        "from 0 to n-1 is needed")
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("w", encoding="utf-8") as sink:
        for r in rows.values():
            _write(sink, r)
    meta = dict(metas[0])
    meta.pop("seconds_this_run", None)
    meta["shard"] = [0, 1]
    return write_report(out, meta)


def write_report(out: Path, meta: dict) -> dict:
    rows = _read_rows(out / "results.jsonl")
    if not rows:
        raise EvalError(f"{out}: no results to report")
    return write_files(out, rows, meta)
