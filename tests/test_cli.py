"""`rag search` / `rag ingest` as users and scripts call them."""
import json

import pytest
from click.testing import CliRunner

from rag.cli import cli

QUESTION = "半年で15単位しか取れませんでした。除籍されますか？"


def run(*args, env=None):
    result = CliRunner().invoke(cli, list(map(str, args)), obj={}, env=env)
    return result


def test_search_json_contract(corpus_index):
    r = run("search", QUESTION, "--index", corpus_index, "-k", 4, "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    for h in hits:
        assert {"rank", "score", "source", "article", "heading", "text"} <= set(h)
        assert not h["source"].startswith("/")          # relative to the ingested directory
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def _ranking(hits) -> list[tuple[str, str, str]]:
    return [(h["source"], h["article"], h["id"]) for h in hits]


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_each_mode_ranks_as_the_retriever_does_in_that_mode(corpus_index, mode):
    from rag.retrieval.retriever import Retriever

    r = run("search", "除籍", "--index", corpus_index, "--mode", mode, "--json", "-k", 3)
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert _ranking(hits) == _ranking(h.to_json() for h in Retriever(corpus_index).search(
        "除籍", k=3, mode=mode))


def test_the_modes_rank_differently(corpus_index):
    """--mode is applied: the three modes do not all give one ranking."""
    rankings = {mode: _ranking(json.loads(run("search", "除籍", "--index", corpus_index,
                                                "--mode", mode, "--json", "-k", 5).output))
                for mode in ("bm25", "dense", "hybrid")}
    assert rankings["bm25"] != rankings["dense"]
    assert rankings["hybrid"] != rankings["dense"] or rankings["hybrid"] != rankings["bm25"]


def test_bm25_finds_the_article_by_its_words(corpus_index):
    r = run("search", "除籍", "--index", corpus_index, "--mode", "bm25", "--json", "-k", 1)
    (hit,) = json.loads(r.output)
    assert hit["source"] == "学則.txt" and hit["article"] == "第42条"


def test_human_output_names_document_article_and_heading(corpus_index):
    r = run("search", "除籍", "--index", corpus_index, "--mode", "bm25", "-k", 1)
    assert r.exit_code == 0
    assert "東雲大学情報科学部学則 第42条（除籍）" in r.output
    assert "学則.txt" in r.output and "第８章" in r.output


def test_queries_file_text_and_jsonl(corpus_index, tmp_path):
    txt = tmp_path / "q.txt"
    txt.write_text("除籍の要件\n\n# comment\n履修登録の上限\n", encoding="utf-8")
    r = run("search", "--queries", txt, "--index", corpus_index, "--json", "-k", 2)
    lines = [json.loads(x) for x in r.output.splitlines()]
    assert [x["query"] for x in lines] == ["除籍の要件", "履修登録の上限"]
    assert all(len(x["results"]) == 2 and "id" not in x for x in lines)

    from conftest import CORPUS
    r = run("search", "--queries", CORPUS / "questions.jsonl", "--index", corpus_index,
            "--json", "-k", 3)
    lines = [json.loads(x) for x in r.output.splitlines()]
    assert len(lines) >= 60 and lines[0]["id"] == "q001"
    assert lines[0]["results"][0]["rank"] == 1


def test_bad_queries_file_names_the_line(corpus_index, tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "除籍"}\n{"id": 2}\n', encoding="utf-8")
    r = run("search", "--queries", f, "--index", corpus_index)
    assert r.exit_code == 1 and "q.jsonl:2: missing field 'question'" in r.output


def test_missing_index_says_what_to_do(tmp_path):
    r = run("search", "除籍", "--index", tmp_path / "none")
    assert r.exit_code == 1 and "run `rag ingest` first" in r.output


def test_embedder_mismatch_from_the_command_line(corpus_index, other_embedder):
    r = run("search", "除籍", "--index", corpus_index, "--embedder", other_embedder)
    assert r.exit_code == 1 and "was built with embedder" in r.output
    r = run("search", "除籍", "--index", corpus_index, env={"RAG_EMBEDDER": str(other_embedder)})
    assert r.exit_code == 1 and "was built with embedder" in r.output


def test_question_xor_queries(corpus_index):
    r = run("search", "--index", corpus_index)
    assert r.exit_code == 2 and "QUESTION or --queries" in r.output


def test_config_file_and_env_precedence(corpus_index, tmp_path, monkeypatch):
    cfg = tmp_path / "rag.toml"
    cfg.write_text(f'index = "{corpus_index}"\n[search]\nk = 2\nmode = "bm25"\n',
                   encoding="utf-8")
    r = run("--config", cfg, "search", "除籍", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)) == 2
    r = run("--config", cfg, "search", "除籍", "--json", env={"RAG_K": "3"})
    assert len(json.loads(r.output)) == 3
    r = run("--config", cfg, "search", "除籍", "--json", "-k", "1", env={"RAG_K": "3"})
    assert len(json.loads(r.output)) == 1


def test_unknown_config_key_is_named(tmp_path):
    cfg = tmp_path / "rag.toml"
    cfg.write_text('[search]\ntop_k = 3\n', encoding="utf-8")
    r = run("--config", cfg, "search", "除籍")
    assert r.exit_code == 1 and "unknown key 'top_k' in [search]" in r.output


def test_ingest_defaults_to_the_index_sources_and_reports_changes(corpus_copy, tmp_path,
                                                                  tiny_embedder):
    index = tmp_path / "idx"
    r = run("ingest", corpus_copy, "--index", index, "--embedder", tiny_embedder)
    assert r.exit_code == 0, r.output
    assert "学則.txt: added" in r.output
    f = corpus_copy / "試験及び成績評価に関する細則.md"
    f.write_text(f.read_text(encoding="utf-8").replace("５０点以上６０点未満", "５５点以上６０点未満"),
                 encoding="utf-8")
    r = run("ingest", "--index", index, "--dry-run")       # no paths: the index's own
    assert r.exit_code == 0, r.output
    assert "試験及び成績評価に関する細則.md: 第" in r.output and "changed" in r.output
    assert r.output.strip().splitlines()[-1].startswith("would index")


def test_help_explains_every_option():
    for cmd in ("ingest", "search"):
        r = run(cmd, "--help")
        assert r.exit_code == 0
        options = [ln for ln in r.output.splitlines() if ln.strip().startswith("-")]
        assert options and all(len(ln.strip().split(None, 1)) == 2 or ln.strip() == ""
                               for ln in options), r.output


def test_thesaurus_expands_everyday_words(tmp_path):
    from rag.retrieval.thesaurus import Thesaurus, ThesaurusError
    th = Thesaurus.load()
    assert "授業料" in th.terms_for("学費が払えないとどうなりますか")
    assert th.expand("授業料の額") == "授業料の額"          # nothing to add
    own = tmp_path / "t.tsv"
    own.write_text("# ours\nＰＣ\tパソコン 情報機器\n", encoding="utf-8")
    assert Thesaurus.load(own).terms_for("PCを壊した") == ["パソコン", "情報機器"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("学費 授業料\n", encoding="utf-8")
    with pytest.raises(ThesaurusError, match="bad.tsv:1"):
        Thesaurus.load(bad)
    assert Thesaurus.load("") is None


def test_no_expand_flag(corpus_index):
    r = run("search", "学費", "--index", corpus_index, "--mode", "bm25", "--json", "--no-expand")
    assert r.exit_code == 0 and json.loads(r.output) == []   # the regulations say 授業料
    r = run("search", "学費", "--index", corpus_index, "--mode", "bm25", "--json")
    assert any("授業料" in h["text"] for h in json.loads(r.output))


def test_bare_ingest_rereads_exactly_the_inputs(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    one = corpus_copy / "履修規程.txt"
    assert run("ingest", one, "--index", index, "--embedder", tiny_embedder).exit_code == 0
    r = run("ingest", "--index", index, "--json")
    report = json.loads(r.output)
    assert [d["source"] for d in report["documents"]] == ["履修規程.txt"]


@pytest.mark.parametrize("body,error", [
    ('[ingest]\nmax_tokens = "abc"\n', "[ingest] max_tokens must be an integer"),
    ('[ingest]\ntrust_remote_code = "no"\n', "trust_remote_code must be true or false"),
    ('[search]\nthesaurus = 1\n', "[search] thesaurus must be a string"),
    ('[search]\nmode = "fuzzy"\n', "mode must be one of"),
    ('[search]\nbm25_weight = "high"\n', "[search] bm25_weight must be a number"),
    ('[search]\nbm25_weight = -1\n', "bm25_weight must be 0 or more"),
    ('index = \n', "rag.toml"),
])
def test_config_values_are_type_checked(tmp_path, body, error):
    cfg = tmp_path / "rag.toml"
    cfg.write_text(body, encoding="utf-8")
    r = run("--config", cfg, "search", "除籍")
    assert r.exit_code == 1 and error in r.output, r.output


def test_queries_file_not_utf8(corpus_index, tmp_path):
    f = tmp_path / "q.txt"
    f.write_bytes("除籍の要件\n".encode("cp932"))
    r = run("search", "--queries", f, "--index", corpus_index)
    assert r.exit_code == 1 and "not UTF-8" in r.output


def test_damaged_manifest_is_a_clear_error(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    assert run("ingest", corpus_copy, "--index", index, "--embedder", tiny_embedder,
               "-q").exit_code == 0
    from ingest import store
    (store.current_generation(index) / "manifest.json").write_text("{broken", "utf-8")
    r = run("search", "除籍", "--index", index)
    assert r.exit_code == 1 and "manifest.json is damaged" in r.output
    # ingest rebuilds from scratch instead of failing
    r = run("ingest", corpus_copy, "--index", index, "--embedder", tiny_embedder)
    assert r.exit_code == 0, r.output
    assert run("search", "除籍", "--index", index).exit_code == 0


def test_bad_device_is_a_clear_error(corpus_copy, tmp_path, tiny_embedder):
    r = run("ingest", corpus_copy, "--index", tmp_path / "idx", "--embedder", tiny_embedder,
            "--device", "nosuchdevice")
    assert r.exit_code == 1 and "cannot load embedder" in r.output, r.output


def test_every_retrieving_command_reports_a_bad_thesaurus(corpus_index, tmp_path):
    from conftest import CORPUS
    cfg = tmp_path / "rag.toml"
    cfg.write_text(f'[search]\nthesaurus = "{tmp_path / "missing.tsv"}"\n', encoding="utf-8")
    for args in (["search", "除籍", "--index", corpus_index],
                 ["finetune", "build-data", CORPUS / "questions.jsonl", "--index", corpus_index,
                  "--out", tmp_path / "rows.jsonl"]):
        r = run("--config", cfg, *args)
        assert r.exit_code == 1 and "missing.tsv: thesaurus file not found" in r.output, r.output


def test_an_explicit_empty_flag_overrides_the_config(corpus_copy, tmp_path, tiny_embedder):
    """Flags win only when given; an explicit "" is given (it used to fall back to the
    config's value through `flag or config`)."""
    from ingest import store
    cfg = tmp_path / "rag.toml"
    cfg.write_text('[ingest]\nquery_prefix = "質問: "\n', encoding="utf-8")
    index = tmp_path / "idx"
    r = run("--config", cfg, "ingest", corpus_copy, "--index", index, "--embedder",
            tiny_embedder, "--query-prefix", "", "-q")
    assert r.exit_code == 0, r.output
    assert store.read_manifest(index).embedder.query_prefix == ""
    r = run("--config", cfg, "ingest", corpus_copy, "--index", tmp_path / "idx2",
            "--embedder", tiny_embedder, "-q")
    assert store.read_manifest(tmp_path / "idx2").embedder.query_prefix == "質問: "


def test_errors_are_reported_once_without_a_traceback(tmp_path):
    """A domain error from deep inside (here the fine-tuning settings) reaches the user as
    its message, exit status 1, whichever command raised it."""
    bad = tmp_path / "ft.toml"
    bad.write_text('lr = "fast"\n', encoding="utf-8")
    r = run("finetune", "train", "--config", bad, "--data", "x.jsonl")
    assert r.exit_code == 1 and "lr" in r.output and "Traceback" not in r.output
    assert r.output.startswith("Error: ")


@pytest.mark.parametrize("args,error", [
    (["search", "   "], "the question is empty"),
    (["ask", "--min-score", "1.5", "x"], "1.5 is not in the range"),
])
def test_empty_questions_and_out_of_range_settings_are_refused(corpus_index, args, error):
    r = run(*args[:1], "--index", corpus_index, *args[1:])
    assert r.exit_code == 2 and error in r.output


def test_a_config_with_a_byte_order_mark_and_a_bad_min_score(tmp_path, corpus_index):
    cfg = tmp_path / "rag.toml"
    cfg.write_bytes(b"\xef\xbb\xbf" + f'index = "{corpus_index}"\n'.encode())
    assert run("--config", cfg, "search", "除籍", "--json").exit_code == 0
    cfg.write_text('[generate]\nmin_score = 1.5\n', encoding="utf-8")
    r = run("--config", cfg, "search", "除籍")
    assert r.exit_code == 1 and "min_score is a cosine similarity" in r.output
