"""Loaders: encodings detected, HTML content without navigation, PDFs with pages,
and every kind of bad file reported with its reason."""
import io

import pytest

from ingest.loaders import LoadError, decode_text, extraction_garbage_ratio, load_document

TEXT = "東雲大学学則\n（除籍）\n第４２条　学長は、授業料を納付しない者を除籍する。\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp932", "euc_jp"])
def test_japanese_encodings_are_detected(tmp_path, encoding):
    f = tmp_path / "学則.txt"
    f.write_bytes(TEXT.encode(encoding))
    doc = load_document(f)
    assert doc.text == TEXT and doc.title == "東雲大学学則"
    assert doc.encoding == encoding


def test_shift_jis_specific_characters(tmp_path):
    # ①, ～ and 髙 exist in CP932 but not in plain Shift_JIS/EUC-JP.
    text = "規程①　髙橋～\n第１条　この規程は、履修について定める。\n"
    f = tmp_path / "a.txt"
    f.write_bytes(text.encode("cp932"))
    assert load_document(f).text == text


def test_html_keeps_content_and_drops_navigation(tmp_path):
    f = tmp_path / "r.html"
    f.write_text("""<html><head><meta charset="utf-8"><title>規程 | 規程集</title></head><body>
      <header>東雲大学 規程集</header><nav><a href="/">ホーム</a><a>規程一覧</a></nav>
      <main><h1>授業料規程</h1><p>（目的）</p><p>第１条　この規程は授業料について定める。</p>
      <p>２　前項の規定は、科目等履修生にも適用する。</p></main>
      <footer>Copyright 東雲大学</footer><script>var x = "第９条";</script></body></html>""",
                 encoding="utf-8")
    doc = load_document(f)
    assert doc.title == "授業料規程"
    assert "第１条　この規程は授業料について定める。" in doc.text.splitlines()
    assert "２　前項の規定は、科目等履修生にも適用する。" in doc.text.splitlines()
    for noise in ("ホーム", "規程一覧", "Copyright", "第９条", "規程集"):
        assert noise not in doc.text


def test_html_in_shift_jis(tmp_path):
    f = tmp_path / "r.htm"
    f.write_bytes('<html><head><meta charset="Shift_JIS"></head><body><p>第１条　目的を定める。</p>'
                  '</body></html>'.encode("cp932"))
    assert "第１条　目的を定める。" in load_document(f).text


def _pdf(pages: list[list[str]], font: str | None = None, encrypt: str | None = None) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, encrypt=encrypt)
    for lines in pages:
        if font:
            c.setFont(font, 11)
        y = 800
        for line in lines:
            c.drawString(50, y, line)
            y -= 16
        c.showPage()
    c.save()
    return buf.getvalue()


def test_pdf_pages_and_text(tmp_path):
    f = tmp_path / "r.pdf"
    f.write_bytes(_pdf([["Regulation", "Article 1 purpose."], ["Article 2 scope."]]))
    doc = load_document(f)
    assert [p.number for p in doc.pages] == [1, 2]
    assert "Article 2 scope." in doc.pages[1].text


def test_shipped_pdf_extracts_back_its_source_text():
    from conftest import CORPUS, REPO
    src = (REPO / "scripts/corpus/学生懲戒規程.txt").read_text(encoding="utf-8")
    from ingest.layout import read_layout
    doc = load_document(CORPUS / "学生懲戒規程.pdf")
    layout = read_layout(doc)       # page numbers are furniture, dropped and reported
    squash = lambda s: "".join(s.split())  # noqa: E731 - layout whitespace differs
    assert squash("".join(ln.text for ln in layout.lines)) == squash(src)
    assert [ln.norm for ln in layout.dropped] == ["- 1 -", "- 2 -", "- 3 -"]
    assert len(doc.pages) >= 2


@pytest.mark.parametrize("name,data,reason", [
    ("empty.txt", b"", "empty file"),
    ("blank.md", b"  \n\n ", "empty file"),
    ("bin.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10, "binary file"),
    ("latin.txt", bytes(range(0x80, 0x100)) * 4, "cannot decode"),
    ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage", "corrupt PDF"),
    ("fake.pdf", b"just text, named .pdf", "not a PDF"),
    ("data.docx", b"PK\x03\x04", "corrupt Word .docx"),
    ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "convert it to .docx"),
    ("rule.rtf", b"{\\rtf1\\ansi x}", "RTF; convert it to .docx"),
    ("data.xyz", b"text", "unsupported file type"),
])
def test_bad_files_raise_with_reason(tmp_path, name, data, reason):
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(LoadError, match=reason):
        load_document(f)


def test_encrypted_pdf_is_reported(tmp_path):
    f = tmp_path / "secret.pdf"
    f.write_bytes(_pdf([["secret"]], encrypt="userpass"))
    with pytest.raises(LoadError, match="encrypted PDF"):
        load_document(f)


def test_scanned_pdf_without_text_is_reported(tmp_path):
    from reportlab.pdfgen import canvas
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.rect(50, 50, 200, 200, fill=1)
    c.showPage()
    c.save()
    f = tmp_path / "scan.pdf"
    f.write_bytes(buf.getvalue())
    with pytest.raises(LoadError, match="no extractable text"):
        load_document(f)


def test_garbage_extraction_is_detected():
    assert extraction_garbage_ratio("(cid:12)(cid:34)(cid:56) 第1条") > 0.5
    assert extraction_garbage_ratio("第１条　目的") == 0


def test_decode_refuses_non_japanese_bytes():
    with pytest.raises(LoadError):
        decode_text(bytes([0xA1, 0xA2, 0xFE]) * 50 + b"\xff")
