"""Which edition governs a question: as of a date (default today), for an entry year.

For each regulation with several editions (ingest/editions.py), the edition in force on
`as_of` governs; with `entry_year` (entry on April 1 of that year), a 経過措置 of that
edition that keeps earlier cohorts under the former rules (「令和3年度以前に入学した者に
ついては、なお従前の例による」) moves the student to the edition it names, and again
from there. Editions held only as excerpts (a booklet's few pages) cover only the
articles between their first and last: an article outside every newer edition's span
comes from the newest older edition that has it; an article an edition covers is that
edition's (renumbered, changed or removed). Editions not yet in force, and older
editions' 附則, are left out. `all_editions` searches everything, as before editions.

`Governing(table, choice).allows(passage)` is the filter the retriever applies;
`EditionView` is a retriever that searches under one choice (what `rag ask`, `rag chat`
and the server's answers use); `edition_note` is the line an answer adds when the
regulation it rests on has more than one edition.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from ingest.editions import (EDITIONS_FILE, EditionRecord, EditionTable, is_main,
                             is_supplementary)
from ingest.errors import RagError
from ingest.passage import Passage


class EditionChoiceError(RagError, ValueError):
    """An --as-of or --entry-year that is not a date or a year."""


@dataclass(frozen=True)
class EditionChoice:
    as_of: dt.date | None = None       # None: today
    entry_year: int | None = None
    all_editions: bool = False

    def date(self) -> dt.date:
        return self.as_of or dt.date.today()

    def resolved(self) -> EditionChoice:
        """The same choice with today's date written in (a cache key)."""
        return EditionChoice(self.date(), self.entry_year, self.all_editions)

    def to_json(self) -> dict:
        return {"as_of": self.date().isoformat(), "entry_year": self.entry_year,
                "all_editions": self.all_editions}


def parse_choice(as_of=None, entry_year=None, all_editions: bool = False) -> EditionChoice:
    """From flags or request fields: as_of "YYYY-MM-DD" (or a date), entry_year a year
    (int or digits). Raises EditionChoiceError naming the field."""
    day = None
    if as_of not in (None, ""):
        if isinstance(as_of, dt.date):
            day = as_of
        else:
            try:
                day = dt.date.fromisoformat(str(as_of).strip())
            except ValueError:
                raise EditionChoiceError(f"as_of must be a date YYYY-MM-DD, not {as_of!r}") from None
    year = None
    if entry_year not in (None, ""):
        text = str(entry_year).strip()
        if isinstance(entry_year, bool) or not text.isdigit() or not 1900 <= int(text) <= 2200:
            raise EditionChoiceError(f"entry_year must be a year such as 2023, not {entry_year!r}")
        year = int(text)
    return EditionChoice(day, year, bool(all_editions))


def load_table(index) -> EditionTable:
    """The index's edition table (editions.json of its generation), or computed from its
    passages and titles for an index written before editions (rag.toml's [ingest.editions]
    applies at the next ingest)."""
    path = index.path / EDITIONS_FILE
    if path.is_file():
        try:
            return EditionTable.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            pass
    titles = {s: d.title for s, d in index.manifest.documents.items()}
    return EditionTable.build(titles, index.passages)


def annotate(table: EditionTable, passages: list[Passage]) -> None:
    """Give every passage its `edition` (title, period, how many editions its regulation has)."""
    groups = table.groups()
    for p in passages:
        rec = table.documents.get(p.source)
        if rec is None:
            continue
        p.edition = {**rec.json(), "editions": len(groups.get(rec.regulation, [rec]))}


def edition_json(p: Passage) -> dict:
    """A source's `edition`: {title, effective_from, effective_to} (the passage's title and
    no dates when the index says nothing of editions)."""
    e = p.edition or {}
    return {"title": e.get("title", p.title), "effective_from": e.get("effective_from"),
            "effective_to": e.get("effective_to")}


class Governing:
    """The passages a choice allows: per regulation with several editions, the governing
    edition's (and an older one's articles that a 経過措置 keeps one by one)."""

    def __init__(self, table: EditionTable, choice: EditionChoice):
        self.table, self.choice = table, choice.resolved()
        self.chosen: dict[str, list[EditionRecord]] = {}
        # source -> ("all", articles left out) | ("only", articles allowed)
        self.rules: dict[str, tuple[str, set[str]]] = {}
        if not self.choice.all_editions:
            for name, editions in table.groups().items():
                self._choose(name, editions)

    def _choose(self, name: str, editions: list[EditionRecord]) -> None:
        dated = [e for e in editions if e.start]
        for e in editions:
            if not e.start:
                self.rules[e.source] = ("all", set())     # undated: cannot be placed
        if not dated:
            return
        starts = sorted({e.start for e in dated})
        as_of = self.choice.date()
        current = max((s for s in starts if s <= as_of), default=starts[0])
        moved: dict[str, dt.date] = {}                      # article -> edition date
        if self.choice.entry_year:
            entry = dt.date(self.choice.entry_year, 4, 1)
            current, moved = self._for_cohort(dated, current, entry)
        at = [e for e in dated if e.start == current]
        self.chosen[name] = at
        for e in dated:
            if e.start > current:
                self.rules[e.source] = ("only", set())
        for e in at:
            self.rules[e.source] = ("all", {a for a, d in moved.items() if d != current})
        for e in dated:
            if e.start < current:
                # An older edition only for articles a 経過措置 keeps one by one.
                self.rules[e.source] = ("only", {a for a, d in moved.items()
                                                 if d == e.start and a in e.articles})

    def _for_cohort(self, dated: list[EditionRecord], current: dt.date, entry: dt.date):
        """Follow the 経過措置 of the governing edition for a student who entered on
        `entry`: the edition it keeps them under, and articles kept one by one."""
        by_source = {e.source: e for e in dated}
        moved: dict[str, dt.date] = {}
        for _ in range(len(dated)):
            rules = [t for e in dated if e.start == current for t in e.transitional
                     if t.before and t.edition in by_source and entry < dt.date.fromisoformat(t.before)
                     and by_source[t.edition].start < current]
            whole = [t for t in rules if t.applies == "edition"]
            for t in rules:
                if t.applies == "articles":
                    for a in t.articles:
                        moved.setdefault(a, by_source[t.edition].start)
            if not whole:
                break
            current = min(by_source[t.edition].start for t in whole)
        return current, moved

    def allows(self, p: Passage) -> bool:
        rule = self.rules.get(p.source)
        if rule is None:
            return True
        if p.scope and not is_supplementary(p):
            return True          # another regulation of the same booklet page ("[2]")
        kind, articles = rule
        if kind == "all":
            return p.article not in articles
        return is_main(p) and p.article in articles

    def governing_of(self, source: str) -> list[EditionRecord]:
        rec = self.table.documents.get(source)
        return self.chosen.get(rec.regulation, []) if rec else []


class EditionView:
    """A retriever that searches under one EditionChoice; everything else is the
    retriever's own (the corpus for cross-references, titles, the index)."""

    def __init__(self, retriever, choice: EditionChoice):
        self._retriever, self.choice = retriever, choice

    def __getattr__(self, name):
        if name.startswith("__") or name == "_retriever":     # copy/pickle probes
            raise AttributeError(name)
        return getattr(self._retriever, name)

    def search(self, query: str, k: int = 5, mode: str = "hybrid", **kw):
        return self._retriever.search_many([query], k, mode, editions=self.choice, **kw)[0]

    def search_many(self, queries, k: int = 5, mode: str = "hybrid", *, editions=None, **kw):
        return self._retriever.search_many(queries, k, mode,
                                           editions=self.choice if editions is None else editions,
                                           **kw)

    def resolve_document(self, name: str, current: str) -> str | None:
        """「学則第8条」 from another regulation: the governing edition of the 学則."""
        found = self._retriever.resolve_document(name, current)
        if found is not None:
            return found
        governing = self._retriever.governing(self.choice)
        titles = self._retriever.titles()
        matches = [s for s, t in titles.items() if t.endswith(name)
                   and governing.rules.get(s, ("all", set()))[0] == "all"]
        return matches[0] if len(matches) == 1 else None


def question_choice(q) -> EditionChoice:
    """The choice of an evaluation question (its `as_of` / `entry_year`; today if none)."""
    return parse_choice(getattr(q, "as_of", None), getattr(q, "entry_year", None))


def with_editions(answerer, choice: EditionChoice | None):
    """The answerer retrieving under `choice` (None: the default, as of today)."""
    if choice is None or answerer.retriever is None:
        return answerer
    return answerer.using(EditionView(answerer.retriever, choice))


def edition_note(sources) -> str:
    """「多摩美術大学学則（2022年4月1日施行の版）による。」 for the regulations among
    `sources` (rag.context.Source) that have more than one edition; "" otherwise."""
    seen: list[str] = []
    for s in sources:
        e = s.passage.edition or {}
        if e.get("editions", 1) < 2:
            continue
        when = _jp_date(e.get("effective_from")) + "施行の版" if e.get("effective_from") else "版"
        until = f"、{_jp_date(e['effective_to'])}まで" if e.get("effective_to") else ""
        line = f"{e.get('title') or s.passage.title}（{when}{until}）"
        if line not in seen:
            seen.append(line)
    return ("※ " + "、".join(seen) + "による。") if seen else ""


def note_finisher(answer, prepared):
    """Answerer finisher: the answer says which edition it rests on (when there are
    several); the note is also kept as `answer.edition_note` for a streamed answer."""
    note = "" if answer.abstained else edition_note(answer.sources)
    answer.edition_note = note
    if note and note not in answer.text:
        answer.text = f"{answer.text}\n{note}"
    return answer


def _jp_date(iso: str) -> str:
    d = dt.date.fromisoformat(iso)
    return f"{d.year}年{d.month}月{d.day}日"
