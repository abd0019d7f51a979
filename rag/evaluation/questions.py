"""The question set (JSONL): load and validate, naming the line and field at fault."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import RagError
from ingest.japanese import canonical_label

TYPES = ("lookup", "paraphrase", "reasoning", "multi", "unanswerable")


class QuestionSetError(RagError):
    pass


@dataclass
class Gold:
    file: str
    article: str


@dataclass
class Question:
    id: str
    question: str
    answer: str = ""
    must_include: list[str] = field(default_factory=list)
    gold: list[Gold] = field(default_factory=list)
    type: str = "lookup"
    line: int = 0
    as_of: str | None = None          # YYYY-MM-DD: asked as of this date (default today)
    entry_year: int | None = None     # the asker's entry year (経過措置)


def load_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    out: list[Question] = []
    seen: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise QuestionSetError(f"{path}: not UTF-8 (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise QuestionSetError(f"{path}: cannot read ({e.strerror})") from None
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise QuestionSetError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise QuestionSetError(f"{where}: expected a JSON object")
        for key in ("id", "question"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise QuestionSetError(f"{where}: field {key!r} is missing or empty")
        if obj["id"] in seen:
            raise QuestionSetError(f"{where}: duplicate id {obj['id']!r} "
                                   f"(first on line {seen[obj['id']]})")
        seen[obj["id"]] = n
        qtype = obj.get("type", "lookup")
        if qtype not in TYPES:
            raise QuestionSetError(f"{where}: field 'type' is {qtype!r}, not one of "
                                   f"{', '.join(TYPES)}")
        if not isinstance(obj.get("answer", ""), str):
            raise QuestionSetError(f"{where}: field 'answer' must be a string, not "
                                   f"{obj['answer']!r}")
        if not isinstance(obj.get("gold") or [], list):
            raise QuestionSetError(f"{where}: field 'gold' must be a list of "
                                   '{"file", "article"} objects')
        gold = []
        for i, g in enumerate(obj.get("gold") or []):
            if not isinstance(g, dict) or not isinstance(g.get("file"), str) or not isinstance(
                    g.get("article"), str) or not g["file"] or not g["article"]:
                raise QuestionSetError(f"{where}: gold[{i}] needs 'file' and 'article' strings, "
                                       '{"file": "学則.txt", "article": "第42条"}')
            # As written in the document (第五条, 第４２条) is the splitter's 第5条, 第42条.
            gold.append(Gold(g["file"], canonical_label(g["article"])))
        must = obj.get("must_include") or []
        if not isinstance(must, list) or not all(isinstance(m, str) for m in must):
            raise QuestionSetError(f"{where}: field 'must_include' must be a list of strings")
        as_of, entry_year = _edition_fields(obj, where)
        out.append(Question(obj["id"], obj["question"], obj.get("answer", ""), must, gold,
                            qtype, n, as_of, entry_year))
    if not out:
        raise QuestionSetError(f"{path}: no questions")
    return out


def _edition_fields(obj: dict, where: str) -> tuple[str | None, int | None]:
    """`as_of` (YYYY-MM-DD) and `entry_year` (a year) of a question, checked."""
    from ..retrieval.editions import EditionChoiceError, parse_choice

    as_of, year = obj.get("as_of"), obj.get("entry_year")
    if as_of is not None and not isinstance(as_of, str) or (
            year is not None and (not isinstance(year, int) or isinstance(year, bool))):
        raise QuestionSetError(f"{where}: field 'as_of' must be a string YYYY-MM-DD and "
                               "'entry_year' an integer year")
    try:
        choice = parse_choice(as_of, year)
    except EditionChoiceError as e:
        raise QuestionSetError(f"{where}: {e}") from None
    return (choice.as_of.isoformat() if choice.as_of else None), choice.entry_year


def check_gold(questions: list[Question], passages, path: str | Path) -> None:
    """Every gold article must be in the index, before anything is retrieved or generated."""
    have = {(p.source, p.article) for p in passages}
    for q in questions:
        for g in q.gold:
            if (g.file, g.article) not in have:
                raise QuestionSetError(f"{path}:{q.line}: gold article {g.file} {g.article} "
                                       f"of {q.id!r} is not in the index (field 'gold')"
                                       + _gold_hint(g, have))


def _gold_hint(g: Gold, have: set[tuple[str, str]]) -> str:
    """What the gold entry probably meant: 第４２条 -> 第42条, corpus/学則.txt -> 学則.txt."""
    sources = {s for s, _ in have}
    file = g.file
    if file not in sources:
        near = [s for s in sources if file.endswith("/" + s) or s.endswith("/" + file)
                or s.rsplit("/", 1)[-1] == file.rsplit("/", 1)[-1]]
        if len(near) == 1:
            file = near[0]
        else:
            return ("; files are named by their path relative to the ingested folder, e.g. "
                    + ", ".join(sorted(sources)[:3]))
    article = canonical_label(g.article)
    if (file, article) in have and (file, article) != (g.file, g.article):
        return f'; did you mean {{"file": "{file}", "article": "{article}"}}?'
    labels = sorted(a for s, a in have if s == file and a)[:5]
    return f"; {file} has articles such as {', '.join(labels)}" if labels else ""


def read_queries(path: str | Path) -> list[dict]:
    """Questions to search, leniently: a text file of one question a line, or JSONL
    whose objects have a `question` (and maybe an `id`), such as a question set."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise QuestionSetError(f"{path}: not UTF-8 text (byte {e.start}); save the "
                               "questions as UTF-8") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise QuestionSetError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(obj.get("question"), str) or not obj["question"].strip():
                raise QuestionSetError(f"{path}:{n}: missing field 'question'")
            out.append({"query": obj["question"], **({"id": obj["id"]} if "id" in obj else {})})
        else:
            out.append({"query": line})
    if not out:
        raise QuestionSetError(f"{path}: no questions in the file")
    return out
