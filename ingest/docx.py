"""Word (.docx) regulations: paragraphs in order, Word's automatic numbering written
out (a 規程 often numbers its 第N条, 項 and 号 with list numbering, which is not in the
paragraph text), and tables as lines of cells (別表 are tables).
"""
from __future__ import annotations

import io
import re

from .document import LoadedDocument, LoadError, Page

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_FULL = str.maketrans("0123456789", "０１２３４５６７８９")
_KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン"
_IROHA = "イロハニホヘトチリヌルヲワカヨタレソツネナラムウヰノオクヤマケフコエテアサキユメミシヱヒモセス"


def load_docx(data: bytes) -> LoadedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as e:
        raise LoadError(f"corrupt or not a Word .docx file ({e})") from None
    except Exception as e:  # noqa: BLE001 - zipfile/lxml raise many kinds on damaged files
        raise LoadError(f"corrupt Word .docx file ({type(e).__name__}: {e})") from None
    numbering = _Numbering(document)
    lines: list[str] = []
    for child in document.element.body.iterchildren():
        if child.tag == _W + "p":
            text = _paragraph_text(child)
            number = numbering.label(child, document)
            if number and text.strip():
                text = f"{number}　{text.strip()}" if not number.endswith(("　", " ")) else number + text
            lines.append(text)
        elif child.tag == _W + "tbl":
            for row in child.iter(_W + "tr"):
                cells = [" ".join(_paragraph_text(p).strip() for p in tc.iter(_W + "p")).strip()
                         for tc in row.iter(_W + "tc")]
                if any(cells):
                    lines.append(" | ".join(cells))
            lines.append("")
    title = (document.core_properties.title or "").strip()
    return LoadedDocument([Page("\n".join(lines))], title, "docx")


def _paragraph_text(p) -> str:
    out = []
    for node in p.iter():
        if node.tag == _W + "t":
            out.append(node.text or "")
        elif node.tag == _W + "tab":
            out.append("　")
        elif node.tag in (_W + "br", _W + "cr"):
            out.append("\n")
    return "".join(out)


class _Numbering:
    """Word's list numbering: the label each numbered paragraph shows (第3条, ２, (1), 一)."""

    def __init__(self, document):
        self.levels: dict[str, dict[int, tuple[int, str, str]]] = {}   # numId -> ilvl -> spec
        self.counters: dict[str, list[int]] = {}
        try:
            root = document.part.numbering_part.element
        except (KeyError, NotImplementedError, AttributeError):
            return
        abstract = {}
        for a in root.iter(_W + "abstractNum"):
            abstract[a.get(_W + "abstractNumId")] = self._levels(a)
        for num in root.iter(_W + "num"):
            ref = num.find(_W + "abstractNumId")
            if ref is None:
                continue
            levels = dict(abstract.get(ref.get(_W + "val"), {}))
            for override in num.iter(_W + "lvlOverride"):
                start = override.find(_W + "startOverride")
                ilvl = int(override.get(_W + "ilvl", "0"))
                if start is not None and ilvl in levels:
                    _, fmt, text = levels[ilvl]
                    levels[ilvl] = (int(start.get(_W + "val", "1")), fmt, text)
            self.levels[num.get(_W + "numId")] = levels

    @staticmethod
    def _levels(abstract) -> dict[int, tuple[int, str, str]]:
        out = {}
        for lvl in abstract.iter(_W + "lvl"):
            def val(tag, default):
                el = lvl.find(_W + tag)
                return el.get(_W + "val", default) if el is not None else default
            out[int(lvl.get(_W + "ilvl", "0"))] = (int(val("start", "1")), val("numFmt", "decimal"),
                                                    val("lvlText", ""))
        return out

    def label(self, p, document) -> str:
        num_id, ilvl = self._num_pr(p, document)
        if num_id is None or num_id not in self.levels or ilvl not in self.levels[num_id]:
            return ""
        levels = self.levels[num_id]
        counters = self.counters.setdefault(num_id, [0] * 9)
        start = levels[ilvl][0]
        counters[ilvl] = counters[ilvl] + 1 if counters[ilvl] else start
        for deeper in range(ilvl + 1, 9):
            counters[deeper] = 0
        text = levels[ilvl][2]

        def fill(m: re.Match) -> str:
            k = int(m.group(1)) - 1
            spec = levels.get(k)
            value = counters[k] or (spec[0] if spec else 1)
            return _format(value, spec[1] if spec else "decimal")
        return re.sub(r"%([1-9])", fill, text)

    @staticmethod
    def _num_pr(p, document) -> tuple[str | None, int]:
        ppr = p.find(_W + "pPr")
        num_pr = ppr.find(_W + "numPr") if ppr is not None else None
        if num_pr is None and ppr is not None:
            # Numbering can come from the paragraph's style.
            style = ppr.find(_W + "pStyle")
            if style is not None:
                try:
                    st = document.styles[style.get(_W + "val")]
                    spr = st.element.find(_W + "pPr")
                    num_pr = spr.find(_W + "numPr") if spr is not None else None
                except KeyError:
                    num_pr = None
        if num_pr is None:
            return None, 0
        nid = num_pr.find(_W + "numId")
        lvl = num_pr.find(_W + "ilvl")
        return (nid.get(_W + "val") if nid is not None else None,
                int(lvl.get(_W + "val", "0")) if lvl is not None else 0)


def _format(n: int, fmt: str) -> str:
    if fmt in ("decimal", "decimalHalfWidth"):
        return str(n)
    if fmt == "decimalFullWidth" or fmt == "decimalFullWidth2":
        return str(n).translate(_FULL)
    if fmt in ("japaneseCounting", "ideographTraditional", "chineseCounting",
               "chineseCountingThousand", "japaneseLegal"):
        return _kanji(n)
    if fmt == "ideographDigital" or fmt == "japaneseDigitalTenThousand":
        return "".join("〇一二三四五六七八九"[int(d)] for d in str(n))
    if fmt == "decimalEnclosedParen":
        return f"({n})"
    if fmt == "decimalEnclosedCircle" or fmt == "decimalEnclosedCircleChinese":
        return chr(0x2460 + n - 1) if 1 <= n <= 20 else f"({n})"
    if fmt in ("aiueo", "aiueoFullWidth"):
        return _KANA[(n - 1) % len(_KANA)]
    if fmt in ("iroha", "irohaFullWidth"):
        return _IROHA[(n - 1) % len(_IROHA)]
    if fmt == "lowerLetter":
        return chr(ord("a") + (n - 1) % 26)
    if fmt == "upperLetter":
        return chr(ord("A") + (n - 1) % 26)
    if fmt in ("lowerRoman", "upperRoman"):
        r = _roman(n)
        return r.lower() if fmt == "lowerRoman" else r
    if fmt == "bullet":
        return "・"
    return "" if fmt == "none" else str(n)


def _kanji(n: int) -> str:
    digits = "〇一二三四五六七八九"
    if n < 10:
        return digits[n]
    out = ""
    for value, name in ((1000, "千"), (100, "百"), (10, "十")):
        q, n = divmod(n, value)
        if q:
            out += ("" if q == 1 else digits[q]) + name
    return out + (digits[n] if n else "")


def _roman(n: int) -> str:
    out = ""
    for value, sym in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                       (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out += sym
            n -= value
    return out
