"""Load regulation files into text, page by page.

Each loader returns a `LoadedDocument` (ingest.document); anything wrong with a file
raises `LoadError` whose message names the reason, so the caller can report it with
the path and go on with the other files.
"""
from __future__ import annotations

import re
from pathlib import Path

from .document import LoadedDocument, LoadError, Page
from .japanese import looks_japanese

SUPPORTED_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"}
# Formats departments still hold that we do not read: reported with how to convert them.
CONVERTIBLE = {
    ".doc": "old Word format (.doc); convert it to .docx (Word: 名前を付けて保存 > .docx, or "
            "`libreoffice --headless --convert-to docx FILE`)",
    ".rtf": "RTF; convert it to .docx (`libreoffice --headless --convert-to docx FILE`)",
    ".xls": "Excel; export the sheet as .html or .pdf",
    ".xlsx": "Excel; export the sheet as .html or .pdf",
    ".jtd": "一太郎; save it as .docx or .pdf",
}

# Japanese offices still produce these; tried in this order after UTF-8.
_LEGACY_ENCODINGS = ("cp932", "euc_jp")
# Elements that hold navigation and decoration, not regulation text.
_HTML_NOISE = ("script", "style", "noscript", "nav", "header", "footer", "aside",
               "form", "button", "iframe", "svg", "template")
_HTML_BLOCKS = ("p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                "dt", "dd", "pre", "blockquote", "section", "article", "br", "table")


def load_document(path: Path, data: bytes | None = None) -> LoadedDocument:
    """Load one file. `data` may be passed when the caller has already read the bytes."""
    suffix = path.suffix.lower()
    if suffix in CONVERTIBLE:
        raise LoadError(f"unsupported file type {suffix!r}: {CONVERTIBLE[suffix]}")
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
    elif suffix == ".docx":
        from .docx import load_docx
        doc = load_docx(data)
    else:
        text, encoding = decode_text(data)
        kind = "txt" if suffix == ".txt" else "md"
        text, front = front_matter(text)
        hint = _markdown_title(text) if kind == "md" else ""
        doc = LoadedDocument([Page(text)], hint, kind, encoding,
                             declared_title=front.get("title", ""))
    if not doc.text.strip():
        raise LoadError("no text content")
    _refuse_nul(doc)
    settle_title(doc, path.stem)
    return doc


def _refuse_nul(doc: LoadedDocument) -> None:
    """A NUL character in the loaded text (a UTF-16 file with a binary tail, an HTML page
    that is not one): refused for text formats; stripped, with a warning, from what a
    PDF or Word file's extraction returned."""
    if not any("\x00" in p.text for p in doc.pages):
        return
    if doc.kind in ("txt", "md", "html"):
        raise LoadError(f"binary file (contains NUL characters, the first at character "
                        f"{doc.text.index(chr(0))}), not text")
    for p in doc.pages:
        p.text = p.text.replace("\x00", "")
    doc.warnings.append("NUL characters dropped from the extracted text")


def settle_title(doc: LoadedDocument, fallback: str) -> None:
    """Decide `doc.title`: declared, else found in the text, else the loader's hint
    (<h1>, PDF metadata), else `fallback` (the file name)."""
    from .title import detect_title
    if doc.declared_title:
        doc.title, doc.title_source = doc.declared_title, "declared in the file"
        return
    doc.title, doc.title_source = detect_title(doc.layout(), doc.title)
    if not doc.title:
        doc.title, doc.title_source = fallback, "file name"


_FRONT = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


def front_matter(text: str) -> tuple[str, dict[str, str]]:
    """Strip a leading `---` block of `key: value` lines (Markdown front matter)."""
    m = _FRONT.match(text)
    if not m:
        return text, {}
    meta = {}
    for line in m.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            meta[key.strip().lower()] = value.strip().strip("'\"")
    return text[m.end():], meta


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode UTF-8 / Shift_JIS (CP932) / EUC-JP, detected rather than assumed."""
    try:
        return _decode(data)
    except UnicodeDecodeError as e:   # a BOM that promises more than the bytes keep
        raise LoadError(f"cannot decode as {e.encoding} despite its byte-order mark "
                        f"(bad byte at offset {e.start})") from None


def _decode(data: bytes) -> tuple[str, str]:
    nul = data.find(b"\x00")             # anywhere: a text head may hide a binary tail
    if nul >= 0:
        # UTF-16 text has NULs too; honour its BOM, otherwise this is a binary file.
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return data.decode("utf-16"), "utf-16"
        raise LoadError(f"binary file (contains NUL bytes, the first at byte {nul}), not text")
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
        raise LoadError("cannot decode as UTF-8, Shift_JIS/CP932 or EUC-JP"
                        + _first_bad_line(data))
    # Both legacy codecs may accept the same bytes; the right one yields Japanese,
    # the wrong one mostly half-width katakana and rare symbols.
    score, enc, text = max(candidates, key=lambda c: c[0])
    if score < 0.05:
        raise LoadError("decoded text does not look like Japanese or any known text "
                        f"(best guess {enc}); is this a binary file?")
    return text, enc


def _first_bad_line(data: bytes) -> str:
    """Where a file that mixes encodings stops being UTF-8 (most of it being UTF-8)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        good = sum(1 for ln in data.split(b"\n") if _utf8(ln))
        if good * 2 >= data.count(b"\n") + 1:
            return (f": line {line} (byte {e.start}) is not UTF-8 while most lines are; the "
                    "file mixes encodings (save it again as UTF-8)")
    return ""


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _markdown_title(text: str) -> str:
    for ln in text.splitlines():
        if ln.startswith("# "):
            return ln[2:].strip()
    return ""


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
        title_tag.get_text(strip=True) if title_tag else "")
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
        from .pdf_columns import page_text
        pages = [Page(page_text(page), number=i + 1) for i, page in enumerate(reader.pages)]
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
    doc = LoadedDocument(pages, meta_title.strip(), "pdf")
    empty = [p.number for p in pages if not p.text.strip()]
    if empty:
        doc.warnings.append(f"pages without text: {', '.join(map(str, empty))}")
    return doc
