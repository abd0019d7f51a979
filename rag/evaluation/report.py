"""The report of an evaluation: summary.json (metrics per variant and condition, per
question type), results.csv, report.md (tables, the questions where retrieval helped
or hurt) and chart.png, from the result rows `rag eval` writes."""
from __future__ import annotations

import csv
import json
from pathlib import Path

CONDITIONS = ("none", "bm25", "dense", "hybrid", "oracle")
RETRIEVAL_METRICS = ("hit@1", "hit@k", "mrr", "recall@k")
ANSWER_METRICS = ("must_include", "char_f1", "rouge_l", "citation", "abstention",
                  "false_abstention", "citation_precision", "citation_recall",
                  "context_precision", "context_recall", "grounded", "grounding_fired",
                  "posthoc_cited")
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
    "citation_precision": "share of the answer's citations (第N条 it mentions, and those "
                          "attached after it) that are gold articles; answers citing something",
    "citation_recall": "share of the gold articles the answer cites (mentioned or attached); "
                       "answered, answerable questions",
    "context_precision": "share of the answer's citations that are articles the prompt carried",
    "context_recall": "share of the gold articles in the prompt that the answer cites",
    "grounded": "every number, date, duration and amount of the answer is in a packed "
                "passage or the question; generated answers (abstentions not counted)",
    "grounding_fired": "1 - grounded: the answer is marked 要確認 (or, with strict "
                       "grounding, replaced by the quoted clause)",
    "posthoc_cited": "the model cited nothing and the system attached citations from the "
                     "evidence",
}


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
        for key in ("prompt_tokens", "first_token_ms", "prefill_tokens_per_s",
                    "decode_tokens_per_s"):
            vals = [r[key] for r in rs if r.get(key)]
            if vals:
                entry[f"{key}_mean"] = round(sum(vals) / len(vals), 1)
        out[name] = entry
    return out


def write_files(out: Path, rows: list[dict], meta: dict) -> dict:
    """summary.json, results.csv, report.md and chart.png from the result rows."""
    rows = sorted(rows, key=lambda r: (r["variant"], CONDITIONS.index(r["condition"]),
                                       r["order"]))
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
            *ANSWER_METRICS, "needs_check", "strict_replaced", "abstained", "question",
            "answer", "reference", "evidence", "citations_attached", "sources", "retrieved",
            "generated_tokens", "latency_ms", "prompt_tokens", "first_token_ms",
            "prefill_tokens_per_s", "decode_tokens_per_s"]
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            flat = dict(r)
            for key in ("sources", "retrieved", "citations_attached"):
                if key in flat:
                    flat[key] = " ".join(f"{x['source']}#{x['article']}" for x in flat[key])
            if "evidence" in flat:
                flat["evidence"] = " | ".join(f"{e['source']}#{e['article']} 「{e['quote']}」"
                                              for e in flat["evidence"])
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
    speed = [(name, e) for name, e in m.items() if "first_token_ms_mean" in e]
    if speed:
        lines += ["", "## Speed", "", "Means over the answers generated (abstentions generate "
                  "nothing). A batch's prompts are read in one prefill, its first token; "
                  "decoding is per answer (times the batch size: the batch's throughput).",
                  "", "| variant/condition | prompt tokens | first token ms | "
                  "prefill tokens/s | decode tokens/s |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {e.get('prompt_tokens_mean', '–')} | "
                  f"{e.get('first_token_ms_mean', '–')} | "
                  f"{e.get('prefill_tokens_per_s_mean', '–')} | "
                  f"{e.get('decode_tokens_per_s_mean', '–')} |" for name, e in speed]
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
