"""Students' ratings of answers, in SQLite (WAL: the server writes while staff read or
export), and their export as a question set for `rag eval` and `rag finetune build-data`.
"""
from __future__ import annotations

import errno
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from ingest.errors import RagError

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    answer_id        TEXT PRIMARY KEY,
    created          TEXT NOT NULL,
    question         TEXT NOT NULL,
    answer           TEXT NOT NULL,
    sources          TEXT NOT NULL,      -- JSON: the answer's sources as /api/ask gives them
    abstained        INTEGER NOT NULL,
    rating           TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment          TEXT NOT NULL DEFAULT '',
    index_generation TEXT,
    model            TEXT,
    adapter          TEXT
)
"""


class FeedbackError(RagError):
    pass


class AlreadyRated(FeedbackError):
    """The answer has a rating already: a second one would replace what the student
    wrote first, so it is refused (409) and the first kept."""


class FeedbackNotSaved(FeedbackError):
    """The database could not take the rating: `full` when the disk (or the database's
    size limit) is full, else busy or failing."""

    def __init__(self, message: str, full: bool):
        super().__init__(message)
        self.full = full


class FeedbackStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(SCHEMA)
                db.commit()
        except (OSError, sqlite3.Error) as e:
            raise FeedbackError(f"cannot use {self.path} for feedback: {e}") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def record(self, answer: dict, rating: str, comment: str = "") -> None:
        """Store the rating of one answer: `answer` is the object /api/ask returned, with
        its id, index generation, model and adapter. The same rating and comment again
        (a retry) is a no-op; a different one for a rated answer raises AlreadyRated (the
        first is kept: nothing a student wrote is silently replaced)."""
        row = (answer["id"], time.strftime("%Y-%m-%dT%H:%M:%S%z"), answer["question"],
               answer["answer"], json.dumps(answer["sources"], ensure_ascii=False),
               int(answer["abstained"]), rating, comment, answer.get("index_generation"),
               answer.get("model"), answer.get("adapter"))
        try:
            with closing(self._connect()) as db:
                inserted = db.execute("INSERT INTO feedback VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                                      "ON CONFLICT(answer_id) DO NOTHING", row).rowcount
                db.commit()
                if inserted:
                    return
                before = db.execute("SELECT rating, comment FROM feedback WHERE answer_id = ?",
                                    (answer["id"],)).fetchone()
        except (OSError, sqlite3.Error) as e:
            full = getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or \
                getattr(e, "errno", None) == errno.ENOSPC or "full" in str(e).lower()
            raise FeedbackNotSaved(f"{self.path}: {e}", full) from None
        if before is not None and tuple(before) != (rating, comment):
            raise AlreadyRated(f"answer {answer['id']} is already rated "
                               f"({before[0]}); the first rating is kept")

    def rows(self, rating: str | None = None) -> list[dict]:
        return read_rows(self.path, rating)


def read_rows(path: str | Path, rating: str | None = None) -> list[dict]:
    """The stored ratings, read-only: exporting never writes to the database (nor turns
    another SQLite file into one)."""
    query = "SELECT * FROM feedback" + (" WHERE rating = ?" if rating else "")
    try:
        with closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(query + " ORDER BY created, answer_id",
                                                (rating,) if rating else ())]
    except sqlite3.Error as e:
        raise FeedbackError(f"{path}: not a feedback database of rag serve ({e})") from None


def export(db: str | Path, out: str | Path, rating: str | None = None) -> int:
    """Write the feedback as a question set (rag/evaluation/questions.py's schema), one question a
    line. `answer`, `gold` and `must_include` are left for staff to fill: until `gold`
    is filled, `rag eval` scores a question as unanswerable. What the student saw rides
    along: `model_answer`, `rating`, `comment`, `sources`, and `suggested_gold` (the
    articles the answer cited, to confirm or correct)."""
    if not Path(db).is_file():
        raise FeedbackError(f"{db}: no feedback database (rag serve --feedback-db)")
    rows = read_rows(db, rating)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for r in rows:
            sources = json.loads(r["sources"])
            fh.write(json.dumps({
                "id": f"feedback-{r['answer_id']}", "question": r["question"],
                "answer": "", "must_include": [], "gold": [], "type": "lookup",
                "model_answer": r["answer"], "abstained": bool(r["abstained"]),
                "rating": r["rating"], "comment": r["comment"], "sources": sources,
                "suggested_gold": _cited(sources),
                "index_generation": r["index_generation"], "model": r["model"],
                "adapter": r["adapter"], "asked_at": r["created"]}, ensure_ascii=False) + "\n")
    return len(rows)


def _cited(sources: list[dict]) -> list[dict]:
    seen: dict[tuple[str, str], None] = {}
    for s in sources:
        if s.get("article"):
            seen.setdefault((s["source"], s["article"]))
    return [{"file": f, "article": a} for f, a in seen]
