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


# --------------------------------------------------------------------------- booklets

def _booklet_pdf(lines: list[str], *, interleaved: bool, per_column: int = 30) -> bytes:
    """A4 pages in two columns with a running header and a page number, drawn either
    column by column or row by row across both columns (the hard case for pypdf)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas
    pdfmetrics.registerFont(UnicodeCIDFont("HeiseiMin-W3"))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(595, 842))
    per_page = 2 * per_column
    for n, start in enumerate(range(0, len(lines), per_page), start=1):
        page = lines[start:start + per_page]
        cols = [page[:per_column], page[per_column:]]
        c.setFont("HeiseiMin-W3", 9)
        c.drawCentredString(297, 810, "令和6年度 学生便覧 Ⅳ 規程集")
        c.drawCentredString(297, 30, f"- {40 + n} -")
        cells = ([(col, row) for row in range(per_column) for col in (0, 1)] if interleaved
                 else [(col, row) for col in (0, 1) for row in range(per_column)])
        for col, row in cells:
            if row < len(cols[col]):
                c.drawString(40 + col * 280, 780 - row * 14, cols[col][row])
        c.showPage()
    c.save()
    return buf.getvalue()


def _column_lines(text: str, width: int = 24) -> list[str]:
    out = []
    for para in text.splitlines():
        para = para.strip()
        out += [para[i:i + width] for i in range(0, len(para), width)] or [""]
    return out


@pytest.mark.parametrize("interleaved", [False, True])
def test_two_column_booklet_pdf_reads_in_column_order(tmp_path, interleaved):
    """Real text (長岡造形大学 転学科規程, corpus/public) set as a two-column booklet."""
    import json

    from conftest import CORPUS
    from ingest.inspect import article_sequence
    from ingest.splitter import split_document
    name = "docs/nagaoka-id-tengakka-kitei.txt"
    src = (CORPUS / "public" / name).read_text(encoding="utf-8")
    gold = next(json.loads(x)["articles"] for x in (CORPUS / "public/boundaries.jsonl")
                .read_text(encoding="utf-8").splitlines() if name in x)
    f = tmp_path / "booklet.pdf"
    f.write_bytes(_booklet_pdf(_column_lines(src), interleaved=interleaved, per_column=10))
    doc = load_document(f)
    assert len(doc.pages) >= 2
    passages = split_document(doc, "booklet.pdf")
    assert article_sequence(passages) == gold
    squash = lambda s: "".join(s.split())  # noqa: E731 - layout whitespace differs
    assert squash("".join(p.text for p in passages)) in squash(src)   # in reading order
    assert not any("学生便覧" in p.text or "- 4" in p.text for p in passages)
    assert doc.title == "長岡造形大学転学科に関する規程"


# --------------------------------------------------------------------------- Word

def _docx_with_article_numbering(path):
    """A 規程 as departments write it in Word: 第N条 and 号 (一, 二) come from list
    numbering, not from the text; 別表 is a table."""
    import docx
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls
    d = docx.Document()
    numbering = d.part.numbering_part.element
    numbering.append(parse_xml(
        f'<w:abstractNum {nsdecls("w")} w:abstractNumId="90">'
        '<w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="decimalFullWidth"/>'
        '<w:lvlText w:val="第%1条"/></w:lvl>'
        '<w:lvl w:ilvl="1"><w:start w:val="1"/><w:numFmt w:val="japaneseCounting"/>'
        '<w:lvlText w:val="%2"/></w:lvl></w:abstractNum>'))
    numbering.append(parse_xml(f'<w:num {nsdecls("w")} w:numId="90"><w:abstractNumId w:val="90"/></w:num>'))

    def numbered(text, level=0):
        p = d.add_paragraph(text)
        p._p.get_or_add_pPr().append(parse_xml(
            f'<w:numPr {nsdecls("w")}><w:ilvl w:val="{level}"/><w:numId w:val="90"/></w:numPr>'))
    d.add_paragraph("東雲大学奨学金規程")
    d.add_paragraph("（目的）")
    numbered("この規程は、学生の奨学金に関し必要な事項を定める。")
    d.add_paragraph("（資格）")
    numbered("奨学金を受けることができる者は、次の各号のいずれかに該当する者とする。")
    numbered("学業成績が優秀な者", 1)
    numbered("経済的理由により修学が困難な者", 1)
    d.add_paragraph("２　前項の選考は、学生委員会が行う。")
    d.add_paragraph("附　則")
    d.add_paragraph("この規程は、令和６年４月１日から施行する。")
    d.add_paragraph("別表第１（第２条関係）")
    table = d.add_table(rows=2, cols=2)
    for r, row in enumerate([("区分", "月額"), ("給付", "30,000円")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.save(path)


def test_docx_numbering_captions_and_tables(tmp_path):
    from ingest.splitter import split_document
    f = tmp_path / "奨学金規程.docx"
    _docx_with_article_numbering(f)
    doc = load_document(f)
    assert doc.kind == "docx" and doc.title == "東雲大学奨学金規程"
    assert "第１条　この規程は" in doc.text and "一　学業成績が優秀な者" in doc.text
    ps = split_document(doc, f.name)
    assert [(p.article, p.caption) for p in ps] == [
        ("第1条", "目的"), ("第2条", "資格"), ("附則", ""), ("別表第1", "第2条関係")]
    assert "二　経済的理由" in ps[1].text and "２　前項の選考" in ps[1].text
    assert "給付 | 30,000円" in ps[3].text


def test_doc_and_rtf_in_a_directory_are_listed_with_how_to_convert(tmp_path):
    from ingest.pipeline import discover
    (tmp_path / "学則.txt").write_text("第1条 本学は大学とする。", encoding="utf-8")
    (tmp_path / "旧規程.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "細則.rtf").write_bytes(b"{\\rtf1}")
    (tmp_path / "drafts").mkdir()
    (tmp_path / "drafts" / "案.txt").write_text("第1条 案", encoding="utf-8")
    (tmp_path / "old.txt").write_text("第1条 旧", encoding="utf-8")
    (tmp_path / ".ragignore").write_text("# not yet in force\ndrafts/\nold.txt\n", encoding="utf-8")
    files, problems = discover([tmp_path])
    assert [f.source for f in files] == ["学則.txt"]
    reasons = {p.source: p.reason for p in problems}
    assert set(reasons) == {"旧規程.doc", "細則.rtf"}
    assert "libreoffice --headless --convert-to docx" in reasons["旧規程.doc"]


def test_a_file_mixing_encodings_names_the_first_bad_line(tmp_path):
    f = tmp_path / "規程.txt"
    f.write_bytes(("第1条 本学は大学とする。\n" * 5).encode() + "第2条 休学は一年以内とする。\n".encode(
        "cp932") + ("第3条 除籍する。\n" * 3).encode())
    with pytest.raises(LoadError, match="line 6 .* is not UTF-8 while most lines are"):
        load_document(f)
