"""Real statute text against gold made from e-Gov XML (corpus/laws, issue 19): labels
right in their 附則 scopes, no label split twice, no warnings; the committed texts are
what the converter makes from the committed XML."""
import json
import sys
from pathlib import Path

import pytest

from conftest import CORPUS, REPO

sys.path.insert(0, str(REPO))
from scripts.bench.split_quality import law_articles, law_gold, law_score  # noqa: E402
from scripts.corpus.laws_from_xml import convert  # noqa: E402

LAWS = CORPUS / "laws"
XML_GOLD = sorted(p for p in LAWS.glob("*.gold.jsonl") if "japan-law" not in p.name)


def _text(gold: Path) -> Path:
    return gold.with_name(gold.name.replace(".gold.jsonl", ".txt"))


@pytest.mark.parametrize("gold", XML_GOLD, ids=lambda p: p.name)
def test_article_labels_match_the_xml_gold(gold):
    pred, warnings = law_articles(_text(gold), gold.name)
    score = law_score(law_gold(gold), pred)
    assert score["gold"] >= 70
    assert score["accuracy"] >= 0.995, score["errors"]
    assert score["predicted"] == score["gold"], score["errors"]
    assert score["collisions"] == 0
    assert not warnings


def test_the_sample_has_many_supplementary_scopes_with_repeated_labels():
    gold = law_gold(LAWS / "行政手続法_20240401.gold.jsonl")
    scopes = {s for s, _ in gold if s.startswith("附則")}
    assert len(scopes) >= 10
    assert sum(1 for _, lab in gold if lab == "附則第1条") >= 10   # one per amending law


def test_captions_and_chapters_match_the_xml_gold():
    from ingest.loaders import load_document
    from ingest.splitter import analyse_document
    gold = [json.loads(x) for x in (LAWS / "行政手続法_20240401.gold.jsonl").read_text(
        encoding="utf-8").splitlines()]
    passages = analyse_document(load_document(LAWS / "行政手続法_20240401.txt"), "x").passages
    got = {(p.scope, p.article): p for p in passages}
    for g in gold:
        p = got[(g["scope"], g["label"])]
        assert p.caption == g["caption"], g
        if not g["scope"]:
            assert p.heading.split(" > ")[-1].replace("　", " ") == g["heading"].split(
                " > ")[-1].replace("　", " "), g


def test_japan_law_sample_labels():
    """japan-law gold keeps 2 cells of 読替え tables as articles (see SOURCES.md)."""
    gold = LAWS / "国民年金法施行令_japan-law.gold.jsonl"
    pred, _ = law_articles(_text(gold), gold.name)
    score = law_score(law_gold(gold), pred)
    assert score["gold"] >= 200 and score["accuracy"] >= 0.99, score["errors"]
    assert score["right"] == score["predicted"]          # nothing split that is not gold


@pytest.mark.parametrize("xml", sorted((LAWS / "xml").glob("*.xml")), ids=lambda p: p.name)
def test_the_committed_texts_are_what_the_converter_makes(xml):
    text, gold, title = convert(xml)
    date = xml.name.split("_")[1]
    assert (LAWS / f"{title}_{date}.txt").read_text(encoding="utf-8") == text
    assert [json.loads(x) for x in (LAWS / f"{title}_{date}.gold.jsonl").read_text(
        encoding="utf-8").splitlines()] == gold
