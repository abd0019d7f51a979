#!/usr/bin/env python3
"""Build corpus/学生懲戒規程.pdf from scripts/corpus/学生懲戒規程.txt.

The UTF-8 text next to this script is the source of truth; the PDF in corpus/
is generated from it (one source line per PDF line, long lines wrapped) with
an EMBEDDED Japanese TrueType font, so that text extraction (pypdf) gives the
Japanese text back.  reportlab's built-in CID fonts (HeiseiMin-W3 etc.) are
not embedded and are deliberately not used.

Usage:
    python scripts/corpus/make_sample_pdf.py            # build the PDF
    python scripts/corpus/make_sample_pdf.py --check    # verify existing PDF
    python scripts/corpus/make_sample_pdf.py --font /path/to/font.ttf

Needs a Japanese TTF/OTF (TrueType outlines) font only for building, e.g.
`apt-get install -y fonts-ipaexfont`.  --check needs only pypdf.

Layout facts a parser must cope with:
  * every page ends with a centred footer line "- N -" (page number);
  * a source line longer than the text width is wrapped, so one article
    paragraph can span several PDF lines, and may continue on the next page.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SOURCE = HERE / "学生懲戒規程.txt"
OUTPUT = REPO / "corpus" / "学生懲戒規程.pdf"

FONT_CANDIDATES = [
    "/usr/share/fonts/opentype/ipaexfont-mincho/ipaexm.ttf",
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-mincho.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/ipaexfont/ipaexm.ttf",
    "/usr/share/fonts/truetype/ipafont/ipam.ttf",
    "/Library/Fonts/ipaexm.ttf",
    "C:/Windows/Fonts/msmincho.ttc",
]
FONT_GLOBS = [
    "/usr/share/fonts/**/ipaex*.ttf",
    "/usr/share/fonts/**/ipa*.ttf",
    "/usr/share/fonts/**/*Japanese*.ttf",
    "/usr/local/share/fonts/**/*.ttf",
    os.path.expanduser("~/.fonts/**/*.ttf"),
    os.path.expanduser("~/.local/share/fonts/**/*.ttf"),
]

PAGE_FOOTER_RE = re.compile(r"^\s*-\s*\d+\s*-\s*$")

# Characters that must not start a line (simple kinsoku): they are hung onto
# the end of the previous line instead.
NO_LINE_START = set("、。，．）」』】〕・：；？！ー")


def find_font(explicit: str | None) -> str:
    if explicit:
        if not os.path.isfile(explicit):
            sys.exit(f"font not found: {explicit}")
        return explicit
    for path in FONT_CANDIDATES:
        if os.path.isfile(path):
            return path
    for pattern in FONT_GLOBS:
        for path in sorted(glob.glob(pattern, recursive=True)):
            return path
    # last resort: ask fontconfig
    try:
        import subprocess

        out = subprocess.run(
            ["fc-list", ":lang=ja", "file"], capture_output=True, text=True, check=False
        ).stdout
        for line in out.splitlines():
            path = line.split(":")[0].strip()
            if path.lower().endswith(".ttf") and os.path.isfile(path):
                return path
    except OSError:
        pass
    sys.exit(
        "no Japanese TrueType font found; install one "
        "(apt-get install -y fonts-ipaexfont) or pass --font PATH"
    )


def wrap(text: str, width: float, font: str, size: float) -> list[str]:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    lines: list[str] = []
    cur = ""
    for ch in text:
        if cur and stringWidth(cur + ch, font, size) > width and ch not in NO_LINE_START:
            lines.append(cur)
            cur = ch
        else:
            cur += ch
    lines.append(cur)
    return lines


def build(font_path: str, out: Path) -> int:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    font = "JPFont"
    pdfmetrics.registerFont(TTFont(font, font_path))

    page_w, page_h = A4
    left, right, top, bottom = 25 * mm, 25 * mm, 25 * mm, 25 * mm
    size, leading = 11.0, 19.0
    title_size = 15.0
    text_w = page_w - left - right

    src_lines = SOURCE.read_text(encoding="utf-8").splitlines()
    out.parent.mkdir(parents=True, exist_ok=True)
    c = canvas.Canvas(str(out), pagesize=A4, invariant=1)
    c.setTitle(src_lines[0].strip())
    c.setAuthor("東雲大学")
    c.setSubject("サンプル規程（架空の大学）")

    page = 1
    y = page_h - top

    def footer() -> None:
        c.setFont(font, 9)
        c.drawCentredString(page_w / 2, bottom / 2, f"- {page} -")

    def newline(h: float) -> None:
        nonlocal y, page
        if y - h < bottom:
            footer()
            c.showPage()
            page += 1
            y = page_h - top
        y -= h

    first = True
    for raw in src_lines:
        line = raw.rstrip()
        if first and line:
            # title: larger, centred
            newline(title_size * 1.6)
            c.setFont(font, title_size)
            c.drawCentredString(page_w / 2, y, line)
            first = False
            continue
        if not line:
            newline(leading * 0.6)
            continue
        for part in wrap(line, text_w, font, size):
            newline(leading)
            c.setFont(font, size)
            c.drawString(left, y, part)
    footer()
    c.showPage()
    c.save()
    return page


def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKC", s)
    return "".join(ch for ch in s if not ch.isspace())


def check(pdf: Path) -> bool:
    from pypdf import PdfReader

    reader = PdfReader(str(pdf))
    n = len(reader.pages)
    ok = True
    if n < 2:
        print(f"FAIL: only {n} page(s); need at least 2")
        ok = False
    pages_text = []
    for i, page in enumerate(reader.pages):
        text = page.extract_text() or ""
        lines = text.splitlines()
        # footer must be the last non-empty line and carry the page number
        nonempty = [l for l in lines if l.strip()]
        if not nonempty or not PAGE_FOOTER_RE.match(nonempty[-1]) or str(i + 1) not in nonempty[-1]:
            print(f"FAIL: page {i + 1}: footer '- {i + 1} -' not found as last line")
            ok = False
        else:
            lines.remove(nonempty[-1])
        body = "\n".join(lines)
        if not re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", body):
            print(f"FAIL: page {i + 1}: no Japanese text extracted")
            ok = False
        pages_text.append(body)

    src = SOURCE.read_text(encoding="utf-8")
    want = _norm(src)
    got = _norm("".join(pages_text))
    if want != got:
        ok = False
        k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        print("FAIL: extracted text differs from source (modulo whitespace/NFKC)")
        print("  source   :", want[max(0, k - 30): k + 30])
        print("  extracted:", got[max(0, k - 30): k + 30])
    # each page's text must be a contiguous piece of the source, in order
    pos = 0
    for i, body in enumerate(pages_text):
        piece = _norm(body)
        j = want.find(piece, pos)
        if j != pos:
            print(f"FAIL: page {i + 1} text is not the next contiguous part of the source")
            ok = False
        pos = j + len(piece) if j >= 0 else pos
    # every source line (first 12 chars) must be findable on some page, exactly
    src_lines = [l for l in src.splitlines() if l.strip()]
    for l in src_lines:
        if _norm(l)[:12] not in got:
            print(f"FAIL: line not found in extraction: {l[:30]}")
            ok = False
    arts = re.findall(r"^第[0-9]+条(?:の[0-9]+)?", unicodedata.normalize("NFKC", "\n".join(pages_text)), re.M)
    print(f"{pdf.name}: {n} pages, {len(arts)} article lines extracted, "
          f"{len(got)} non-space chars (source {len(want)})")
    for i, body in enumerate(pages_text):
        first_line = next((l for l in body.splitlines() if l.strip()), "")
        print(f"  page {i + 1} starts: {first_line[:40]}")
    print("OK" if ok else "CHECK FAILED")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--font", help="path to a Japanese TrueType font (.ttf)")
    ap.add_argument("--out", default=str(OUTPUT), help="output PDF path")
    ap.add_argument("--check", action="store_true",
                    help="verify the PDF against the source instead of building it")
    ap.add_argument("--build-and-check", action="store_true", help="build, then verify")
    args = ap.parse_args()
    out = Path(args.out)
    if args.check:
        sys.exit(0 if check(out) else 1)
    font_path = find_font(args.font)
    pages = build(font_path, out)
    print(f"wrote {out} ({pages} pages) with embedded font {font_path}")
    if args.build_and_check:
        sys.exit(0 if check(out) else 1)


if __name__ == "__main__":
    main()
