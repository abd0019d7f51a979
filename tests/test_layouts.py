"""Real layouts: PDF-extracted long lines, spaced and kanji numbers, web list markers,
page furniture, excerpts that start mid-article, 附則 with dates, 別表, titles.

Each snippet is shaped after a real university file of corpus/public (see SOURCES.md).
"""
import pytest

from ingest.layout import read_layout
from ingest.loaders import LoadedDocument, Page, load_document
from ingest.splitter import analyse_document, split_document


def _doc(text: str, pages: list[str] | None = None) -> LoadedDocument:
    if pages:
        return LoadedDocument([Page(t, i + 1) for i, t in enumerate(pages)], "", "pdf")
    return LoadedDocument([Page(text)], "", "txt")


def _articles(text: str, pages=None) -> list[str]:
    return [p.article for p in split_document(_doc(text, pages), "x.txt")]


def test_inline_articles_captions_and_paragraphs_on_one_long_line():
    line = ("の期間を定めて届け出なければならない。 (休学期間の延長)第15条 休学期間を延長しようとする"
            "者は、学長の許可を受けなければならない。2 前項の延長は、第9条第2項に規定する期間を"
            "超えることができない。 (復学)第16条 休学期間が満了したときは、第15条の規定により延長"
            "した場合を除き、復学するものとする。")
    ps = split_document(_doc(line), "x.txt")
    assert [p.article for p in ps] == ["", "第15条", "第16条"]
    assert ps[1].caption == "休学期間の延長" and ps[2].caption == "復学"
    # 項 2 opens a line of its own inside 第15条; 「第9条第2項」「第15条の規定」 stay text.
    assert "\n2 前項の延長は、第9条第2項に規定する" in ps[1].text
    assert "第15条の規定により延長" in ps[2].text


@pytest.mark.parametrize("heading,label", [
    ("第 3 条", "第3条"), ("第三条", "第3条"), ("第十二条の二", "第12条の2"),
    ("第１２条", "第12条"), ("第 12 条の 2", "第12条の2"),
])
def test_article_numbers_with_spaces_kanji_and_full_width(heading, label):
    text = f"(目的)\n{heading} この規程は、学生の休学に関し必要な事項を定める。\n"
    assert _articles(text) == [label]


def test_caption_after_the_number_and_references_at_a_line_start():
    text = ("第8条（審査委員）　審査委員は、教授会が選出する。\n"
            "第9条 審査は、委員会が行う。ただし、\n"
            "第8条に規定する委員が欠けたときは、この限りでない。\n")
    ps = split_document(_doc(text), "x.txt")
    assert [p.article for p in ps] == ["第8条", "第9条"]
    assert ps[0].caption == "審査委員"


def test_web_list_markers_before_articles_and_paragraphs():
    text = ("1. 第17条  本学の授業科目の履修を願い出る者があるときは、聴講生として許可することがある。\n"
            "2. 2 聴講生を許可する時期は、学期の始めとする。\n"
            "3. 第18条  聴講生の履修料は、別に定める。\n")
    ps = split_document(_doc(text), "x.txt")
    assert [p.article for p in ps] == ["第17条", "第18条"]
    assert ps[0].text.startswith("第17条") and "\n2 聴講生を許可する" in ps[0].text


def test_spaced_characters_are_joined():
    text = ("青 森 中 央 学 院 大 学 学 則\n"
            "第 1 章 総 則 ( 目 的 ) 第 1 条 本 学 は 、 教 育 基 本 法 に 基 づ き 人 材 を 養 成 す る 。"
            " ( 学 部 ) 第 2 条 本 学 に 経 営 法 学 部 を 置 く 。\n")
    doc = _doc(text)
    analysis = analyse_document(doc, "x.txt")
    assert [p.article for p in analysis.passages] == ["第1条", "第2条"]
    assert analysis.passages[0].caption == "目的"
    assert "本学は、教育基本法に基づき" in analysis.passages[0].text
    assert analysis.layout.despaced == 2


def test_page_furniture_is_dropped_and_a_cut_sentence_joined():
    text = ("キャンパスガイド2016\n149/190\n\n"
            "学則・学生規則141 (退学)第71条 退学しようとする者は、学長の許可を受けなけれ\n"
            "キャンパスガイド2016\n150/190\n\n"
            "学則・学生規則142 ばならない。 (除籍)第72条 学長は、授業料を納付しない者を除籍する。\n")
    analysis = analyse_document(_doc(text), "x.txt")
    ps = analysis.passages
    assert [p.article for p in ps] == ["第71条", "第72条"]
    assert "許可を受けなければならない。" in ps[0].text          # joined across the break
    assert not any("ガイド" in p.text or "/190" in p.text for p in ps)
    dropped = [ln.text for ln in analysis.layout.dropped]
    assert "149/190" in dropped and "キャンパスガイド2016" in dropped
    assert any(d.startswith("学則・学生規則14") for d in dropped)


def test_glued_page_number_leaves_the_paragraph_number():
    """「学則・学生規則1412 前項の」 is page 141 and 項 2 (pages share one width)."""
    text = ("ガイド\n149/190\n学則・学生規則1412 前項の場合、学長は許可する。 (除籍)第72条 学長は除籍する。\n"
            "ガイド\n150/190\n学則・学生規則142 (卒業)第73条 学長は卒業を認定する。\n")
    ps = split_document(_doc(text), "x.txt")
    assert ps[0].article == "" and ps[0].text.startswith("2 前項の場合")


@pytest.mark.parametrize("furniture", ["- 7 -", "-58-", "12/96", "Ⅳ3", "2024", "令和6年度",
                                       "https://www.example.ac.jp/kitei/"])
def test_lines_of_furniture_are_dropped(furniture):
    text = f"(趣旨)\n第1条 この規程は、休学に関し必要な事項を定める。\n{furniture}\n第2条 休学は1年以内とする。\n"
    analysis = analyse_document(_doc(text), "x.txt")
    assert [ln.text for ln in analysis.layout.dropped] == [furniture]
    assert all(furniture not in p.text for p in analysis.passages)


def test_running_headers_of_pdf_pages_are_dropped():
    pages = [f"学生便覧 2024\n(休学)\n第{n}条 学生は、学長の許可を得て休学することができ\n{n}\n"
             for n in (1, 2, 3)]
    pages = [p.replace("できる\n", "") for p in pages]
    analysis = analyse_document(_doc("", pages), "x.pdf")
    assert [p.article for p in analysis.passages] == ["第1条", "第2条", "第3条"]
    assert sum(ln.text == "学生便覧 2024" for ln in analysis.layout.dropped) == 3


def test_an_excerpt_that_starts_mid_article_keeps_that_text_unlabelled():
    text = ("断書又は詳細な理由書を添え、学長に願い出なければならない。2 前項の場合、学長は許可する。"
            " (休学期間)第66条 休学期間は、1年以内とする。\n")
    ps = split_document(_doc(text), "x.txt")
    assert [p.article for p in ps] == ["", "第66条"]
    assert ps[0].text.startswith("断書又は")


def test_supplementary_provisions_inline_and_then_appendices():
    text = ("第5条 この細則に定めるもののほか、必要な事項は別に定める。 附 則 この細則は、令和6年4月1日から"
            "施行する。 附 則(令和7年3月1日細則第2号) この細則は、令和7年4月1日から施行する。\n"
            "別表第1(第3条関係)\n区分 | 単位数\n講義 | 2\n"
            "様式第2号(第4条関係)\n休学願\n")
    ps = split_document(_doc(text), "x.txt")
    assert [p.article for p in ps] == ["第5条", "附則", "附則", "別表第1", "様式第2号"]
    assert ps[2].heading == "附則(令和7年3月1日細則第2号)"
    assert ps[3].caption == "第3条関係" and "講義 | 2" in ps[3].text


def test_a_booklet_that_runs_into_the_next_regulation_after_its_supplement():
    text = ("第99条 課外活動に関する規程は、別に定める。\n附 則\n1 この学則は、令和5年4月1日から施行する。\n"
            "國學院大學学生懲戒規則\n(目的)\n第1条 この規則は、学生の懲戒に関し必要な事項を定める。\n")
    assert _articles(text) == ["第99条", "附則", "第1条"]


def test_glued_headings_of_a_booklet_index_page():
    text = "(授業料等)第35条第36条第37条(授業料等の減免)第38条第39条(削 除)第40条 本学の授業料は別表とする。\n"
    ps = split_document(_doc(text), "x.txt")
    assert [p.article for p in ps] == ["第35条", "第36条", "第37条", "第38条", "第39条", "第40条"]
    assert ps[3].caption == "授業料等の減免" and ps[5].caption == ""


def test_poorly_split_regulation_is_flagged():
    # Headings glued to the end of the previous text, numbered out of sequence (an
    # excerpt of every other article): the splitter cannot cut them, and says so.
    text = "".join(f"学生は届け出る者とする第{n}条 本学は、学生の{n}を定める" for n in (3, 5, 7, 9, 11, 13))
    text += "。学則第40条の規定を準用する。"
    analysis = analyse_document(_doc(text), "x.txt")
    assert analysis.split == 0 and analysis.mentioned == 6      # 第40条 is a reference
    assert any("6 article headings in the text but only 0" in w for w in analysis.warnings)


# --------------------------------------------------------------------------- titles

@pytest.mark.parametrize("text,title,source", [
    ("○東京科学大学における休学に関する規程\n令和6年10月1日\n規程第92号\n(趣旨)\n第1条 この規程は…定める。\n",
     "東京科学大学における休学に関する規程", "○ title line"),
    ("https://www.example.ac.jp/rules/\n12/96\n東雲大学学位規程\n(趣旨)\n第1条 この規程は…定める。\n",
     "東雲大学学位規程", "regulation name in the text"),
    ("1 東京工業大学学則(抜粋)\n第1条 本学は…とする。\n", "東京工業大学学則", "regulation name in the text"),
    ("多摩美術大学 学生ハンドブック2022\n204/300\n(懲戒)第9条 学長は懲戒する。\n", "x", "file name"),
    # A booklet's running title and page counter before the regulation's own name
    # (issue 19): the counter is dropped and the two lines around it are not joined.
    ("2026年度 学生便覧\n12/96\n架空工科大学学生の休学に関する規程\n(趣旨)\n第1条 この規程は…定める。\n",
     "架空工科大学学生の休学に関する規程", "regulation name in the text"),
    ("青森中央学院大学学則 第1章総則 (目的) 第1条 本学は…養成する。\n", "青森中央学院大学学則",
     "regulation name in the text"),
])
def test_title_is_the_regulations_own_name(tmp_path, text, title, source):
    f = tmp_path / "x.txt"
    f.write_text(text, encoding="utf-8")
    doc = load_document(f)
    assert (doc.title, doc.title_source) == (title, source)


def test_front_matter_declares_the_title_and_is_not_text(tmp_path):
    f = tmp_path / "r.md"
    f.write_text("---\ntitle: 東雲大学奨学金規程\nsource: 学生便覧2024\n---\n"
                 "学生便覧 2024\n(趣旨)\n第1条 この規程は奨学金について定める。\n", encoding="utf-8")
    doc = load_document(f)
    assert doc.title == "東雲大学奨学金規程" and "title:" not in doc.text
    assert split_document(doc, "r.md")[0].title == "東雲大学奨学金規程"


def test_layout_keeps_clean_files_as_they_are():
    text = "（目的）\n第１条　この規程は、履修に関し必要な事項を定める。\n２　前項の規定は準用する。\n"
    layout = read_layout(_doc(text))
    assert [ln.text for ln in layout.lines] == text.splitlines()
    assert layout.broken == 0 and not layout.dropped


def test_bare_numbers_are_page_numbers_only_when_they_count_pages():
    """「12」「13」 between pages go; the 「2」「8」 of a hard-wrapped 「昭和\\n2\\n8\\n年」 stay."""
    text = ("第1条 この規程は、学位規則(昭和\n2\n8\n年文部省令第9号)に基づく。\n12\n"
            "第2条 学位は、博士とする。\n13\n第3条 審査は委員会が行う。\n")
    analysis = analyse_document(_doc(text), "x.txt")
    assert [ln.text for ln in analysis.layout.dropped] == ["12", "13"]
    assert "昭和\n2\n8\n年文部省令" in analysis.passages[0].text
