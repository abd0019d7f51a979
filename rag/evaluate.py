"""`rag eval`: one question set, answered per condition, scored, reported.

Conditions: `none` (the model alone) and the retrieval modes `bm25`, `dense`,
`hybrid`. Rows are appended to results.jsonl as they are produced, so an
interrupted run continues where it stopped; `--shard i/n` takes every n-th
question and `merge` combines shard directories into the report a single run
would have written. report.md, results.csv, summary.json and chart.png are
rewritten from results.jsonl at the end of every run.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import RagError

from . import metrics
from .questions import Question, check_gold, load_questions

CONDITIONS = ("none", "bm25", "dense", "hybrid")
RETRIEVAL_METRICS = ("hit@1", "hit@k", "mrr", "recall@k")
ANSWER_METRICS = ("must_include", "char_f1", "rouge_l", "citation", "abstention",
                  "false_abstention")
METRIC_DOCS = {
    "hit@1": "the first retrieved passage is a gold article (answerable questions)",
    "hit@k": "a gold article is among the k retrieved passages",
    "mrr": "mean of 1/rank of the first gold article within k (0 when absent)",
    "recall@k": "share of a question's gold articles found within k (multi-article questions)",
    "must_include": "every key fact of the question appears in the answer (NFKC, ignoring "
                    "spaces and punctuation); answerable questions",
    "char_f1": "character-level F1 against the reference answer (NFKC, no spaces or "
               "punctuation); answerable questions",
    "rouge_l": "character-level ROUGE-L F against the reference; answerable questions",
    "citation": "the answer cites (第N条, optionally with the regulation's name) at least one "
                "gold article; answerable questions",
    "abstention": "the answer says the regulations do not cover it; unanswerable questions",
    "false_abstention": "the answer abstains although the regulations answer it; answerable "
                        "questions",
}


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
    retrieval_only: bool = False
    shard: tuple[int, int] = (0, 1)

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
        raise EvalError(f"unknown condition(s) {', '.join(bad)} (none, bm25, dense, hybrid)")
    needs_index = settings.retrieval_only or any(c != "none" for c in settings.conditions)
    if needs_index and retriever is None:
        raise EvalError("these conditions need an index (--index)")
    if retriever is not None:
        check_gold(questions, retriever.passages, questions_path)
    if len(set(settings.conditions)) != len(settings.conditions):
        raise EvalError("a condition is given twice")
    variants = variant_names(settings.adapters)
    i, n = settings.shard
    questions = [q for pos, q in enumerate(questions) if pos % n == i]
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    meta = _meta(questions_path, retriever, settings)
    _check_same_run(out, meta)
    _drop_partial_line(results)
    done = {_key(r) for r in _read_rows(results)}
    started = time.perf_counter()
    with results.open("a", encoding="utf-8") as sink:
        if settings.retrieval_only:
            modes = [c for c in settings.conditions if c != "none"] or ["bm25", "dense", "hybrid"]
            for mode in modes:
                todo = [q for q in questions if ("retrieval", mode, q.id) not in done]
                hits = retriever.search_many([q.question for q in todo], k=settings.k,
                                             mode=mode) if todo else []
                for q, h in zip(todo, hits):
                    _write(sink, _retrieval_row(q, "retrieval", mode, h, settings.k))
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
                            _write(sink, row)
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
    hits = (retriever.search_many([q.question for q in batch], k=settings.k, mode=condition)
            if retrieval else [None] * len(batch))
    prepared = [answerer.prepare(q.question, h, retrieval=retrieval)
                for q, h in zip(batch, hits)]
    prompts = [p for p, _, abstain in prepared if not abstain]
    generations = iter(answerer.generator.generate_batch(
        prompts, max_new_tokens=settings.max_new_tokens) if prompts else [])
    elapsed_ms = (time.perf_counter() - started) * 1000
    from .prompt import ABSTAIN_ANSWER
    rows = []
    for q, h, (_, sources, abstain) in zip(batch, hits, prepared):
        gen = None if abstain else next(generations)
        answer = ABSTAIN_ANSWER if abstain else gen.text.strip()
        row = _retrieval_row(q, variant, condition, h, settings.k) if retrieval else _base_row(
            q, variant, condition)
        row.update(
            question=q.question, reference=q.answer, answer=answer,
            retrieval_abstained=abstain,
            sources=[{"source": s.passage.source, "article": s.passage.article,
                      "via": s.via} for s in sources],
            generated_tokens=0 if gen is None else gen.new_tokens,
            latency_ms=round(elapsed_ms / len(batch), 1))
        row.update(_answer_scores(q, answer, retriever))
        rows.append(row)
    return rows


def _base_row(q: Question, variant: str, condition: str) -> dict:
    return {"id": q.id, "order": q.line, "type": q.type, "variant": variant,
            "condition": condition, "answerable": bool(q.gold)}


def _retrieval_row(q: Question, variant: str, condition: str, hits, k: int) -> dict:
    row = _base_row(q, variant, condition)
    passages = [h.passage for h in hits]
    row["retrieved"] = [{"source": p.source, "article": p.article} for p in passages]
    if q.gold:
        rank = metrics.first_gold_rank(passages[:k], q.gold)
        row.update({"hit@1": float(rank == 1), "hit@k": float(rank is not None),
                    "mrr": 1 / rank if rank else 0.0,
                    "recall@k": metrics.gold_recall(passages[:k], q.gold)})
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
            "max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size,
            "shard": list(settings.shard)}
    if retriever is not None:
        m = retriever.index.manifest
        meta["index"] = {"path": str(retriever.index_dir), "updated": m.updated,
                         "embedder": m.embedder.name,
                         "embedder_revision": m.embedder.revision,
                         "passages": m.passages}
        meta["bm25_weight"] = retriever.bm25_weight
    return meta


# What must not change between an interrupted run and its continuation, or between shards.
_SAME = ("questions_sha256", "k", "max_new_tokens", "bm25_weight")


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
                            f"{[meta.get(k) for k in changed]}); use another --out")
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


# --------------------------------------------------------------------------- reporting

def _mean(rows: list[dict], metric: str) -> float | None:
    vals = [r[metric] for r in rows if metric in r]
    return round(sum(vals) / len(vals), 4) if vals else None


def summarize(rows: list[dict]) -> dict:
    groups: dict[str, dict] = {}
    for r in rows:
        groups.setdefault(f"{r['variant']}/{r['condition']}", []).append(r)
    out = {}
    for name, rs in groups.items():
        entry = {"questions": len(rs)}
        for m in RETRIEVAL_METRICS + ANSWER_METRICS:
            v = _mean(rs, m)
            if v is not None:
                entry[m] = v
        by_type: dict[str, dict] = {}
        for t in sorted({r["type"] for r in rs}):
            trs = [r for r in rs if r["type"] == t]
            by_type[t] = {"questions": len(trs), **{
                m: v for m in RETRIEVAL_METRICS + ANSWER_METRICS
                if (v := _mean(trs, m)) is not None}}
        entry["by_type"] = by_type
        lat = [r["latency_ms"] for r in rs if "latency_ms" in r]
        if lat:
            entry["latency_ms_mean"] = round(sum(lat) / len(lat), 1)
            entry["generated_tokens_mean"] = round(
                sum(r["generated_tokens"] for r in rs) / len(rs), 1)
        out[name] = entry
    return out


def write_report(out: Path, meta: dict) -> dict:
    rows = sorted(_read_rows(out / "results.jsonl"),
                  key=lambda r: (r["variant"], CONDITIONS.index(r["condition"]), r["order"]))
    if not rows:
        raise EvalError(f"{out}: no results to report")
    summary = {"settings": meta, "metrics": summarize(rows),
               "metric_definitions": METRIC_DOCS}
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n",
                                      "utf-8")
    _write_csv(out / "results.csv", rows)
    (out / "report.md").write_text(_markdown(rows, summary), "utf-8")
    _chart(out / "chart.png", summary["metrics"])
    return summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = ["variant", "condition", "id", "type", "answerable", *RETRIEVAL_METRICS,
            *ANSWER_METRICS, "question", "answer", "reference", "sources", "retrieved",
            "generated_tokens", "latency_ms"]
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            flat = dict(r)
            for key in ("sources", "retrieved"):
                if key in flat:
                    flat[key] = " ".join(f"{x['source']}#{x['article']}" for x in flat[key])
            w.writerow(flat)


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _markdown(rows: list[dict], summary: dict) -> str:
    m = summary["metrics"]
    present = [x for x in RETRIEVAL_METRICS + ANSWER_METRICS
               if any(x in e for e in m.values())]
    lines = ["# Evaluation report", "",
             f"Questions: `{summary['settings'].get('questions', '?')}` "
             f"(sha256 {summary['settings'].get('questions_sha256', '?')}), "
             f"k = {summary['settings'].get('k')}"
             + (f", BM25 weight {summary['settings']['bm25_weight']} in hybrid fusion"
                if "bm25_weight" in summary["settings"] else "") + ".", ""]
    if "index" in summary["settings"]:
        ix = summary["settings"]["index"]
        lines += [f"Index: `{ix['path']}` ({ix['passages']} passages, embedder "
                  f"`{ix['embedder']}`).", ""]
    lines += ["## Summary", "", "| variant/condition | n | " + " | ".join(present) + " |",
              "|---|---|" + "---|" * len(present)]
    for name, e in m.items():
        lines.append(f"| {name} | {e['questions']} | "
                     + " | ".join(_fmt(e.get(x)) for x in present) + " |")
    lines += ["", "## By question type", ""]
    for name, e in m.items():
        lines += [f"### {name}", "", "| type | n | " + " | ".join(present) + " |",
                  "|---|---|" + "---|" * len(present)]
        for t, te in e["by_type"].items():
            lines.append(f"| {t} | {te['questions']} | "
                         + " | ".join(_fmt(te.get(x)) for x in present) + " |")
        lines.append("")
    lines += _changed_by_retrieval(rows)
    lines += ["## Metrics", ""] + [f"- **{k}**: {v}" for k, v in METRIC_DOCS.items()
                                   if k in present] + [""]
    return "\n".join(lines)


def _outcome(r: dict) -> float:
    """One number per answer for helped/hurt: correct facts, or correct abstention."""
    if not r["answerable"]:
        return r.get("abstention", 0.0)
    return r.get("must_include", 0.0) + r.get("citation", 0.0)


def _changed_by_retrieval(rows: list[dict]) -> list[str]:
    by_key = {(r["variant"], r["condition"], r["id"]): r for r in rows if "answer" in r}
    out = []
    for (variant, condition, qid), r in sorted(by_key.items(), key=lambda x: x[1]["order"]):
        if condition == "none" or (variant, "none", qid) not in by_key:
            continue
        base = by_key[(variant, "none", qid)]
        delta = _outcome(r) - _outcome(base)
        if delta:
            out.append((("helped" if delta > 0 else "hurt"), variant, condition, r, base))
    if not out:
        return []
    lines = ["## Where retrieval changed the outcome", ""]
    for verdict in ("helped", "hurt"):
        items = [x for x in out if x[0] == verdict]
        lines += [f"### Retrieval {verdict} ({len(items)})", ""]
        for _, variant, condition, r, base in items:
            cited = ", ".join(f"{s['source']} {s['article']}" for s in r.get("sources", []))
            lines += [f"**{r['id']}** ({r['type']}, {variant}/{condition}): {r['question']}", "",
                      f"- reference: {r['reference']}", f"- without retrieval: {base['answer']}",
                      f"- with {condition}: {r['answer']}", f"- context: {cited or '(none)'}", ""]
    return lines


def _chart(path: Path, m: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(m)
    metrics_shown = [x for x in RETRIEVAL_METRICS + ANSWER_METRICS
                     if any(x in e for e in m.values())]
    types = sorted({t for e in m.values() for t in e["by_type"]})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        axes[0].bar([i + j * width for i in range(len(metrics_shown))],
                    [m[name].get(x) or 0 for x in metrics_shown], width, label=name)
    axes[0].set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(metrics_shown))])
    axes[0].set_xticklabels(metrics_shown, rotation=30, ha="right")
    axes[0].set_ylim(0, 1)
    axes[0].set_title("metrics per condition")
    axes[0].legend(fontsize=8)
    key = "hit@k" if "hit@k" in metrics_shown and not any(
        "must_include" in e for e in m.values()) else "must_include"
    for j, name in enumerate(names):
        axes[1].bar([i + j * width for i in range(len(types))],
                    [m[name]["by_type"].get(t, {}).get(key) or 0 for t in types], width,
                    label=name)
    axes[1].set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(types))])
    axes[1].set_xticklabels(types, rotation=30, ha="right")
    axes[1].set_ylim(0, 1)
    axes[1].set_title(f"{key} per question type")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
