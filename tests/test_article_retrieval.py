"""Results are articles (one per article, its best passage) and the character-bigram
BM25 channel (ingest/bigram.py) is built at ingest, stored, and loaded; an index written
without it still searches (the channel is built when it is loaded)."""
import json
import shutil

from click.testing import CliRunner

from ingest import bigram, store
from ingest.passage import Passage
from ingest.pipeline import IngestSettings, ingest
from rag.retrieval.article_fusion import first_per_article, fuse_articles
from rag.cli import cli
from rag.retrieval.retriever import Retriever

LAW = """借地借家法（抜粋）

（借地権の存続期間）
第三条　借地権の存続期間は、三十年とする。ただし、契約でこれより長い期間を定めたときは、その期間とする。
（借地権の更新後の期間）
第四条　当事者が借地契約を更新する場合においては、その期間は、更新の日から十年（借地権の設定後の最初の更新にあっては、二十年）とする。
（建物賃貸借契約の更新等）
第二十六条　建物の賃貸借について期間の定めがある場合において、当事者が期間の満了の一年前から六月前までの間に相手方に対して更新をしない旨の通知又は条件を変更しなければ更新をしない旨の通知をしなかったときは、従前の契約と同一の条件で契約を更新したものとみなす。ただし、その期間は、定めがないものとする。
２　前項の通知をした場合であっても、建物の賃貸借の期間が満了した後建物の賃借人が使用を継続する場合において、建物の賃貸人が遅滞なく異議を述べなかったときも、同項と同様とする。
３　建物の転貸借がされている場合においては、建物の転借人がする建物の使用の継続を建物の賃借人がする建物の使用の継続とみなして、建物の賃借人と賃貸人との間について前項の規定を適用する。
（解約による建物賃貸借の終了）
第二十七条　建物の賃貸人が賃貸借の解約の申入れをした場合においては、建物の賃貸借は、解約の申入れの日から六月を経過することによって終了する。
"""


def _p(i, source, article, text="x"):
    return Passage(f"p{i}", source, "T", "", article, "", "", None, text)


def test_bigrams_stop_at_punctuation_and_fold_width():
    assert bigram.bigrams("第５条　届出書。ア") == ["第5", "5条", "届出", "出書", "ア"]
    assert bigram.bigrams("") == []


def test_fusion_returns_each_article_once_with_its_best_passage():
    ps = [_p(0, "a", "第1条"), _p(1, "a", "第1条"), _p(2, "a", "第2条"), _p(3, "b", "第1条"),
          _p(4, "b", ""), _p(5, "b", "")]
    dense = [(1, .9), (0, .8), (2, .7), (4, .6), (5, .5)]
    sparse = [(0, 9.), (3, 8.), (1, 7.), (5, 6.)]
    fused = fuse_articles([dense, sparse], [1.0, 1.0], ps)
    keys = [(ps[i].source, ps[i].article or ps[i].id) for i, _ in fused]
    assert len(keys) == len(set(keys)) == 5            # a/第1条 once; unlabelled apart
    assert keys[0] == ("a", "第1条")
    assert fused[0][0] in (0, 1)                       # its best passage of the two
    assert [i for i, _ in first_per_article(dense, ps)] == [1, 2, 4, 5]
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)


def test_bigram_channel_is_stored_and_search_returns_articles(tmp_path, tiny_embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "借地借家法.txt").write_text(LAW, encoding="utf-8")
    index = tmp_path / "idx"
    # Small passages, so that 第二十六条 is split at its 項 into several passages.
    ingest([docs], index, IngestSettings(embedder=str(tiny_embedder), max_tokens=96))
    gen = store.current_generation(index)
    assert (gen / bigram.DIRNAME / "bigram.json").is_file()
    r = Retriever(index)
    assert r.index.bm25_bigram is not None
    parts = [p for p in r.passages if p.article == "第26条"]
    assert len(parts) >= 2, [p.paragraph for p in r.passages]
    hits = r.search("建物の賃貸借の更新をしない旨の通知", k=4, mode="hybrid")
    articles = [h.passage.article for h in hits]
    assert len(articles) == len(set(articles)), articles
    assert articles[0] == "第26条", articles
    ranked = r._bigram("建物の転借人", 10)
    assert ranked and r.passages[ranked[0][0]].article == "第26条"

    # --json keeps its contract fields, one object per article.
    out = CliRunner().invoke(cli, ["search", "建物の賃貸借の更新", "--index", str(index),
                                   "-k", "3", "--json"], obj={})
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    for row in rows:
        assert {"rank", "score", "source", "article", "heading", "text"} <= set(row)
    assert len({row["article"] for row in rows}) == len(rows)

    # An index written before the channel existed still loads and gets it in memory.
    shutil.rmtree(gen / bigram.DIRNAME)
    old = Retriever(index)
    assert old.index.bm25_bigram is None
    again = [h.passage.article for h in old.search("建物の賃貸借の更新をしない旨の通知", k=4)]
    assert again == articles
    assert old.index.bm25_bigram is not None
