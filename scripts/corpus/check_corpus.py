#!/usr/bin/env python3
"""Validate the shipped sample corpus and its question set.

    python scripts/corpus/check_corpus.py [--corpus DIR] [-v]

Checks corpus/questions.jsonl:
  * one JSON object per line with exactly the keys
    id, question, answer, must_include, gold, type (right value types);
  * ids unique and of the form q001; questions unique;
  * type in lookup|paraphrase|reasoning|multi|unanswerable, with minimum
    counts per type and in total;
  * must_include strings appear literally in the answer;
  * unanswerable: gold == [] and must_include == []; multi: 2+ gold
    entries; the other types: 1+ gold entries;
  * every gold file exists in corpus/ and is a regulation (not the prose
    guide), and its article label exists in the document after NFKC
    normalisation:
      "第42条" / "第15条の2"  -> an article line in the main body
      "附則第1条"            -> an article line after the 附則 heading
      "第3項" (申合せ only)   -> a top-level item line starting with "3 "
    a label pointing at a deleted article ("第30条　削除") is an error.

Also reports, per document, the detected encoding, number of articles
(main body / 附則) or top-level items, and whether the file looks like a
regulation at all.  Exit status 1 if anything is wrong.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
TYPES = ["lookup", "paraphrase", "reasoning", "multi", "unanswerable"]
MIN_PER_TYPE = {"lookup": 15, "paraphrase": 12, "reasoning": 12, "multi": 6, "unanswerable": 6}
MIN_TOTAL = 64
KEYS = ["id", "question", "answer", "must_include", "gold", "type"]
DOC_SUFFIXES = {".txt", ".md", ".html", ".htm", ".pdf"}
NON_REGULATION = {"学生生活ガイド.md"}
QUESTIONS = "questions.jsonl"

ART_RE = re.compile(r"^第(\d+)条(?:の(\d+))?(?:\s|$)(.*)")
SUPPL_RE = re.compile(r"^附\s*則(?:\s|（|$)")
ITEM_RE = re.compile(r"^(\d+)\s")
LABEL_RE = re.compile(r"^(附則)?第(\d+)条(?:の(\d+))?$|^第(\d+)項$")


class _Text(HTMLParser):
    BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "br", "tr",
             "section", "article", "main", "header", "footer", "nav", "title", "aside"}
    SKIP = {"script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def read_document(path: Path) -> tuple[str, str]:
    """Return (text, encoding description)."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        from pypdf import PdfReader

        reader = PdfReader(str(path))
        return "\n".join(p.extract_text() or "" for p in reader.pages), f"pdf ({len(reader.pages)} pages)"
    raw = path.read_bytes()
    try:
        text, enc = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, enc = raw.decode("cp932"), "cp932"
    if b"\r\n" in raw:
        enc += " CRLF"
    if suffix in {".html", ".htm"}:
        p = _Text()
        p.feed(text)
        text = "".join(p.parts)
    return text, enc


def normalise_lines(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    return [l.strip() for l in text.split("\n")]


class Doc:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        text, self.encoding = read_document(path)
        self.lines = [l for l in normalise_lines(text) if l]
        self.body_articles: dict[str, str] = {}
        self.suppl_articles: dict[str, str] = {}
        self.items: dict[str, str] = {}
        in_suppl = False
        for line in self.lines:
            if SUPPL_RE.match(line):
                in_suppl = True
                continue
            m = ART_RE.match(line)
            if m:
                label = f"第{m.group(1)}条" + (f"の{m.group(2)}" if m.group(2) else "")
                target = self.suppl_articles if in_suppl else self.body_articles
                if label in target:
                    raise ValueError(f"{self.name}: duplicate article {'附則' if in_suppl else ''}{label}")
                target[label] = m.group(3).strip()
                continue
            m = ITEM_RE.match(line)
            if m and not self.body_articles and not in_suppl:
                self.items.setdefault(f"第{m.group(1)}項", line)
        if self.body_articles:
            self.items = {}  # numbered lines of an article document are 項, not items
        self.kind = ("regulation" if self.body_articles else
                     "申合せ (items)" if self.items else "prose")
        if self.name in NON_REGULATION:
            self.kind = "prose (non-regulation)"

    def has(self, label: str) -> tuple[bool, str]:
        m = LABEL_RE.match(label)
        if not m:
            return False, f"malformed article label {label!r}"
        if m.group(4):
            if self.body_articles:
                return False, f"{label}: 第N項 labels are only for documents without 第N条 articles"
            return (label in self.items), f"no item line starting with {m.group(4)} in {self.name}"
        art = f"第{m.group(2)}条" + (f"の{m.group(3)}" if m.group(3) else "")
        table = self.suppl_articles if m.group(1) else self.body_articles
        if art not in table:
            return False, f"{label} not found in {self.name}"
        if table[art] == "削除":
            return False, f"{label} in {self.name} is a deleted article"
        return True, ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(REPO / "corpus"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    errors: list[str] = []

    docs: dict[str, Doc] = {}
    for path in sorted(corpus.iterdir()):
        if path.is_file() and path.suffix.lower() in DOC_SUFFIXES and path.name != QUESTIONS:
            try:
                docs[path.name] = Doc(path)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{path.name}: cannot read: {e}")

    print("Documents:")
    total_articles = 0
    regulation_docs = 0
    for d in docs.values():
        n = len(d.body_articles)
        total_articles += n
        if d.kind.startswith("regulation") or d.kind.startswith("申合せ"):
            regulation_docs += 1
        extra = ""
        if d.suppl_articles:
            extra += f" + 附則 {len(d.suppl_articles)} articles"
        deleted = [a for a, t in d.body_articles.items() if t == "削除"]
        if deleted:
            extra += f" (deleted: {', '.join(deleted)})"
        if d.items:
            extra += f" {len(d.items)} items"
        print(f"  {d.name:<40} {d.encoding:<18} {d.kind:<22} articles={n}{extra}")
        if args.verbose:
            print("     ", " ".join(d.body_articles) or "", " ".join(d.items) or "")
    print(f"  total articles in main bodies: {total_articles}; regulation documents: {regulation_docs}")
    if total_articles < 80:
        errors.append(f"only {total_articles} articles in total (need >= 80)")
    if regulation_docs < 6:
        errors.append(f"only {regulation_docs} regulation documents (need >= 6)")
    for name, d in docs.items():
        if d.kind.startswith("prose") and name not in NON_REGULATION:
            errors.append(f"{name}: no articles or items found")
        if name in NON_REGULATION and (d.body_articles or d.items):
            errors.append(f"{name}: non-regulation guide must not contain 第N条 / numbered items")

    qpath = corpus / QUESTIONS
    if not qpath.exists():
        errors.append(f"{qpath} missing")
        questions = []
    else:
        questions = []
        for n, line in enumerate(qpath.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                errors.append(f"{QUESTIONS}:{n}: empty line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{QUESTIONS}:{n}: bad JSON: {e}")
                continue
            if "\\u" in line:
                errors.append(f"{QUESTIONS}:{n}: written with ensure_ascii=True")
            questions.append((n, obj))

    ids: Counter = Counter()
    qtexts: Counter = Counter()
    types: Counter = Counter()
    gold_files: Counter = Counter()
    for n, q in questions:
        where = f"{QUESTIONS}:{n}"
        if not isinstance(q, dict):
            errors.append(f"{where}: not an object")
            continue
        if list(q.keys()) != KEYS:
            if set(q.keys()) != set(KEYS):
                errors.append(f"{where}: keys {sorted(q.keys())} != {KEYS}")
                continue
        qid = q["id"]
        where = f"{where} ({qid})"
        if not (isinstance(qid, str) and re.fullmatch(r"q\d{3,}", qid)):
            errors.append(f"{where}: bad id")
        ids[qid] += 1
        for k in ("question", "answer", "type"):
            if not isinstance(q[k], str) or not q[k].strip():
                errors.append(f"{where}: {k} must be a non-empty string")
        qtexts[q["question"]] += 1
        t = q["type"]
        types[t] += 1
        if t not in TYPES:
            errors.append(f"{where}: unknown type {t!r}")
        mi, gold = q["must_include"], q["gold"]
        if not (isinstance(mi, list) and all(isinstance(s, str) and s for s in mi)):
            errors.append(f"{where}: must_include must be a list of non-empty strings")
            mi = []
        if not (isinstance(gold, list) and all(isinstance(g, dict) for g in gold)):
            errors.append(f"{where}: gold must be a list of objects")
            gold = []
        for s in mi:
            if s not in q["answer"]:
                errors.append(f"{where}: must_include {s!r} not in answer")
        if t == "unanswerable":
            if gold or mi:
                errors.append(f"{where}: unanswerable needs gold [] and must_include []")
        else:
            if not mi:
                errors.append(f"{where}: must_include is empty")
            if t == "multi" and len(gold) < 2:
                errors.append(f"{where}: multi needs 2+ gold articles")
            if t != "multi" and len(gold) < 1:
                errors.append(f"{where}: needs a gold article")
        seen = set()
        for g in gold:
            if set(g.keys()) != {"file", "article"}:
                errors.append(f"{where}: gold entry keys {sorted(g.keys())}")
                continue
            key = (g["file"], g["article"])
            if key in seen:
                errors.append(f"{where}: duplicate gold {key}")
            seen.add(key)
            d = docs.get(g["file"])
            if d is None:
                errors.append(f"{where}: gold file {g['file']!r} not in corpus/")
                continue
            if g["file"] in NON_REGULATION:
                errors.append(f"{where}: gold must not reference the non-regulation guide")
                continue
            ok, why = d.has(g["article"])
            if not ok:
                errors.append(f"{where}: {why}")
            gold_files[g["file"]] += 1
    for qid, c in ids.items():
        if c > 1:
            errors.append(f"duplicate id {qid} ({c}x)")
    for text, c in qtexts.items():
        if c > 1:
            errors.append(f"duplicate question {text!r}")

    print(f"\nQuestions: {len(questions)}")
    for t in TYPES:
        print(f"  {t:<13} {types[t]:>3}  (min {MIN_PER_TYPE[t]})")
        if types[t] < MIN_PER_TYPE[t]:
            errors.append(f"only {types[t]} {t} questions (need >= {MIN_PER_TYPE[t]})")
    if len(questions) < MIN_TOTAL:
        errors.append(f"only {len(questions)} questions (need >= {MIN_TOTAL})")
    print("Gold references per file:")
    for f, c in sorted(gold_files.items()):
        print(f"  {f:<40} {c}")
    for name, d in docs.items():
        if name not in NON_REGULATION and not gold_files[name]:
            errors.append(f"{name}: no question has gold in this document")

    if errors:
        print(f"\n{len(errors)} problem(s):")
        for e in errors:
            print("  -", e)
        return 1
    print("\nOK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
