"""Editions of one regulation: which documents are editions of the same rule, when each
was in force, and which earlier cohorts keep an older one (経過措置).

- Dates: `parse_date` reads 「令和6年4月1日」, 「平成元年4月1日」, 「平成二十九年三月三十一日」,
  「２０２４年４月１日」 (和暦 with 元年, 西暦, 漢数字, full-width digits).
- 施行日: `enforcement_dates` finds 「この学則は、令和6年4月1日から施行する」 (and 「…制定施行
  する」) in a document's 附則; an edition takes effect on the latest of them, unless
  `[ingest.editions]` of rag.toml gives the date (the admin's word wins), else a date in
  the file name (`_20240401`, then a year: `-2020` as 2020-04-01, an academic year).
- 経過措置: `parse_transitional` turns 「令和5年3月31日以前に入学した者については、なお従前の例
  による」 into "entry before 2023-04-01 → the edition in force before this 附則's 施行日";
  a sentence whose wording it cannot map is still listed (with `before` None), as is one
  limited to some articles or matters (「…の単位履修については」), which does not switch the
  whole edition.
- Grouping: documents whose titles are the same once normalised (NFKC, no spaces, no
  「(抜粋)」 or year notes), or that `[ingest.editions]` names as one `regulation`.
  An edition ends the day before the next one begins; documents of one regulation with
  the same date are parts of one edition.

`EditionTable.build` computes all of it at ingest; the table is stored beside the
manifest as editions.json (an older index without one gets it computed when loaded).
What governs a question (as of a date, for an entry year) is rag.retrieval.editions'.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from .errors import RagError
from .japanese import nfkc, parse_number
from .passage import Passage
from .report import article_changes

EDITIONS_FILE = "editions.json"
TABLE_VERSION = 1

ERAS = {"明治": 1868, "大正": 1912, "昭和": 1926, "平成": 1989, "令和": 2019}
_N = r"[0-9]+|[〇零一二三四五六七八九十百千]+"
_ERA = "|".join(ERAS)
# One date, on NFKC text: 和暦 (元年 too) or 西暦, digits or kanji.
DATE = (rf"(?:(?P<era>{_ERA})\s*(?P<ey>元|{_N})|(?P<wy>[0-9]{{4}}))\s*年\s*(?P<m>{_N})\s*月"
        rf"\s*(?P<d>{_N})\s*日")
# An academic year: 令和3年度, 2021年度.
FISCAL = rf"(?:(?P<fera>{_ERA})\s*(?P<fey>元|{_N})|(?P<fwy>[0-9]{{4}}))\s*年度"
_DATE_RE = re.compile(DATE)
_ENFORCE = re.compile(rf"({DATE})\s*(?:から|より)?\s*(?:制定\s*)?施行")
_SHORT = re.compile(r"(令|平|昭)\s*(元|[0-9]{1,2})\.([0-9]{1,2})\.([0-9]{1,2})")
_SHORT_ERA = {"令": "令和", "平": "平成", "昭": "昭和"}


class EditionError(RagError):
    """[ingest.editions] of rag.toml cannot be used as written."""


def _year(era: str | None, n: str | None, western: str | None) -> int:
    if western:
        return int(western)
    return ERAS[era] + (1 if n == "元" else parse_number(n)) - 1


def _match_date(m: re.Match) -> dt.date | None:
    g = m.groupdict()
    try:
        return dt.date(_year(g["era"], g["ey"], g["wy"]), parse_number(g["m"]),
                       parse_number(g["d"]))
    except (ValueError, KeyError):
        return None


def parse_date(text: str) -> dt.date | None:
    """The first date written in `text` (和暦 or 西暦, 元年, kanji or full-width digits), or
    an ISO date (2024-04-01)."""
    text = nfkc(text)
    m = _DATE_RE.search(text)
    if m:
        return _match_date(m)
    m = re.search(r"\b([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})\b", text)
    if m:
        try:
            return dt.date(*map(int, m.groups()))
        except ValueError:
            return None
    m = _SHORT.search(text)
    if m:
        era, y, mo, d = m.groups()
        try:
            return dt.date(_year(_SHORT_ERA[era], y, None), int(mo), int(d))
        except ValueError:
            return None
    return None


def fiscal_year(m: re.Match) -> int:
    g = m.groupdict()
    return _year(g["fera"], g["fey"], g["fwy"])


def sentences(text: str) -> list[str]:
    """NFKC sentences (。-ended), spaces squeezed; 附則 paragraph numbers kept."""
    flat = re.sub(r"\s+", "", nfkc(text))
    return [s + "。" for s in flat.split("。") if s.strip()]


def enforcement_dates(text: str) -> list[tuple[dt.date, str]]:
    """(施行日, sentence) of every 「…から施行する」 sentence with a date in `text`."""
    out = []
    for s in sentences(text):
        if "施行" not in s:
            continue
        for m in _ENFORCE.finditer(s):
            d = _match_date(_DATE_RE.match(m.group(1)))
            if d:
                out.append((d, _display(s)))
    return out


def _display(sentence: str) -> str:
    """A sentence as listed: without the 附則 paragraph number it may start with."""
    return re.sub(r"^(?:附則)?(?:[0-9]{1,2}(?=[^0-9年月日]))?", "", sentence)


# --------------------------------------------------------------------------- 経過措置

@dataclass
class Transitional:
    """A 経過措置 of a 附則: entry before `before` → the edition in force the day before
    `enacted` (this 附則's 施行日), or the one `edition` names (rag.toml)."""
    sentence: str
    before: str | None = None        # ISO date: students who entered before it keep...
    enacted: str | None = None       # ...the edition in force the day before this date
    edition: str | None = None       # that edition's source (resolved in the group)
    applies: str = "edition"         # edition | articles (only those) | listed (not mapped)
    articles: list[str] = field(default_factory=list)
    matter: str = ""                 # 「単位履修」 of 「…の単位履修については」
    origin: str = "附則"              # 附則 | rag.toml
    scope: str = ""                  # the 附則 it is in

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Transitional:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        if self.before is None:
            what = "not mapped to a cohort (read it and declare it in [ingest.editions])"
        else:
            target = self.edition or ("the edition before " + (self.enacted or "this one"))
            what = f"entry before {self.before} → {target}"
            if self.applies == "articles":
                what += f" (only {'、'.join(self.articles)})"
            elif self.matter:
                what += f" (only for {self.matter}: listed, not applied)"
        return what


_DAY = dt.timedelta(days=1)
_ENTERED = r"(?:に)?(?:入学した者|入学者|入学した学生|入学生)"
_COHORT_RULES: list[tuple[re.Pattern, str]] = [
    # 令和5年3月31日以前に入学した者 / 令和5年3月31日までに入学した者
    (re.compile(rf"({DATE})(?:以前|まで){_ENTERED}"), "date+1"),
    # 令和5年4月1日前に入学した者
    (re.compile(rf"({DATE})前{_ENTERED}"), "date"),
    # 令和3年度以前に入学した者 / 令和3年度以前の入学者 / 令和3年度までの入学者
    (re.compile(rf"({FISCAL})(?:以前|まで)(?:の)?{_ENTERED}"), "fy+1"),
    # 令和4年度入学者から適用 / 令和4年度以降に入学した者から適用
    (re.compile(rf"({FISCAL})(?:以降|以後)?(?:の|に)?(?:入学者|入学した者|入学する者)"
                r"(?:から|より|について)適用"), "fy"),
    # 令和4年4月1日以後に入学する者から適用
    (re.compile(rf"({DATE})(?:以後|以降)(?:に)?(?:入学する者|入学した者)(?:から|より|について)"
                r"適用"), "date"),
    # 令和5年3月31日において現に在学する者 / 令和5年3月31日に在学する者
    (re.compile(rf"({DATE})(?:において|に|現在)(?:現に)?(?:在学|在籍)(?:する|している)者"), "date+1"),
]
# この学則の施行の際現に在学する者 / 施行日前に入学した者 / 施行の日の前日において在学する者
_AT_ENACTMENT = re.compile(r"(?:施行の際|施行日において|施行の日において|施行の日の前日において)"
                           r"(?:現に)?(?:在学|在籍)(?:する|している)者|施行日前に入学した者|"
                           r"施行の日前に入学した者")
_ARTICLES = re.compile(r"第[0-9]+条(?:の[0-9]+)*(?:第[0-9]+項)?")
_MATTER = re.compile(r"(?:者|入学者)の(.{1,16}?)(?:について|に関して)")


def parse_transitional(sentence: str, enacted: dt.date | None = None) -> Transitional | None:
    """A 経過措置 for earlier cohorts, or None when `sentence` is not one. `enacted`: the
    施行日 of the 附則 it is in (「この学則の施行の際現に在学する者」 means entry before it)."""
    s = re.sub(r"\s+", "", nfkc(sentence))
    keeps = "従前の例" in s or "なお従前" in s or "旧規程" in s or "改正前の" in s
    applies_from = bool(re.search(r"(?:から|より)適用", s))
    if not (keeps or applies_from) or not re.search(r"入学|在学|在籍", s):
        return None
    rule = Transitional(_display(s), enacted=enacted.isoformat() if enacted else None)
    before = None
    for pattern, how in _COHORT_RULES:
        m = pattern.search(s)
        if not m:
            continue
        if how.startswith("fy"):
            fm = re.search(FISCAL, m.group(1))
            year = fiscal_year(fm) + (1 if how == "fy+1" else 0)
            before = dt.date(year, 4, 1)
        else:
            d = _match_date(_DATE_RE.search(m.group(1)))
            if d is None:
                continue
            before = d + _DAY if how == "date+1" else d
        break
    if before is None and _AT_ENACTMENT.search(s) and enacted:
        before = enacted
    rule.before = before.isoformat() if before else None
    if rule.before is None:
        rule.applies = "listed"
    # 「改正後の第12条の規定は…」: only those articles.
    head = s.split("入学", 1)[0]
    named = [a for a in _ARTICLES.findall(head) if "附則" not in head[:head.find(a)][-3:]]
    if named:
        rule.articles = sorted(set(re.sub(r"第[0-9]+項$", "", a) for a in named),
                               key=named.index)
        if rule.before:
            rule.applies = "articles"
    m = _MATTER.search(s)
    if m and not named:
        rule.matter = m.group(1)
        if rule.before:
            rule.applies = "listed"
    return rule


# --------------------------------------------------------------------------- editions

def regulation_key(title: str) -> str:
    """The name editions of one regulation share: NFKC, no spaces, no 「(抜粋)」 or year
    note (「(2020年度)」, 「令和6年度版」)."""
    t = re.sub(r"\s+", "", nfkc(title))
    t = re.sub(r"[(\[][^()\[\]]*(?:抜粋|抄|年度|年版|[0-9]{4})[^()\[\]]*[)\]]", "", t)
    t = re.sub(rf"(?:(?:{_ERA})(?:元|[0-9]+)|[0-9]{{4}})年度?版?$", "", t)
    return t


_NUMBERED = re.compile(r"^第([0-9]+)条((?:の[0-9]+)*)$")


def article_number(label: str) -> tuple[int, ...] | None:
    """第6条の2 -> (6, 2); None for anything that is not a main-provision article."""
    m = _NUMBERED.match(label or "")
    if not m:
        return None
    return (int(m.group(1)), *(int(x) for x in m.group(2).split("の")[1:]))


def is_main(p: Passage) -> bool:
    return not p.scope and not p.article.startswith("附則")


def is_supplementary(p: Passage) -> bool:
    return p.article.startswith("附則") or p.scope.startswith("附則")


@dataclass
class EditionRecord:
    """One document as an edition of its regulation."""
    source: str
    title: str
    regulation: str                  # the group's name
    effective_from: str | None = None   # ISO date
    effective_to: str | None = None     # ISO date, inclusive; None: still in force
    date_source: str = ""            # rag.toml | 附則 | file name | ""
    date_sentence: str = ""
    articles: list[str] = field(default_factory=list)   # main-provision labels, in order
    transitional: list[Transitional] = field(default_factory=list)
    note: str = ""                   # rag.toml's note (where the date comes from)
    # Its 附則 is in the text: the main provisions run to their end (an excerpt that
    # stops mid-regulation does not cover the articles after its last).
    runs_to_end: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["transitional"] = [t.to_dict() for t in self.transitional]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EditionRecord:
        d = dict(d)
        d["transitional"] = [Transitional.from_dict(t) for t in d.get("transitional") or []]
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def start(self) -> dt.date | None:
        return dt.date.fromisoformat(self.effective_from) if self.effective_from else None

    def span(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """The first and last article numbers it covers: an excerpt only its own, a text
        that reaches its 附則 everything after its first article."""
        nums = [n for n in (article_number(a) for a in self.articles) if n]
        if not nums:
            return None
        return min(nums), (10 ** 6,) if self.runs_to_end else max(nums)

    def covers(self, label: str) -> bool:
        if label in self.articles:
            return True
        n, span = article_number(label), self.span()
        return bool(n and span and span[0] <= n <= span[1])

    def json(self) -> dict:
        """What a source's `edition` says: title and period."""
        return {"title": self.title, "regulation": self.regulation,
                "effective_from": self.effective_from, "effective_to": self.effective_to}


@dataclass
class EditionTable:
    """Every indexed document as an edition; groups are documents sharing `regulation`."""
    documents: dict[str, EditionRecord] = field(default_factory=dict)
    version: int = TABLE_VERSION

    def to_dict(self) -> dict:
        return {"version": self.version,
                "documents": {s: r.to_dict() for s, r in sorted(self.documents.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> EditionTable:
        return cls({s: EditionRecord.from_dict(r) for s, r in (d.get("documents") or {}).items()},
                   d.get("version", TABLE_VERSION))

    def groups(self) -> dict[str, list[EditionRecord]]:
        """Regulations with more than one edition, each oldest first (undated last)."""
        out: dict[str, list[EditionRecord]] = {}
        for r in self.documents.values():
            out.setdefault(r.regulation, []).append(r)
        return {k: sorted(v, key=_order) for k, v in sorted(out.items()) if len(v) > 1}

    def editions_of(self, source: str) -> list[EditionRecord]:
        r = self.documents.get(source)
        return self.groups().get(r.regulation, []) if r else []

    @classmethod
    def build(cls, titles: dict[str, str], passages: Iterable[Passage],
              declared: dict | None = None) -> EditionTable:
        """From the index's documents (source -> title), their passages and
        `[ingest.editions]` (path or file name -> "YYYY-MM-DD" or a table)."""
        from .title import declared_title

        declared = declared or {}
        by_source: dict[str, list[Passage]] = {}
        for p in passages:
            by_source.setdefault(p.source, []).append(p)
        table = cls()
        for source, title in titles.items():
            spec = _spec(declared_title(declared, source) if declared else None, source)
            parts = by_source.get(source, [])
            rec = EditionRecord(source, title, spec.get("regulation") or regulation_key(title),
                                note=spec.get("note", ""))
            rec.articles = list(dict.fromkeys(p.article for p in parts
                                              if is_main(p) and article_number(p.article)))
            rec.runs_to_end = any(is_supplementary(p) for p in parts)
            _date(rec, spec, parts)
            rec.transitional = _transitionals(parts, rec)
            if "transitional" in spec:
                for t in rec.transitional:
                    t.applies = "listed" if t.applies != "listed" else t.applies
                    t.matter = t.matter or "overridden by rag.toml"
                rec.transitional += spec["transitional"]
            if spec.get("effective_to"):
                rec.effective_to = spec["effective_to"]
            table.documents[source] = rec
        table._close_periods(declared_to={s for s in titles
                                          if _spec(declared_title(declared, s) if declared
                                                   else None, s).get("effective_to")})
        return table

    def _close_periods(self, declared_to: set[str]) -> None:
        """An edition ends the day before the next one begins; 経過措置 targets resolved."""
        for editions in self.groups().values():
            starts = sorted({r.start for r in editions if r.start})
            for r in editions:
                if r.start and r.source not in declared_to:
                    later = [s for s in starts if s > r.start]
                    r.effective_to = (later[0] - _DAY).isoformat() if later else None
            for r in editions:
                for t in r.transitional:
                    if t.edition or t.before is None:
                        continue
                    cut = dt.date.fromisoformat(t.enacted) if t.enacted else r.start
                    older = [e for e in editions if e.start and cut and e.start < cut]
                    if older:
                        newest = max(e.start for e in older)
                        t.edition = next(e.source for e in older if e.start == newest)


def _order(r: EditionRecord):
    return (r.start is None, r.start or dt.date.min, r.source)


def _spec(value, source: str) -> dict:
    """One [ingest.editions] entry as a dict: "2024-04-01" is {effective_from = ...}."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = {"effective_from": value}
    if not isinstance(value, dict):
        raise EditionError(f"[ingest.editions] {source!r}: give a date (\"2024-04-01\") or a "
                           "table {regulation, effective_from, effective_to, transitional, note}")
    known = {"regulation", "effective_from", "effective_to", "transitional", "note"}
    unknown = set(value) - known
    if unknown:
        raise EditionError(f"[ingest.editions] {source!r}: unknown key(s) "
                           f"{', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    spec = dict(value)
    for key in ("effective_from", "effective_to"):
        if spec.get(key) is not None:
            spec[key] = _iso(spec[key], f"[ingest.editions] {source!r} {key}")
    rules = spec.get("transitional")
    if rules is not None:
        if isinstance(rules, (str, dict)):
            rules = [rules]
        out = []
        for i, t in enumerate(rules if isinstance(rules, list) else [None]):
            where = f"[ingest.editions] {source!r} transitional[{i}]"
            if isinstance(t, str):
                t = {"entered_before": t}
            if not isinstance(t, dict) or "entered_before" not in t:
                raise EditionError(f"{where}: give {{entered_before = \"YYYY-MM-DD\", edition = "
                                   "\"path of the older edition\" (optional)}}")
            out.append(Transitional(t.get("sentence", "(rag.toml)"),
                                    before=_iso(t["entered_before"], where),
                                    edition=t.get("edition"), origin="rag.toml",
                                    applies="edition"))
        spec["transitional"] = out
    return spec


def check_declared(declared: dict) -> None:
    """Raise EditionError for an [ingest.editions] entry that cannot be used."""
    for source, value in declared.items():
        _spec(value, source)


def _iso(value, where: str) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            d = parse_date(value)
            if d:
                return d.isoformat()
    raise EditionError(f"{where}: {value!r} is not a date (YYYY-MM-DD or 令和6年4月1日)")


def _date(rec: EditionRecord, spec: dict, parts: list[Passage]) -> None:
    """effective_from: rag.toml, else the latest 施行日 of its 附則, else the file name."""
    if spec.get("effective_from"):
        rec.effective_from, rec.date_source = spec["effective_from"], "rag.toml"
        return
    found = [(d, s) for p in parts if is_supplementary(p) for d, s in enforcement_dates(p.text)]
    if found:
        d, s = max(found, key=lambda x: x[0])
        rec.effective_from, rec.date_source, rec.date_sentence = d.isoformat(), "附則", s
        return
    name = rec.source.rsplit("/", 1)[-1]
    m = re.search(r"(?<![0-9])((?:19|20)[0-9]{2})([01][0-9])([0-3][0-9])(?![0-9])", name)
    try:
        if m:
            rec.effective_from = dt.date(*map(int, m.groups())).isoformat()
            rec.date_source = "file name"
            return
    except ValueError:
        pass
    m = re.search(r"(?<![0-9])((?:19|20)[0-9]{2})(?![0-9])", name)
    if m:
        # A booklet of 2020 holds the rules of academic year 2020, from April.
        rec.effective_from, rec.date_source = f"{m.group(1)}-04-01", "file name"


def _transitionals(parts: list[Passage], rec: EditionRecord) -> list[Transitional]:
    """The 経過措置 of a document's 附則, each with the 施行日 of its own 附則 block."""
    out: list[Transitional] = []
    blocks: dict[str, list[Passage]] = {}
    for p in parts:
        if is_supplementary(p):
            blocks.setdefault(p.scope or p.article, []).append(p)
    for scope, ps in blocks.items():
        text = "\n".join(p.text for p in ps)
        # A 経過措置 belongs to the 施行 sentence before it (several 附則 may run together).
        enacted = parse_date(scope) if scope != "附則" else None
        for s in sentences(text):
            dates = [d for d, _ in enforcement_dates(s)]
            if dates:
                enacted = min(dates)
            t = parse_transitional(s, enacted or rec.start)
            if t:
                t.scope = scope
                out.append(t)
    return out


# --------------------------------------------------------------------------- rag diff

def _article_texts(passages: list[Passage], source: str) -> tuple[dict[str, str], dict[str, str]]:
    """{article key: text (parts joined, NFKC, no spaces)} and {key: caption} of one
    document, keyed as ingest's change report keys them (the article within its scope)."""
    texts: dict[str, list[str]] = {}
    captions: dict[str, str] = {}
    for p in passages:
        if p.source != source or not p.article:
            continue
        key = p.key[:len(p.key) - len(p.paragraph)] if p.paragraph else p.key
        texts.setdefault(key, []).append(re.sub(r"\s+", "", nfkc(p.text)))
        captions.setdefault(key, p.caption)
    return {k: "".join(v) for k, v in texts.items()}, captions


def _pick(editions: list[EditionRecord], given: str | None, what: str) -> EditionRecord | None:
    if not given:
        return None
    for e in editions:
        if e.source == given or e.source.endswith("/" + given.lstrip("./")):
            return e
    for e in editions:
        if e.effective_from == given:
            return e
    found = [e for e in editions if (e.effective_from or "").startswith(given)
             or re.search(rf"(?<![0-9]){re.escape(given)}(?![0-9])", e.source)]
    if len(found) == 1:
        return found[0]
    shown = ", ".join(f"{e.source} ({e.effective_from or '?'})" for e in editions)
    raise LookupError(f"{what} {given!r} is not one edition of this regulation ({shown})")


def diff_editions(table: EditionTable, passages: list[Passage], regulation: str,
                  old: str | None = None, new: str | None = None) -> dict:
    """Articles added, removed and changed from edition `old` to `new` of `regulation`
    (its name, the end of it, or a source path); unchanged ones, and articles only one
    edition's pages cover (an excerpt's), listed apart."""
    groups = table.groups()
    name = regulation if regulation in groups else None
    if name is None:
        rec = table.documents.get(regulation)
        name = rec.regulation if rec and rec.regulation in groups else None
    if name is None:
        found = [g for g in groups if g.endswith(regulation) or regulation in g]
        if len(found) != 1:
            listed = ", ".join(groups) or "none"
            raise LookupError(f"{regulation!r} is {'ambiguous' if found else 'not'} a regulation "
                              f"with several editions in this index (those: {listed})")
        name = found[0]
    editions = groups[name]
    after = _pick(editions, new, "--to") or editions[-1]
    before = _pick(editions, old, "--from")
    if before is None:
        older = [e for e in editions if e is not after and _order(e) < _order(after)]
        if not older:
            raise LookupError(f"{after.source} is the oldest edition of {name}: give --from")
        before = older[-1]
    a, cap_a = _article_texts(passages, before.source)
    b, cap_b = _article_texts(passages, after.source)
    outside = {k for k in set(a) ^ set(b) if article_number(k)
               and not (before.covers(k) and after.covers(k))}
    added, changed, removed = article_changes({k: v for k, v in a.items() if k not in outside},
                                              {k: v for k, v in b.items() if k not in outside})

    def item(k: str, with_before: bool, with_after: bool) -> dict:
        d = {"article": k, "caption": cap_b.get(k) or cap_a.get(k, "")}
        if with_before:
            d["before"] = a[k]
        if with_after:
            d["after"] = b[k]
        return d

    return {"regulation": name,
            "from": {"source": before.source, "effective_from": before.effective_from},
            "to": {"source": after.source, "effective_from": after.effective_from},
            "added": [item(k, False, True) for k in added],
            "removed": [item(k, True, False) for k in removed],
            "changed": [item(k, True, True) for k in changed],
            "unchanged": [k for k in b if k in a and a[k] == b[k]],
            "not_covered": sorted(outside, key=lambda k: article_number(k) or ())}
