"""Statute text as e-Gov displays it: 条のNのM, 項, 号, 附則 per amending law, 削除
ranges, 別表, and cross-references that are never headings (issue 19)."""
from collections import Counter

from ingest.loaders import LoadedDocument, Page
from ingest.splitter import analyse_document, split_document

SHOTOKU = """\
所得税法施行令
（退職手当等とみなす一時金）
第七十二条　法第三十一条第一号に規定する政令で定める一時金は、次に掲げる一時金とする。
一　船員保険法の一部を改正する法律（昭和六十年法律第三十四号）附則第五条（船員保険法の一部改正）の規定による改正前の船員保険法の規定に基づく一時金
（中間申告）
第七十四条　中間申告書を提出すべき者は、次に掲げる事項を記載する。
第七十四条の二　前条の規定は、適用しない。
第七十四条の二の二　前条の規定は、適用しない。
"""


def _doc(text: str) -> LoadedDocument:
    return LoadedDocument([Page(text)], text.splitlines()[0], "txt")


def _articles(text: str) -> list[str]:
    return [p.article for p in split_document(_doc(text), "law.txt")]


def test_a_cross_reference_to_a_supplementary_article_inside_an_item_is_not_a_heading():
    ps = split_document(_doc(SHOTOKU), "law.txt")
    assert not any(p.article.startswith("附則") for p in ps)
    first = ps[0]
    assert first.article == "第72条" and first.caption == "退職手当等とみなす一時金"
    assert "附則第五条（船員保険法の一部改正）の規定による" in first.text
    assert all(p.heading == "" for p in ps)


def test_two_level_branch_numbers_are_labelled_in_full():
    assert _articles(SHOTOKU) == ["第72条", "第74条", "第74条の2", "第74条の2の2"]


def test_an_article_whose_text_begins_with_naka_is_a_heading_not_the_reference_form():
    ps = split_document(_doc(SHOTOKU), "law.txt")
    naka = ps[1]
    assert naka.article == "第74条" and naka.caption == "中間申告"
    assert naka.text.startswith("（中間申告）\n第七十四条　中間申告書を")
    # The reference form itself stays inside its article.
    text = SHOTOKU + "附　則\n第一条　第七十四条中「記載する」を「記載しなければならない」に改める。\n"
    ps = split_document(_doc(text), "law.txt")
    assert [p.article for p in ps][-1] == "附則第1条"


LAW = """\
行政手続法
第一章　総則
（目的等）
第一条　この法律は、目的とする。
２　処分に関しこの法律に規定する事項について、他の法律に特別の定めがある場合は、その定めるところによる。
（定義）
第二条　この法律において、次の各号に掲げる用語の意義は、当該各号に定めるところによる。
一　法令　法律をいう。
二　不利益処分　処分をいう。ただし、次のいずれかに該当するものを除く。
イ　事実上の行為
ロ　申請により求められた許認可等を拒否する処分
第三条　削除
第四条及び第五条　削除
第六条から第八条まで　削除
（処分の基準）
第九条　行政庁は、第二条第一号の規定にかかわらず、基準を定める。
　　　附　則　抄
（施行期日）
第一条　この法律は、公布の日から起算して一年を超えない範囲内において政令で定める日から施行する。
第二条　経過措置は、政令で定める。
　　　附　則　（平成一一年一二月八日法律第一五一号）　抄
（施行期日）
第一条　この法律は、平成十二年四月一日から施行する。
第二条　従前の例による。
　　　附　則　（平成二七年法律第九号）
この法律は、公布の日から施行する。
別表第一（第二条関係）
一　許可
"""


def test_each_amending_law_is_a_scope_of_its_own():
    a = analyse_document(_doc(LAW), "law.txt")
    got = [(p.scope, p.article) for p in a.passages]
    assert got == [
        ("", "第1条"), ("", "第2条"), ("", "第3条"), ("", "第4条及び第5条"),
        ("", "第6条から第8条まで"), ("", "第9条"),
        ("附則", "附則第1条"), ("附則", "附則第2条"),
        ("附則(平成一一年一二月八日法律第一五一号)", "附則第1条"),
        ("附則(平成一一年一二月八日法律第一五一号)", "附則第2条"),
        ("附則(平成二七年法律第九号)", "附則"),
        ("", "別表第1"),
    ]
    ids = [p.id.split("@")[0] for p in a.passages]
    assert len(set(ids)) == len(ids)
    assert "law.txt#附則(平成一一年一二月八日法律第一五一号)第2条" in ids
    assert not a.warnings
    second = a.passages[1]
    assert "イ　事実上の行為" in second.text and "ロ　申請" in second.text
    assert a.passages[2].text == "第三条　削除"
    assert a.passages[0].heading == "第一章　総則"


def test_a_label_collision_is_a_warning():
    text = LAW.replace("第九条　行政庁は", "（重複）\n第二条　行政庁は")
    a = analyse_document(_doc(text), "law.txt")
    assert any("第2条" in w and "more than once" in w for w in a.warnings), a.warnings


def test_a_line_starting_with_a_cross_reference_is_not_a_heading():
    text = ("民法\n第九条　成年被後見人の法律行為は、取り消すことができる。\n"
            "第十条\n第七条に規定する原因が消滅したときは、審判を取り消さなければならない。\n"
            "第十一条　精神上の障害により保佐開始の審判をすることができる。\n"
            "第二条（定義）に規定する者は、この限りでない。\n")
    assert _articles(text) == ["第9条", "第10条", "第11条"]


def test_labels_are_unique_per_scope_on_the_issue_example_and_the_law_sample():
    for text in (SHOTOKU, LAW):
        a = analyse_document(_doc(text), "law.txt")
        keys = Counter((p.scope, p.article) for p in a.passages if not p.paragraph)
        assert max(keys.values()) == 1


def _corpus_documents():
    from conftest import CORPUS
    exts = {".txt", ".md", ".html", ".htm", ".pdf"}
    return sorted(p for p in CORPUS.rglob("*") if p.suffix.lower() in exts and p.is_file()
                  and p.name not in ("SOURCES.md", "README.md"))


def test_labels_are_unique_per_scope_on_every_document_of_the_corpus():
    from ingest.loaders import load_document
    docs = _corpus_documents()
    assert len(docs) >= 80
    bad = {}
    for path in docs:
        a = analyse_document(load_document(path), path.name)
        keys = Counter((p.scope, p.article) for p in a.passages
                       if p.article and (not p.paragraph or p.paragraph.startswith("第1項")))
        repeated = [k for k, n in keys.items() if n > 1]
        if repeated or any("more than once" in w for w in a.warnings):
            bad[str(path)] = repeated
    assert not bad


# ---- japan-law layout (headings alone on their line, text on the next; issue 19) ----

def test_a_deleted_range_with_its_deletion_on_the_next_line_is_one_article():
    text = ("特許法\n第五十四条\n審査を中止することができる。\n第五十五条から第六十三条まで\n削除\n"
            "第六十四条\n特許庁長官は、出願公開をしなければならない。\n")
    assert _articles(text) == ["第54条", "第55条から第63条まで", "第64条"]


def test_a_bare_heading_ahead_of_the_numbering_is_an_article_when_a_sentence_follows():
    # Articles missing from the text (an excerpt): 第二十四条 comes after 第二十条.
    text = ("漁業法施行法\n第二十条\n漁業財団抵当法の一部を次のように改正する。\n"
            "第二十四条\n新法施行前の漁業権については、なお従前の例による。\n"
            "第二十五条\nこの法律は、公布の日から施行する。\n")
    assert _articles(text) == ["第20条", "第24条", "第25条"]


def test_table_cells_that_are_article_numbers_are_no_articles():
    # A 両罰規定 table (「第五十五条」 beside its fine), a cell whose text is no sentence
    # outside brackets, and a 読替え table's bare 「第一条」: not articles, not a new
    # regulation of a booklet.
    text = ("政令\n第一条\nこの政令は、公布の日から施行する。\n"
            "第二条\n法人の代表者は、次の各号に掲げる規定の区分に応じ、当該各号に定める罰金刑を科する。\n"
            "第九条\n二億円以下の罰金刑\n"
            "第五十四条\n組合員期間（法第三十八条に規定する組合員期間をいう。以下同じ。）\n"
            "第一条\n国家公務員共済組合法（以下「法」という\n"
            "第三条\nこの政令の規定は、法の施行の日から適用する。\n")
    ps = split_document(_doc(text), "law.txt")
    assert [(p.scope, p.article) for p in ps] == [("", "第1条"), ("", "第2条"), ("", "第3条")]
    assert "第五十四条\n組合員期間" in ps[1].text and "国家公務員共済組合法" in ps[1].text


def test_a_reference_cut_from_its_law_name_by_a_line_break_is_no_heading():
    # 「民法（…）第四百二十三条その他の法令の規定により」 broken after the law number;
    # a table cell 「第七十二条の三（第七十二条の四から…まで」 with its bracket unclosed.
    text = ("建設機械登記令\n第七条\n申請情報の内容は、次に掲げる事項とする。\n民法\n"
            "（明治二十九年法律第八十九号）\n第四百二十三条その他の法令の規定により他人に代わつて登記を申請するときは、その旨\n"
            "第七十二条の三（第七十二条の四から第七十二条の六まで\n読み替えられた字句\n"
            "第八条\n登記の申請をする場合には、次に掲げる情報を提供しなければならない。\n")
    assert _articles(text) == ["第7条", "第8条"]


def test_an_article_number_with_a_nested_bracket_and_the_reference_after_it_is_no_heading():
    text = ("特許法等の一部を改正する法律\n第二条\n"
            "第一条の規定による改正後の特許法（以下「新特許法」という。）第四十三条の二（第三条の規定による"
            "改正後の実用新案法（以下「新実用新案法」という。）第十一条第一項において準用する場合を含む。）"
            "の規定は、発効日前にされた特許出願については、適用しない。\n"
            "第四十三条の二（第三条の規定による改正後の実用新案法（以下「新実用新案法」という。）第十一条第一項"
            "において準用する場合を含む。）の規定は、適用しない。\n"
            "第三条\nこの法律の施行の際現に係属している特許出願については、なお従前の例による。\n")
    ps = split_document(_doc(text), "law.txt")
    assert [p.article for p in ps] == ["第2条", "第3条"]
    assert "新特許法」という。）第四十三条の二（" in ps[0].text


def test_a_supplementary_article_named_in_a_table_cell_is_no_supplementary_provision():
    text = ("国民年金法施行令\n第一条\n法の規定による額は、次の表のとおりとする。\n"
            "法律第三十四号\n附則第五十二条\n合算した額\n"
            "第二条\nこの政令は、公布の日から施行する。\n")
    ps = split_document(_doc(text), "law.txt")
    assert [(p.scope, p.article) for p in ps] == [("", "第1条"), ("", "第2条")]
    assert "附則第五十二条" in ps[0].text


def test_part_of_an_article_at_a_line_start_is_no_branch_article():
    text = ("改正令\n第一条\n次の政令の一部を次のように改正する。\n"
            "第三条の一部を次のように改正する。\n第二条\nこの政令は、公布の日から施行する。\n")
    assert _articles(text) == ["第1条", "第2条"]
