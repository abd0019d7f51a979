"""Load regulation files into text, page by page.

Each loader returns a `LoadedDocument`; anything wrong with a file raises `LoadError`
whose message names the reason, so the caller can report it with the path and go on
with the other files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .japanese import looks_japanese

SUPPORTED_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf"}

# Japanese offices still produce these; tried in this order after UTF-8.
_LEGACY_ENCODINGS = ("cp932", "euc_jp")
# Elements that hold navigation and decoration, not regulation text.
_HTML_NOISE = ("script", "style", "noscript", "nav", "header", "footer", "aside",
               "form", "button", "iframe", "svg", "template")
_HTML_BLOCKS = ("p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                "dt", "dd", "pre", "blockquote", "section", "article", "br", "table")


class LoadError(Exception):
    """A file that cannot be indexed; the message says why."""


@dataclass
class Page:
    text: str
    number: int | None = None  # 1-based page number for PDFs


@dataclass
class LoadedDocument:
    pages: list[Page]
    title: str
    kind: str                 # txt | md | html | pdf
    encoding: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.pages)


def load_document(path: Path, data: bytes | None = None) -> LoadedDocument:
    """Load one file. `data` may be passed when the caller has already read the bytes."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise LoadError(f"unsupported file type {suffix or '(none)'!r}; "
                        f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
    if data is None:
        data = path.read_bytes()
    if not data.strip():
        raise LoadError("empty file")
    if suffix == ".pdf":
        doc = _load_pdf(data)
    elif suffix in (".html", ".htm"):
        doc = _load_html(data)
    else:
        text, encoding = decode_text(data)
        kind = "txt" if suffix == ".txt" else "md"
        doc = LoadedDocument([Page(text)], _first_line_title(text, markdown=kind == "md"),
                             kind, encoding)
    if not doc.text.strip():
        raise LoadError("no text content")
    if not doc.title:
        doc.title = path.stem
    return doc


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode UTF-8 / Shift_JIS (CP932) / EUC-JP, detected rather than assumed."""
    try:
        return _decode(data)
    except UnicodeDecodeError as e:   # a BOM that promises more than the bytes keep
        raise LoadError(f"cannot decode as {e.encoding} despite its byte-order mark "
                        f"(bad byte at offset {e.start})") from None


def _decode(data: bytes) -> tuple[str, str]:
    if b"\x00" in data[:8192]:
        # UTF-16 text has NULs too; honour its BOM, otherwise this is a binary file.
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return data.decode("utf-16"), "utf-16"
        raise LoadError("binary file (contains NUL bytes), not text")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    candidates = []
    for enc in _LEGACY_ENCODINGS:
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        candidates.append((looks_japanese(text), enc, text))
    if not candidates:
        raise LoadError("cannot decode as UTF-8, Shift_JIS/CP932 or EUC-JP")
    # Both legacy codecs may accept the same bytes; the right one yields Japanese,
    # the wrong one mostly half-width katakana and rare symbols.
    score, enc, text = max(candidates, key=lambda c: c[0])
    if score < 0.05:
        raise LoadError("decoded text does not look like Japanese or any known text "
                        f"(best guess {enc}); is this a binary file?")
    return text, enc


def _first_line_title(text: str, markdown: bool = False) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if markdown:
        for ln in lines:
            if ln.startswith("# "):
                return ln[2:].strip()
    return lines[0].lstrip("#").strip()[:120] if lines else ""


def _load_html(data: bytes) -> LoadedDocument:
    from bs4 import BeautifulSoup, UnicodeDammit

    dammit = UnicodeDammit(data, ["utf-8", "cp932", "euc_jp"], is_html=True)
    if dammit.unicode_markup is None:
        raise LoadError("cannot decode HTML")
    soup = BeautifulSoup(dammit.unicode_markup, "html.parser")
    title_tag = soup.find("title")
    for tag in soup.find_all(_HTML_NOISE):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": ("navigation", "banner", "contentinfo")}):
        tag.decompose()
    body = soup.find("main") or soup.find("article") or soup.body or soup
    for tag in body.find_all(_HTML_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    lines = [re.sub(r"[ \t\r\f\v]+", " ", ln).strip() for ln in body.get_text().splitlines()]
    text = "\n".join(ln for ln in lines if ln)
    h1 = body.find("h1") if hasattr(body, "find") else None
    title = (h1.get_text(strip=True) if h1 else "") or (
        title_tag.get_text(strip=True) if title_tag else "") or _first_line_title(text)
    return LoadedDocument([Page(text)], title, "html", dammit.original_encoding)


# Text extraction that failed to map glyphs to characters: pdfminer/pypdf emit
# "(cid:123)" runs, U+FFFD, or private-use code points.
_CID = re.compile(r"\(cid:\d+\)")


def extraction_garbage_ratio(text: str) -> float:
    if not text:
        return 0.0
    bad = sum(len(m.group()) for m in _CID.finditer(text))
    bad += sum(1 for c in text if c == "\ufffd" or "\ue000" <= c <= "\uf8ff")
    return bad / len(text)


# A line that is only a page number: "3", "- 3 -", "－３－", "3 / 10", "p. 3".
_PAGE_NUMBER = re.compile(r"^[\s\-－‐―ー(（]*(?:p\.?\s*)?[0-9０-９]+(?:\s*[/／]\s*[0-9０-９]+)?"
                          r"[\s\-－‐―ー)）]*$", re.IGNORECASE)


def _strip_page_furniture(text: str) -> str:
    """Drop page-number lines at the top or bottom of a page: they are not regulation text."""
    lines = text.splitlines()
    while lines and (not lines[-1].strip() or _PAGE_NUMBER.match(lines[-1])):
        lines.pop()
    while lines and (not lines[0].strip() or _PAGE_NUMBER.match(lines[0])):
        lines.pop(0)
    return "\n".join(lines)


def _load_pdf(data: bytes) -> LoadedDocument:
    import io
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    if not data.lstrip().startswith(b"%PDF"):
        raise LoadError("not a PDF file (missing %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Owner-password-only PDFs open with an empty user password.
            try:
                ok = reader.decrypt("")
            except Exception as e:  # noqa: BLE001 - pypdf raises several kinds here
                raise LoadError(f"encrypted PDF ({e})") from None
            if not ok:
                raise LoadError("encrypted PDF (a password is needed to read it)")
        pages = [Page(_strip_page_furniture(page.extract_text() or ""), number=i + 1)
                 for i, page in enumerate(reader.pages)]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise LoadError(f"corrupt PDF: {e}") from None
    text = "\n".join(p.text for p in pages)
    if not text.strip():
        raise LoadError("PDF has no extractable text (scanned image? run OCR first)")
    ratio = extraction_garbage_ratio(text)
    if ratio > 0.05:
        raise LoadError(f"PDF text extraction is garbage ({ratio:.0%} unmapped glyphs such as "
                        "'(cid:NNN)'): the font has no Unicode map; export the PDF again "
                        "with embedded fonts, or index a text/HTML version")
    title = meta_title.strip() or _first_line_title(text)
    doc = LoadedDocument(pages, title, "pdf")
    empty = [p.number for p in pages if not p.text.strip()]
    if empty:
        doc.warnings.append(f"pages without text: {', '.join(map(str, empty))}")
    return doc
