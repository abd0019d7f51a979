"""Numeric claims: the numbers, dates, durations and amounts of an answer, checked
against the passages the prompt carried.

A small model that says 「15単位で除籍されます」 when the article says 16 is wrong in the
one place a student acts on. Every number-bearing claim of the answer (16単位, 4年, 7月1日,
3分の2, 令和6年4月1日, 50,000円, 2週間) must occur in some packed passage, or in the
question itself (「半年で15単位」 may be repeated back); one that does not marks the answer
要確認, with the deciding clause shown. Both sides are normalised the same way (NFKC,
漢数字 -> digits, no thousands separators, 箇月/ヶ月/月 as one unit), so 「十六単位」 in an
article supports 「16単位」 in an answer.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ingest.japanese import nfkc, parse_number

from .evidence import Evidence, _passage, select_evidence

_KANJI_NUM = "〇一二三四五六七八九十百千万億"
# Units after a number, longest first; each maps to the unit it is compared as.
_UNITS = {"単位": "単位", "年間": "年", "年度": "年度", "年次": "年次", "年": "年",
          "か月": "月", "ヵ月": "月", "ヶ月": "月", "カ月": "月", "ケ月": "月", "箇月": "月",
          "ケ月間": "月", "か月間": "月", "ヶ月間": "月", "箇月間": "月", "月間": "月",
          "月": "月", "週間": "週", "週": "週", "日間": "日", "日": "日", "時間": "時間",
          "分間": "分", "分": "分", "円": "円", "回": "回", "名": "人", "人": "人", "歳": "歳",
          "科目": "科目", "%": "%", "パーセント": "%", "割": "割", "倍": "倍", "学期": "学期",
          "時限": "時限", "コマ": "コマ", "点": "点", "単位時間": "単位時間"}
_UNIT_RE = "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
_ERA = r"(?:令和|平成|昭和|大正|明治)"

# A run of kanji numerals is a number only where a number can stand: before a unit, 分の,
# or after 第 (第十六条). 「一部」「一般」「千葉」 stay words.
_KANJI_RUN = re.compile(rf"(?<=第)[{_KANJI_NUM}]+|[{_KANJI_NUM}]+(?=分の|{_UNIT_RE})"
                        rf"|(?<=分の)[{_KANJI_NUM}]+")
_MIXED = re.compile(r"[0-9]+[万億千百][0-9万億千百]*")          # 5万円, 1万5000円, 3千円

_CLAIM = re.compile(
    rf"(?P<date>(?:{_ERA}[0-9]+年|[0-9]{{4}}年)?[0-9]{{1,2}}月[0-9]{{1,2}}日)"
    rf"|(?P<year>{_ERA}[0-9]+年度?)"
    rf"|(?P<frac>[0-9]+分の[0-9]+|[0-9]+/[0-9]+)"
    rf"|(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>{_UNIT_RE})?")


@dataclass(frozen=True)
class Claim:
    text: str       # as written in the answer, answer[start:end]
    start: int
    end: int
    value: str      # normalised: 16単位, 7月1日, 3分の2, 令和6年4月1日, 月:2 (2箇月)
    kind: str       # date | year | fraction | quantity | number

    def to_json(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end,
                "value": self.value, "kind": self.kind}


def _kanji_value(run: str) -> int:
    """五万 -> 50000, 一万五千 -> 15000, 十六 -> 16 (parse_number has no 万/億)."""
    total, rest = 0, run
    for unit, mult in (("億", 10 ** 8), ("万", 10 ** 4)):
        if unit in rest:
            head, rest = rest.split(unit, 1)
            total += (parse_number(head) if head else 1) * mult
    return total + (parse_number(rest) if rest else 0)


def normalise(text: str) -> tuple[str, list[int]]:
    """(normalised text, for each of its characters the index of the original character
    it came from): NFKC, no whitespace, 元年 -> 1年, 漢数字 -> digits, 50,000 -> 50000,
    5万 -> 50000."""
    chars: list[tuple[str, int]] = [(d, i) for i, c in enumerate(text) for d in nfkc(c)]

    def sub(pattern: re.Pattern, repl) -> None:
        s = "".join(c for c, _ in chars)
        out, last = [], 0
        for m in pattern.finditer(s):
            new = repl(m)
            if new is None:
                continue
            out.extend(chars[last:m.start()])
            out.extend((c, chars[m.start()][1]) for c in new)
            last = m.end()
        out.extend(chars[last:])
        chars[:] = out

    # Japanese needs no spaces; extracted text has them inside numbers (「6 月30 日」,
    # 「１ ６ 単 位」 from sites that space every character).
    sub(re.compile(r"\s+"), lambda m: "")
    sub(re.compile(rf"(?<={_ERA})元(?=年)"), lambda m: "1")
    sub(re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))"), lambda m: "")
    # Digits mixed with 万/千 first: otherwise the 千 of 5千円 would read as a number itself.
    sub(_MIXED, lambda m: _safe(lambda: str(_kanji_value(
        re.sub(r"[0-9]+", lambda d: _digits_to_kanji(d.group()), m.group())))))
    sub(_KANJI_RUN, lambda m: _safe(lambda: str(_kanji_value(m.group()))))
    return "".join(c for c, _ in chars), [i for _, i in chars]


def _safe(f):
    try:
        return f()
    except ValueError:
        return None


def _digits_to_kanji(digits: str) -> str:
    """15 -> 一五, positional, which parse_number reads back (for 1万5000 mixtures)."""
    return "".join("〇一二三四五六七八九"[int(d)] for d in digits)


def extract_claims(text: str) -> list[Claim]:
    """The number-bearing claims of `text`, in order. Article numbers (第16条, 第2項) are
    citations, not claims; a bare number counts only with two digits or a decimal
    point, so list markers (1. 2.) are not claims."""
    norm, index = normalise(text)
    out = []
    for m in _CLAIM.finditer(norm):
        if m.start() > 0 and norm[m.start() - 1] in ".0123456789":
            continue
        # 第16条, 第2項, 第3号 are citations; 第3年次, 第2学期 are claims like 3年次.
        if m.start() > 0 and norm[m.start() - 1] == "第" and norm[m.end():m.end() + 1] in (
                "条", "項", "号", "章", "節", "款", "編", "の"):
            continue
        if m.group("date"):
            kind, value = "date", m.group("date")
        elif m.group("year"):
            kind, value = "year", m.group("year")
        elif m.group("frac"):
            a, _, b = m.group("frac").partition("/")
            kind, value = "fraction", (f"{b}分の{a}" if b else m.group("frac"))
        else:
            num, unit = m.group("num"), m.group("unit")
            if unit:
                kind, value = "quantity", f"{_UNITS[unit]}:{_number(num)}"
            elif len(num) >= 2 or "." in num:
                if norm[m.end():m.end() + 1] in ("条", "項", "号"):
                    continue
                kind, value = "number", _number(num)
            else:
                continue
        start, end = index[m.start()], index[m.end() - 1] + 1
        out.append(Claim(text[start:end].strip(), start, end, value, kind))
    return out


def _number(num: str) -> str:
    """3.0 == 3, 050 == 50: compare values, not spellings."""
    v = float(num)
    return str(int(v)) if v == int(v) else repr(v)


def _values(text: str) -> set[str]:
    """Everything a claim may be matched against in `text`: each claim's value, the
    parts of a full date (4月1日 and 令和6年 of 令和6年4月1日), and each bare number."""
    out: set[str] = set()
    for c in extract_claims(text):
        out.add(c.value)
        if c.kind == "date":
            m = re.fullmatch(rf"({_ERA}[0-9]+年|[0-9]{{4}}年)?([0-9]+月[0-9]+日)", c.value)
            if m:
                out.add(m.group(2))
                if m.group(1):
                    out.add(m.group(1))
        if c.kind == "quantity":
            out.add(c.value.split(":", 1)[1])       # 16 of 16単位 supports a bare 16
    norm, _ = normalise(text)
    out.update(_number(n) for n in re.findall(r"[0-9]+(?:\.[0-9]+)?", norm))
    return out


def numbers_in(text: str) -> set[str]:
    """The claim values of `text` (what evidence scoring compares)."""
    return {c.value for c in extract_claims(text)}


@dataclass
class Grounding:
    grounded: bool
    claims: list[Claim] = field(default_factory=list)
    unsupported: list[Claim] = field(default_factory=list)
    clause: Evidence | None = None     # the deciding sentence, shown with 要確認

    def to_json(self) -> dict:
        return {"grounded": self.grounded, "claims": [c.text for c in self.claims],
                "unsupported": [c.to_json() for c in self.unsupported],
                "clause": self.clause.to_json() if self.clause else None}


def check_numbers(answer: str, sources: Sequence, question: str = "",
                  evidence: Sequence[Evidence] | None = None) -> Grounding:
    """Which claims of `answer` occur in no packed passage and not in the question.
    `clause` is the best evidence sentence (given, or chosen here) when any claim is
    unsupported."""
    claims = extract_claims(answer)
    if not claims:
        return Grounding(True)
    have = _values(question)
    for src in sources:
        have |= _values(_passage(src).text)
    # A bare number is in `have` whenever the passages hold it with any unit.
    unsupported = [c for c in claims if c.value not in have]
    clause = None
    if unsupported:
        best = list(evidence) if evidence else select_evidence(question, answer, sources, k=1)
        clause = best[0] if best else None
    return Grounding(not unsupported, claims, unsupported, clause)


STRICT_PREFIX = "回答に条文にない数値が含まれていたため、該当する条文をそのまま引用します："
STRICT_NO_CLAUSE = ("回答に条文にない数値が含まれており、該当する条文も特定できなかったため、"
                    "回答を控えます。担当窓口に確認してください。")


def strict_answer(grounding: Grounding) -> str | None:
    """The answer that replaces an ungrounded one under --strict-grounding: the deciding
    clause, quoted and labelled as a quotation with its article; None when grounded."""
    if grounding.grounded:
        return None
    c = grounding.clause
    if c is None:
        return STRICT_NO_CLAUSE
    return f"{STRICT_PREFIX}\n「{c.quote}」（{c.title}{c.label}より引用）"
