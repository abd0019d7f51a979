"""The regulation splitter on the structures Japanese regulations actually use."""
from ingest.japanese import parse_number, split_sentences
from ingest.loaders import LoadedDocument, Page
from ingest.splitter import split_document

REGULATION = """\
東雲大学サンプル規程
制定　令和２年３月１０日

第１章　総則

（目的）
第１条　この規程は、学則第１５条の規定に基づき、履修に関し必要な事項を定める。

第２章　履修
第１節　登録
（登録）
第２条　学生は、各学期の始めに履修登録をしなければならない。
２　前項の登録は、所定の期間内に行うものとする。
３　第８条に規定する在学期間を超えて登録することはできない。
（上限）
第２条の２　登録できる単位数の上限は、各学期２４単位とする。
一　集中講義
二　卒業研究
第３条　削除
第四十二条（除籍）　学長は、次の者を除籍する。

附　則
この規程は、令和２年４月１日から施行する。
"""


def _doc(text: str, title: str = "", pages: list[str] | None = None) -> LoadedDocument:
    if pages:
        return LoadedDocument([Page(t, i + 1) for i, t in enumerate(pages)], title, "pdf")
    return LoadedDocument([Page(text)], title or text.splitlines()[0], "txt")


def test_one_passage_per_article_with_captions_headings_and_labels():
    ps = split_document(_doc(REGULATION), "規程.txt")
    assert [p.article for p in ps] == ["第1条", "第2条", "第2条の2", "第3条", "第42条", "附則"]
    first, second, branch, deleted, kanji, suppl = ps
    assert first.caption == "目的" and first.heading == "第１章　総則"
    assert second.caption == "登録"
    assert second.heading == "第２章　履修 > 第１節　登録"
    # 項 and 号 stay inside their article; the original (full-width) text is kept.
    assert "２　前項の登録は" in second.text and "３　第８条に規定する" in second.text
    assert second.text.startswith("（登録）\n第２条　学生は")
    assert branch.caption == "上限" and "一　集中講義" in branch.text
    assert deleted.text == "第３条　削除" and deleted.caption == ""
    assert kanji.caption == "除籍"            # inline caption, kanji article number
    assert suppl.heading == "附則" and "令和２年４月１日" in suppl.text
    # The preamble (title + date only) is not a passage.
    assert all("制定" not in p.text for p in ps)


def test_passage_ids_are_stable_and_change_with_content():
    a = split_document(_doc(REGULATION), "規程.txt")
    b = split_document(_doc(REGULATION), "規程.txt")
    assert [p.id for p in a] == [p.id for p in b]
    assert a[1].id.startswith("規程.txt#第2条@")
    changed = split_document(_doc(REGULATION.replace("２４単位", "２０単位")), "規程.txt")
    diff = [x.article for x, y in zip(a, changed) if x.id != y.id]
    assert diff == ["第2条の2"]
    assert len({p.id for p in a}) == len(a)


def test_search_text_carries_title_and_headings_but_text_stays_the_article():
    p = split_document(_doc(REGULATION), "規程.txt")[1]
    assert p.search_text().startswith("東雲大学サンプル規程 第2章 履修 > 第1節 登録 第2条(登録)")
    assert "東雲大学" not in p.text


def test_supplementary_provisions_with_articles():
    text = REGULATION.replace("この規程は、令和２年４月１日から施行する。",
                              "（施行期日）\n第１条　この規程は、令和２年４月１日から施行する。\n"
                              "（経過措置）\n第２条　従前の例による。")
    ps = split_document(_doc(text), "規程.txt")
    assert [p.article for p in ps][-2:] == ["附則第1条", "附則第2条"]
    assert ps[-1].caption == "経過措置" and ps[-1].heading == "附則"


def test_agreement_items_without_articles():
    text = ("履修に関する申合せ\n令和３年４月１日\n次のとおり申し合わせる。\n"
            "（進級要件）\n"
            "１　３年次への進級には、６０単位以上を修得していなければならない。\n"
            "（１）必修科目を含むこと。\n"
            "２　卒業研究の着手には、１００単位以上を要する。\n"
            "３　この申合せは、令和３年４月１日から実施する。\n")
    ps = split_document(_doc(text), "申合せ.txt")
    assert [p.article for p in ps] == ["", "第1項", "第2項", "第3項"]
    assert "（１）必修科目を含むこと。" in ps[1].text
    assert ps[1].caption == "進級要件" and ps[1].text.startswith("（進級要件）\n１")
    assert ps[0].text.endswith("次のとおり申し合わせる。")


def test_prose_falls_back_to_paragraphs_under_markdown_headings():
    text = "# 学生生活ガイド\n\n## 窓口\n\n窓口は平日9時から17時まで開いています。\n\n土日は閉まっています。\n"
    ps = split_document(_doc(text), "guide.md")
    assert [p.article for p in ps] == ["", ""]
    assert ps[0].heading == "窓口" and ps[0].text.startswith("窓口は平日")
    assert ps[0].id.startswith("guide.md#窓口 段落1@") and ps[1].id.startswith("guide.md#窓口 段落2@")


def test_markdown_guide_with_a_numbered_list_stays_prose():
    text = ("# ガイド\n\n## 手続\n\n1. 窓口に行く。\n2. 書類を出す。\n3. 待つ。\n\n"
            "## 図書館\n\n図書館は9時に開く。\n")
    ps = split_document(_doc(text), "guide.md")
    assert [p.article for p in ps] == ["", ""]
    assert [p.heading for p in ps] == ["手続", "図書館"]


def test_table_of_contents_listing_supplementary_provisions():
    text = ("規程\n目次\n第１章　総則（第１条・第２条）\n附則\n"
            "第１章　総則\n第１条　この規程は、目的を定める。\n第２条　定義を定める。\n"
            "附　則\nこの規程は、令和２年４月１日から施行する。\n")
    ps = split_document(_doc(text), "x.txt")
    assert [p.article for p in ps] == ["第1条", "第2条", "附則"]
    assert ps[0].heading == "第１章　総則"


def test_comma_and_period_punctuation_and_caption_without_space():
    text = ("規則\n第１条（目的）この規則は，学生の身分について定める．\n"
            "附　則\nこの規則は，令和２年４月１日から施行する．\n")
    ps = split_document(_doc(text), "x.txt")
    assert [(p.article, p.caption) for p in ps] == [("第1条", "目的"), ("附則", "")]
    long = "規則\n第１条　" + "学生は，所定の手続を経て届け出る．" * 12 + "\n"
    parts = split_document(_doc(long), "x.txt", max_tokens=80, count_tokens=_char_count)
    assert len(parts) > 1 and all(p.text.endswith("．") for p in parts)


def test_a_caption_is_never_a_passage_of_its_own():
    text = "規程\n（目的）\n第１条　" + "この規程は目的を定める。" * 10 + "\n"
    ps = split_document(_doc(text), "x.txt", max_tokens=60, count_tokens=_char_count)
    assert len(ps) > 1
    assert all(p.text.strip() != "（目的）" for p in ps)
    assert ps[0].text.startswith("（目的）\n第１条")


def _char_count(text: str) -> int:
    return len(text)


def test_long_article_splits_at_paragraphs_then_sentences_never_mid_sentence():
    body = "".join(f"{n}　第{n}項の文である。これは長い説明の二文目である。\n" for n in range(2, 9))
    text = f"長い規程\n第１条　最初の項である。\n{body}"
    limit = 70
    ps = split_document(_doc(text), "long.txt", max_tokens=limit, count_tokens=_char_count)
    assert len(ps) > 2
    assert all(len(p.search_text()) <= limit for p in ps)
    assert all(p.article == "第1条" for p in ps)
    assert ps[0].paragraph.startswith("第1項")
    # Every passage ends at a sentence end, and together they give back the article.
    assert all(p.text.endswith("。") for p in ps)
    joined = "".join(p.text for p in ps).replace("\n", "")
    assert joined == text.split("\n", 1)[1].replace("\n", "")
    assert len({p.id for p in ps}) == len(ps)


def test_a_sentence_longer_than_the_limit_is_cut_at_commas():
    text = "規程\n第１条　" + "、".join(["学生は所定の手続を経て"] * 12) + "。\n"
    ps = split_document(_doc(text), "x.txt", max_tokens=60, count_tokens=_char_count)
    assert all(len(p.search_text()) <= 60 for p in ps)
    assert all(p.text.endswith(("、", "。")) for p in ps)


def test_split_parts_use_the_embedders_tokens(tiny_embedder):
    from ingest.embedder import Embedder
    emb = Embedder(str(tiny_embedder))
    text = "規程\n第１条　" + "".join(f"学生は第{n}号の手続を行う。" for n in range(40)) + "\n"
    ps = split_document(_doc(text), "x.txt", max_tokens=64, count_tokens=emb.count_tokens)
    assert len(ps) > 1
    assert all(emb.count_tokens(p.search_text()) <= 64 for p in ps)


def test_pdf_pages_are_kept_and_line_breaks_are_not_sentence_ends():
    pages = ["学生規程\n第１条　この規程は学生の\n身分について定める。\n",
             "第２条　学生は、学則を守らなければならない。\n"]
    ps = split_document(_doc("", "学生規程", pages), "x.pdf")
    assert [(p.article, p.page) for p in ps] == [("第1条", 1), ("第2条", 2)]


def test_japanese_helpers():
    assert parse_number("四十二") == 42 and parse_number("１５") == 15
    assert parse_number("百") == 100 and parse_number("二十") == 20
    assert split_sentences("一文目。二文目！三文目？") == ["一文目。", "二文目！", "三文目？"]
    assert split_sentences("「はい。」と言った。") == ["「はい。」と言った。"]
    # 。 inside brackets does not end the sentence (common in regulations).
    assert split_sentences("在学期間（休学期間を除く。）とする。次。") == [
        "在学期間（休学期間を除く。）とする。", "次。"]
    assert "".join(split_sentences("a。\nb\nc。")) == "a。\nb\nc。"
