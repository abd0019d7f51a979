"""Training data: records from files or the Hub -> (prompt, completion) -> tokens.

Records are Alpaca (`instruction`, optional `input`, `output`) or chat (`messages`:
[{role, content}, ...], the last one the assistant's). Prompts come from the shared
prompt module, so an adapter sees at inference the layout it was trained on. The
loss falls on the completion only, which ends with the end-of-text token so the
model learns to stop. Tokenised data is cached on disk, keyed by everything that
changes it, so a rerun or every rank of a multi-GPU launch reuses it.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import RagError
from rag.prompt import PROMPT_VERSION, render_instruction

IGNORE = -100


class DataError(RagError):
    pass


@dataclass
class Example:
    prompt: str
    completion: str


def load_records(source: str) -> list[dict]:
    """Rows of a local .json/.jsonl/.csv file, or of a Hugging Face dataset id."""
    path = Path(source)
    if path.is_file():
        try:
            if path.suffix == ".jsonl":
                rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()
                        if line.strip()]
            elif path.suffix == ".json":
                rows = json.loads(path.read_text("utf-8"))
                rows = rows.get("data", rows) if isinstance(rows, dict) else rows
            elif path.suffix == ".csv":
                with path.open(encoding="utf-8", newline="") as fh:
                    rows = list(csv.DictReader(fh))
            else:
                raise DataError(f"{source}: unsupported file type (json, jsonl or csv)")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{source}: cannot read ({e})") from None
    elif path.suffix in (".json", ".jsonl", ".csv") or source.startswith((".", "/")):
        raise DataError(f"{source}: no such file")
    else:
        rows = _hub_dataset(source)
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{source}: empty dataset")
    return rows


def _hub_dataset(name: str) -> list[dict]:
    try:
        import datasets
        datasets.disable_progress_bars()
        return list(datasets.load_dataset(name, split="train"))
    except Exception as e:  # noqa: BLE001 - missing repo, offline, auth: one clear message
        raise DataError(f"{name}: unknown or unreachable dataset ({str(e).splitlines()[0]}); "
                        "give a local JSON/JSONL/CSV file, or fetch it where there is "
                        "internet") from None


def to_example(row: dict, tokenizer, where: str) -> Example:
    """One record as (prompt, completion), or a DataError naming the row and field."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object")
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
                for m in msgs):
            raise DataError(f"{where}: field 'messages' must be a list of "
                            "{role, content} objects")
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            raise DataError(f"{where}: field 'messages' must end with an assistant message")
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False,
                                                   add_generation_prompt=True)
        else:
            system = " ".join(m["content"] for m in msgs[:-1] if m.get("role") == "system")
            turns = [m for m in msgs[:-1] if m.get("role") in ("user", "assistant")]
            if not turns:
                raise DataError(f"{where}: field 'messages' has no user message")
            dialogue = "\n".join(("質問: " if m["role"] == "user" else "回答: ") + m["content"]
                                 for m in turns)
            prompt = render_instruction(tokenizer, system or dialogue,
                                        dialogue if system else None)
        return Example(prompt, msgs[-1]["content"])
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise DataError(f"{where}: field {key!r} is missing or empty")
    if row.get("input") is not None and not isinstance(row["input"], str):
        raise DataError(f"{where}: field 'input' must be text")
    return Example(render_instruction(tokenizer, row["instruction"], row.get("input") or None),
                   row["output"])


def tokenize(example: Example, tokenizer, max_length: int) -> dict | None:
    """input_ids and labels (prompt masked with -100); None when too long."""
    prompt = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    completion = tokenizer(example.completion.strip(), add_special_tokens=False)["input_ids"]
    ids = prompt + completion + [tokenizer.eos_token_id]
    if len(ids) > max_length:
        return None
    return {"input_ids": ids, "labels": [IGNORE] * len(prompt) + ids[len(prompt):]}


@dataclass
class Prepared:
    train: list[dict]
    eval: list[dict]
    counts: dict            # per source: rows, train, eval, dropped_too_long (+ kinds)


def prepare(sources: list[str], tokenizer, max_length: int, eval_fraction: float,
            max_eval: int, seed: int, cache_dir: Path | None = None) -> Prepared:
    """Load, validate, split and tokenise every source (cached by content)."""
    key = _cache_key(sources, tokenizer, max_length, eval_fraction, max_eval, seed)
    cache = cache_dir / f"{key}.json" if cache_dir else None
    if cache and cache.is_file():
        data = json.loads(cache.read_text("utf-8"))
        return Prepared(data["train"], data["eval"], data["counts"])
    train, evals, counts = [], [], {}
    for source in sources:
        rows = load_records(source)
        examples = [to_example(r, tokenizer, f"{source} row {i}") for i, r in enumerate(rows)]
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        n_eval = min(max_eval, int(len(examples) * eval_fraction))
        if eval_fraction > 0 and len(examples) >= 10:
            n_eval = max(1, n_eval)
        kept = {"train": 0, "eval": 0, "dropped_too_long": 0}
        kinds: dict[str, dict[str, int]] = {}       # build-data's row kinds, kept and dropped
        for rank, i in enumerate(order):
            tok = tokenize(examples[i], tokenizer, max_length)
            part = "dropped_too_long" if tok is None else ("eval" if rank < n_eval else "train")
            kept[part] += 1
            if tok is not None:
                (evals if part == "eval" else train).append(tok)
            if isinstance(rows[i].get("kind"), str):
                k = kinds.setdefault(rows[i]["kind"], {"rows": 0, "dropped_too_long": 0})
                k["rows"] += 1
                k["dropped_too_long"] += tok is None
        counts[source] = {"rows": len(rows), **kept, **({"kinds": kinds} if kinds else {})}
    if not train:
        raise DataError("no training examples left (all too long for max_length, or all "
                        "held out for evaluation)")
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"train": train, "eval": evals, "counts": counts}), "utf-8")
        tmp.replace(cache)
    return Prepared(train, evals, counts)


def length_skew(counts: dict, max_length: int, tolerance: float = 0.10) -> str | None:
    """A warning when dropping the examples over `max_length` changed the mix of
    build-data's row kinds by more than `tolerance` (answers carry the gold article and
    are the longest: a short max_length keeps mostly abstentions, and the adapter learns
    to abstain), else None."""
    total: dict[str, list[int]] = {}
    for c in counts.values():
        for kind, k in c.get("kinds", {}).items():
            t = total.setdefault(kind, [0, 0])
            t[0] += k["rows"]
            t[1] += k["rows"] - k["dropped_too_long"]
    rows, kept = sum(t[0] for t in total.values()), sum(t[1] for t in total.values())
    if len(total) < 2 or not kept:
        return None
    before = {kind: t[0] / rows for kind, t in total.items()}
    after = {kind: t[1] / kept for kind, t in total.items()}
    if max(abs(after[k] - before[k]) for k in total) <= tolerance:
        return None
    mix = ", ".join(f"{kind} {after[kind]:.0%} (of all rows {before[kind]:.0%}; "
                    f"{t[0] - t[1]} of {t[0]} dropped)" for kind, t in sorted(total.items()))
    return (f"max_length {max_length} changed the mix of the examples kept: {mix}; raise "
            "max_length or build the data with fewer passages (build-data -k)")


def _cache_key(sources, tokenizer, max_length, eval_fraction, max_eval, seed) -> str:
    h = hashlib.sha256()
    for s in sources:
        p = Path(s)
        h.update(s.encode())
        h.update(p.read_bytes() if p.is_file() else b"hub")
    # The tokenizer's vocabulary and chat template change the tokens and the prompts.
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    h.update(hashlib.sha256(vocab.encode()).digest())
    h.update(json.dumps([getattr(tokenizer, "chat_template", None), tokenizer.eos_token_id,
                         max_length, eval_fraction, max_eval, seed, PROMPT_VERSION,
                         "counts by kind"]).encode())   # what the cache holds changed
    return h.hexdigest()[:20]


def batches(examples: list[dict], micro_batch: int, seed: int, epoch: int,
            group_by_length: bool) -> list[list[int]]:
    """Indices of each micro-batch for one epoch, deterministic in (seed, epoch).

    With length grouping, examples are shuffled, cut into windows of 64 micro-batches,
    sorted by length inside each window and batched, and the batches shuffled again:
    batches hold similar lengths (little padding) without a fixed long-to-short order.
    """
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    if group_by_length:
        window = micro_batch * 64
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s:s + window], key=lambda j: len(examples[j]["input_ids"]))]
    out = [order[i:i + micro_batch] for i in range(0, len(order), micro_batch)]
    if group_by_length:
        rng.shuffle(out)
    return out


def collate(examples: list[dict], pad_id: int):
    import torch
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
