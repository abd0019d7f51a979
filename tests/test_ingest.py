"""Ingest end to end with a real (tiny) embedder, FAISS and bm25s: bad files,
incremental updates, atomic swaps under SIGKILL, and the writer lock."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ingest import store
from ingest.pipeline import IngestError, IngestSettings, ingest
from rag.retrieval.retriever import EmbedderMismatch, Retriever, reciprocal_rank_fusion

REPO = Path(__file__).resolve().parents[1]


def _settings(model) -> IngestSettings:
    return IngestSettings(embedder=str(model))


def _vectors_by_id(index_dir: Path) -> dict[str, np.ndarray]:
    idx = store.load_index(index_dir)
    return {p.id: v for p, v in zip(idx.passages, idx.vectors())}


def test_bad_files_are_reported_and_the_rest_is_indexed(corpus_copy, tmp_path, tiny_embedder):
    (corpus_copy / "壊れた.pdf").write_bytes(b"%PDF-1.4 broken")
    (corpus_copy / "空.txt").write_bytes(b"")
    (corpus_copy / "画像.txt").write_bytes(b"\x00\x01\x02" * 100)
    (corpus_copy / "notes.docx").write_bytes(b"PK")      # a damaged Word file
    (corpus_copy / "notes.xyz").write_bytes(b"PK")       # unsupported: not even looked at
    report = ingest([corpus_copy], tmp_path / "idx", _settings(tiny_embedder))
    failed = {d.source: d.reason for d in report.failures}
    assert set(failed) == {"壊れた.pdf", "空.txt", "画像.txt", "notes.docx"}
    assert "corrupt Word .docx" in failed["notes.docx"]
    assert "corrupt PDF" in failed["壊れた.pdf"] and "empty" in failed["空.txt"]
    assert "binary" in failed["画像.txt"]
    sources = {p.source for p in store.load_index(tmp_path / "idx").passages}
    assert "学則.txt" in sources and "学生懲戒規程.pdf" in sources
    assert report.written


def test_strict_writes_nothing(corpus_copy, tmp_path, tiny_embedder):
    (corpus_copy / "空.txt").write_bytes(b"")
    with pytest.raises(IngestError, match="空.txt: empty file"):
        ingest([corpus_copy], tmp_path / "idx", _settings(tiny_embedder), strict=True)
    assert store.current_generation(tmp_path / "idx") is None


def test_manifest_records_what_search_relies_on(corpus_index):
    m = store.read_manifest(corpus_index)
    assert m.format_version == store.FORMAT_VERSION
    assert m.embedder.dimension == 32 and m.embedder.query_prefix == "query: "
    assert m.embedder.revision.startswith("sha256:")
    assert m.tokenizer["name"] == "sudachipy"
    assert m.tokenizer["dictionary"] == "sudachidict_core"
    doc = m.documents["履修規程.txt"]
    assert doc.encoding == "cp932" and len(doc.sha256) == 64
    assert m.documents["学生懲戒規程.pdf"].pages >= 2
    idx = store.load_index(corpus_index)
    assert [p.id for p in idx.passages] == [pid for d in m.documents.values()
                                            for pid in d.passages]


def test_manifest_reads_what_it_wrote_and_older_manifests(corpus_index):
    raw = json.loads((store.current_generation(corpus_index) / "manifest.json").read_text("utf-8"))
    assert store.Manifest.from_dict(raw).to_dict() == raw
    # Before `inputs` and declared titles there were `roots`; unknown keys are ignored.
    older = json.loads(json.dumps(raw))
    del older["inputs"]
    older["roots"] = ["/somewhere"]
    for doc in older["documents"].values():
        del doc["declared_title"]
    m = store.Manifest.from_dict(older)
    assert m.inputs == [] and {d.declared_title for d in m.documents.values()} == {""}


@pytest.mark.parametrize("keys,value,error", [
    (("embedder", "dimension"), None, "field 'embedder.dimension' is missing"),
    (("documents", "学則.txt", "sha256"), 5, "field 'documents[学則.txt].sha256' should be a string"),
    (("passages",), "153", "field 'passages' should be an integer"),
    (("dense",), [], "field 'dense' should be an object or null"),
])
def test_a_bad_manifest_field_is_named(corpus_index, tmp_path, keys, value, error):
    import shutil
    index = tmp_path / "idx"
    shutil.copytree(corpus_index, index)
    path = store.current_generation(index) / "manifest.json"
    raw = json.loads(path.read_text("utf-8"))
    *parents, last = keys
    target = raw
    for k in parents:
        target = target[k]
    if value is None:
        del target[last]
    else:
        target[last] = value
    path.write_text(json.dumps(raw, ensure_ascii=False), "utf-8")
    with pytest.raises(store.IndexStoreError) as e:
        store.load_index(index)
    assert str(path) in str(e.value) and error in str(e.value)


def test_reingest_reembeds_only_what_changed_and_reports_articles(corpus_copy, tmp_path,
                                                                   tiny_embedder):
    index = tmp_path / "idx"
    first = ingest([corpus_copy], index, _settings(tiny_embedder))
    before = _vectors_by_id(index)

    again = ingest([corpus_copy], index, _settings(tiny_embedder))
    assert not again.written and again.embedded == 0
    # (corpus/.ragignore keeps the question sets out: nothing is skipped)
    assert all(d.status == "unchanged" for d in again.documents)

    f = corpus_copy / "学則.txt"
    text = f.read_text(encoding="utf-8")
    assert "１６単位に満たない者" in text and "第４９条" in text
    text = text.replace("１６単位に満たない者", "２０単位に満たない者")
    # Remove 第49条 (caption line and body) and add 第43条の2.
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("第４９条")) - 1
    end = next(i for i in range(start + 2, len(lines)) if lines[i].startswith(("（", "第", "附")))
    lines[start:end] = []
    at = next(i for i, ln in enumerate(lines) if ln.startswith("第４４条")) - 1
    lines[at:at] = ["（再入学の特例）", "第４３条の２　災害により除籍された者の再入学は、別に定める。"]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (corpus_copy / "学生生活ガイド.md").unlink()

    report = ingest([corpus_copy], index, _settings(tiny_embedder))
    by_source = {d.source: d for d in report.documents}
    gakusoku = by_source["学則.txt"]
    assert gakusoku.status == "changed"
    assert any(k.startswith("第42条") for k in gakusoku.changed)
    assert gakusoku.added == ["第43条の2"] and gakusoku.removed == ["第49条"]
    assert "第43条の2 added" in gakusoku.describe() and "第49条 removed" in gakusoku.describe()
    assert by_source["学生生活ガイド.md"].status == "removed"
    assert by_source["履修規程.txt"].status == "unchanged"
    assert report.embedded == 1 + sum(1 for k in gakusoku.changed)
    after = _vectors_by_id(index)
    unchanged = [pid for pid in after if pid.startswith("履修規程.txt#")]
    assert unchanged and all(np.array_equal(before[pid], after[pid]) for pid in unchanged)
    assert not any(pid.startswith("学生生活ガイド.md#") for pid in after)
    assert first.passages - report.passages == (
        by_source["学生生活ガイド.md"].passages + 1 - 1)   # guide gone, 49 out, 43の2 in


def test_unreadable_update_keeps_the_indexed_version(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    ids = {pid for pid in _vectors_by_id(index) if pid.startswith("学生懲戒規程.pdf#")}
    (corpus_copy / "学生懲戒規程.pdf").write_bytes(b"%PDF-1.7 truncated by a bad upload")
    report = ingest([corpus_copy], index, _settings(tiny_embedder))
    (failure,) = report.failures
    assert failure.source == "学生懲戒規程.pdf" and "keeping the previously indexed" in failure.reason
    assert ids <= set(_vectors_by_id(index))


def test_dry_run_writes_nothing(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    gen = store.current_generation(index)
    f = corpus_copy / "履修規程.txt"
    f.write_bytes(f.read_bytes().replace("24単位".encode("cp932"), "22単位".encode("cp932")))
    report = ingest([corpus_copy], index, _settings(tiny_embedder), dry_run=True)
    changed = {d.source: d for d in report.documents}["履修規程.txt"]
    assert changed.status == "changed" and changed.changed
    assert store.current_generation(index) == gen and not report.written


def test_symlinks_never_leave_the_tree(corpus_copy, tmp_path, tiny_embedder):
    outside = tmp_path / "secret.txt"
    outside.write_text("秘密の規程\n第１条　外部のファイルである。\n", encoding="utf-8")
    (corpus_copy / "link.txt").symlink_to(outside)
    (corpus_copy / "inside.txt").symlink_to(corpus_copy / "履修規程.txt")
    (corpus_copy / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    report = ingest([corpus_copy], tmp_path / "idx", _settings(tiny_embedder))
    failed = {d.source: d.reason for d in report.failures}
    assert "outside" in failed["link.txt"]
    texts = " ".join(p.text for p in store.load_index(tmp_path / "idx").passages)
    assert "外部のファイル" not in texts
    # A link to a file inside the tree is the same document: indexed once, as the file.
    assert "inside.txt" not in {d.source for d in report.documents}
    assert "履修規程.txt" in {d.source for d in report.documents if d.status == "added"}


def test_embedder_mismatch_is_a_clear_error(corpus_index, other_embedder, tmp_path,
                                            tiny_embedder):
    with pytest.raises(EmbedderMismatch, match="was built with embedder"):
        Retriever(corpus_index, embedder=str(other_embedder))
    # The same path now holding different weights is caught on the first dense search.
    import shutil
    moved = tmp_path / "model"
    shutil.copytree(tiny_embedder, moved)
    index = tmp_path / "idx"
    ingest([REPO / "corpus" / "履修規程.txt"], index, _settings(moved))
    shutil.rmtree(moved)
    shutil.copytree(other_embedder, moved)
    retriever = Retriever(index)
    assert retriever.search("履修登録", mode="bm25")       # BM25 needs no embedder
    with pytest.raises(EmbedderMismatch, match="not the model"):
        retriever.search("履修登録", mode="dense")


def test_changing_the_embedder_reembeds_everything(corpus_copy, tmp_path, tiny_embedder,
                                                   other_embedder):
    index = tmp_path / "idx"
    first = ingest([corpus_copy], index, _settings(tiny_embedder))
    report = ingest([corpus_copy], index, _settings(other_embedder))
    assert report.embedded == report.passages and report.reused == 0
    assert all("re-indexed" in d.describe() for d in report.documents)
    assert first.written
    assert store.read_manifest(index).embedder.dimension == 24


# --------------------------------------------------------------------------- crash safety

KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from ingest import store, embedder
    from ingest.pipeline import IngestSettings, ingest
    corpus, index, model, where = sys.argv[1:5]
    if where == "embedding":
        def die(self, texts, progress=False):
            os.kill(os.getpid(), signal.SIGKILL)
        embedder.Embedder.embed_passages = die
    else:
        real = store._write_lines
        def write_then_die(path, lines):
            real(path, lines)
            if path.name == where:
                os.kill(os.getpid(), signal.SIGKILL)
        store._write_lines = write_then_die
    ingest([Path(corpus)], Path(index), IngestSettings(embedder=model))
""")


@pytest.mark.parametrize("where", ["embedding", "tokens.jsonl", "manifest.json"])
def test_killed_ingest_leaves_the_previous_index_usable(corpus_copy, tmp_path, tiny_embedder,
                                                        where):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    expected = [h.passage.id for h in Retriever(index).search("除籍の要件", k=5)]
    before = store.current_generation(index).name
    f = corpus_copy / "学則.txt"
    f.write_text(f.read_text(encoding="utf-8").replace("除籍", "除名"), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(corpus_copy), str(index),
                           str(tiny_embedder), where], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert [h.passage.id for h in Retriever(index).search("除籍の要件", k=5)] == expected
    # The next ingest finishes the job and clears the unfinished generation; the one it
    # replaces stays until the next swap, for readers that loaded it a moment ago.
    report = ingest([corpus_copy], index, _settings(tiny_embedder))
    assert report.written
    assert sorted(e.name for e in index.iterdir() if e.name.startswith("gen-")) == sorted(
        [before, store.current_generation(index).name])


def test_a_second_ingest_waits_its_turn(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    with store.index_lock(index):
        proc = subprocess.run([sys.executable, "-m", "rag", "ingest", str(corpus_copy),
                               "--index", str(index), "--embedder", str(tiny_embedder)],
                              cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"is being written by pid {os.getpid()}" in proc.stderr
    assert store.current_generation(index) is None


def test_ingest_json_report(corpus_copy, tmp_path, tiny_embedder):
    proc = subprocess.run([sys.executable, "-m", "rag", "ingest", str(corpus_copy), "--index",
                           str(tmp_path / "idx"), "--embedder", str(tiny_embedder), "--json"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["written"] and report["embedded"] == report["passages"] > 80
    assert {d["status"] for d in report["documents"]} == {"added"}


def test_explicit_prefixes_are_kept_by_later_runs(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, IngestSettings(embedder=str(tiny_embedder),
                                                passage_prefix="文章: ", query_prefix="問: "))
    f = corpus_copy / "学則.txt"
    f.write_text(f.read_text(encoding="utf-8").replace("除籍", "除名"), encoding="utf-8")
    report = ingest([corpus_copy], index, IngestSettings())
    emb = store.read_manifest(index).embedder
    assert (emb.query_prefix, emb.passage_prefix) == ("問: ", "文章: ")
    assert 0 < report.embedded < report.passages


def test_swapped_weights_are_noticed_by_a_bare_ingest(corpus_copy, tmp_path, tiny_embedder,
                                                      other_embedder):
    import shutil
    model = tmp_path / "model"
    shutil.copytree(tiny_embedder, model)
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(model))
    shutil.rmtree(model)
    shutil.copytree(other_embedder, model)
    report = ingest([corpus_copy], index, IngestSettings())
    assert report.written and report.embedded == report.passages
    assert Retriever(index).search("除籍", mode="dense")


def test_switching_to_hnsw_reuses_the_vectors(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    flat = Retriever(index).search("除籍の要件", k=3, mode="dense")
    report = ingest([corpus_copy], index, IngestSettings(dense="hnsw"))
    assert report.written and report.embedded == 0
    assert store.read_manifest(index).dense.kind == "hnsw"
    hnsw = Retriever(index).search("除籍の要件", k=3, mode="dense")
    assert [h.passage.id for h in hnsw] == [h.passage.id for h in flat]
    # and a bare run afterwards keeps HNSW
    ingest([corpus_copy], index, IngestSettings())
    assert store.read_manifest(index).dense.kind == "hnsw"


def test_a_document_turned_into_an_outside_symlink_keeps_its_passages(corpus_copy, tmp_path,
                                                                      tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    before = {pid for pid in _vectors_by_id(index) if pid.startswith("履修規程.txt#")}
    outside = tmp_path / "elsewhere.txt"
    (corpus_copy / "履修規程.txt").rename(outside)
    (corpus_copy / "履修規程.txt").symlink_to(outside)
    report = ingest([corpus_copy], index, _settings(tiny_embedder))
    (failure,) = report.failures
    assert "outside" in failure.reason and "keeping the previously indexed" in failure.reason
    assert before <= set(_vectors_by_id(index))


def test_hub_models_are_identified_by_their_cached_commit(tmp_path, tiny_embedder):
    """A model named by Hub id loads offline from a filled cache, with its commit and its
    declared prompts recorded (how cluster nodes without internet run)."""
    import shutil
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--cl-nagoya--tiny-test"
    shutil.copytree(tiny_embedder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = ("from ingest.embedder import Embedder; e = Embedder('cl-nagoya/tiny-test'); "
            "print(e.revision, repr(e.query_prefix), repr(e.passage_prefix))")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [commit, "'query:", "'", "'passage:", "'"]


def test_reciprocal_rank_fusion_weights():
    dense = [(7, 0.9), (5, 0.8)]
    bm25 = [(5, 12.0), (3, 9.0)]
    # equal votes: 7 (1/61, dense only) beats 3 (1/62, BM25 only)
    assert [i for i, _ in reciprocal_rank_fusion([dense, bm25], k=60)] == [5, 7, 3]
    # BM25 counted twice: 3 (2/62) overtakes 7 (1/61)
    fused = reciprocal_rank_fusion([dense, bm25], k=60, weights=[1.0, 2.0])
    assert [i for i, _ in fused] == [5, 3, 7]
    assert fused[0][1] == pytest.approx(1 / 62 + 2 / 61)
