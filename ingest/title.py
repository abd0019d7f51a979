"""The regulation's own name, as a citation needs it (「富山大学学則 第13条」).

In order: a title the file declares (Markdown front matter) or the admin gives
(`[ingest.titles]` in rag.toml, applied by the pipeline); the ○-prefixed title of a
例規集 page; the first line before the articles that ends in 学則/規則/規程/細則/要項/
要綱/申合せ/内規/基準 (or starts with such a name); the page's <h1>/<title> or the
PDF's metadata; the first plain line before the articles; the file name. Never a URL,
a page counter, a date, a running header (dropped as furniture before this runs) or
an article.
"""
from __future__ import annotations

import re

from .japanese import NUMBER
from .layout import Layout

_KINDS = r"(?:学則|規則|規程|細則|要項|要綱|要領|申合せ|申し合わせ|申合わせ|内規|基準|規約|指針|取扱い|取扱要領)"
_NAME = re.compile(rf"^(\S{{0,40}}?{_KINDS})(?:\s*[(](?:案|抄|抜粋)[)])?(?:\s|第|[-(|｜:：]|$)")
# A booklet's own name or a viewer's label on its pages, never a regulation's title.
_BOOKLET = re.compile(r"便覧|ハンドブック|ガイド|[Gg]uide|GUIDE|手引|要覧|ページ|年度|履修要項|"
                      r"(?:19|20)[0-9]{2}|目次")
_LIST_NUMBER = re.compile(r"^[0-9]{1,3}\.?\s+")
_MARK = re.compile(r"^[○〇◯◎●]\s*")
_NOT_TITLE = re.compile(
    rf"^(?:https?://|www\.)|^第\s*(?:{NUMBER})\s*(?:条|章|節|編|款)|^[(]|^附\s*則|^目\s*次"
    r"|^(?:(?:令和|平成|昭和)\s*(?:[0-9]+|元)|(?:19|20)[0-9]{2})\s*年"
    r"|^[0-9\s/\-.]+$|^(?:この|本|同|前|次の)")
_MAX = 60


def detect_title(layout: Layout, hint: str = "") -> tuple[str, str]:
    """(title, where it came from): found in the text before the first article, else
    `hint`, else ("", "")."""
    head = []
    for ln in layout.lines:
        if re.match(rf"^第\s*(?:{NUMBER})\s*条", ln.norm):
            break
        if ln.norm:
            head.append(ln)
        if len(head) >= 40:
            break
    for ln in head:
        if _MARK.match(ln.norm) and len(ln.norm) <= _MAX + 1:
            return _clean(_MARK.sub("", ln.text.strip())), "○ title line"
    for ln in head:
        norm = _LIST_NUMBER.sub("", ln.norm)
        m = _NAME.match(norm)
        if m and not _NOT_TITLE.match(norm) and "。" not in m.group(1):
            text = _LIST_NUMBER.sub("", re.sub(r"^\s*#{1,6}\s+", "", ln.text.strip()))
            return _clean(_display_prefix(text, len(m.group(1)))), "regulation name in the text"
    hint = _clean(hint)
    if hint and usable(hint):
        return hint, "page title or document metadata"
    for ln in head:
        if usable(ln.norm) and not re.search(r"[。、]", ln.norm) and not _BOOKLET.search(ln.norm):
            return _clean(ln.text.strip()), "first line"
    return "", ""


def usable(title: str) -> bool:
    return bool(title) and len(title) <= _MAX and not _NOT_TITLE.match(title)


def _clean(title: str) -> str:
    return re.sub(r"\s+", " ", title.strip().lstrip("#").strip())


def _display_prefix(text: str, n: int) -> str:
    """The first `n` non-space characters of `text` (its NFKC form was measured)."""
    out, k = [], 0
    for c in text:
        if k >= n:
            break
        out.append(c)
        if not c.isspace():
            k += 1
    return "".join(out)


def declared_title(titles: dict[str, str], source: str) -> str:
    """The admin's title for a document: keyed by its path relative to the ingested
    directory (matched as the end of the path), or by its file name."""
    source = source.replace("\\", "/")
    for key, title in titles.items():
        key = key.strip("/")
        if source == key or source.endswith("/" + key):
            return title
    return titles.get(source.rsplit("/", 1)[-1], "")
