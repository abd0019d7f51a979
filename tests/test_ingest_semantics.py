"""Nothing lost: what `rag ingest PATH` keeps, what a bare `rag ingest` reads, missing
inputs, write failures, leftovers of killed runs, and readers during swaps."""
import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest import store
from ingest.pipeline import IngestError, IngestSettings, ingest
from rag.cli import cli

REPO = Path(__file__).resolve().parents[1]


def _settings(model) -> IngestSettings:
    return IngestSettings(embedder=str(model))


def _sources(index: Path) -> set[str]:
    return set(store.read_manifest(index).documents)


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


def test_ingesting_one_edited_file_keeps_every_other_document(corpus_copy, tmp_path,
                                                              tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    everything = _sources(index)
    _edit(corpus_copy / "学則.txt", "除籍する", "除籍するものとする")
    report = ingest([corpus_copy / "学則.txt"], index, _settings(tiny_embedder))
    assert _sources(index) == everything
    changed = {d.source: d.status for d in report.documents
               if d.status not in ("unchanged", "skipped")}
    assert changed == {"学則.txt": "changed"}
    assert store.read_manifest(index).inputs == [str(corpus_copy)]
    # A bare ingest re-reads the recorded folder: nothing left to do.
    again = ingest([], index, _settings(tiny_embedder))
    assert not again.written
    assert len([d for d in again.documents if d.status == "unchanged"]) == len(everything)


def test_a_new_path_is_added_to_the_recorded_inputs(corpus_copy, tmp_path, tiny_embedder):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "奨学金規程.txt").write_text("奨学金規程\n（目的）\n第1条 この規程は奨学金について定める。\n",
                                       encoding="utf-8")
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    n = len(_sources(index))
    ingest([extra], index, _settings(tiny_embedder))
    assert len(_sources(index)) == n + 1
    assert store.read_manifest(index).inputs == sorted([str(corpus_copy), str(extra)])


def test_a_missing_input_is_an_error_until_it_is_forgotten(corpus_copy, tmp_path,
                                                           tiny_embedder):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "奨学金規程.txt").write_text("奨学金規程\n第1条 この規程は奨学金について定める。\n",
                                       encoding="utf-8")
    index = tmp_path / "idx"
    ingest([corpus_copy, extra], index, _settings(tiny_embedder))
    before = _sources(index)
    extra.rename(tmp_path / "renamed")           # an unmounted share, a renamed folder
    with pytest.raises(IngestError, match=f"{extra}: an input of .* is missing.*--forget"):
        ingest([], index, _settings(tiny_embedder))
    assert _sources(index) == before             # nothing was written
    report = ingest([], index, _settings(tiny_embedder), forget=[extra])
    assert [d.source for d in report.documents if d.status == "removed"] == ["奨学金規程.txt"]
    assert store.read_manifest(index).inputs == [str(corpus_copy)]


def test_removing_most_documents_needs_yes(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    before = _sources(index)
    docs = sorted(f for f in corpus_copy.iterdir()
                  if f.suffix in (".txt", ".md", ".html", ".pdf"))
    for f in docs[:5]:
        f.unlink()
    run = CliRunner().invoke
    r = run(cli, ["ingest", "--index", str(index), "-q"], obj={})
    assert r.exit_code == 1 and "would remove" in r.output and "--yes" in r.output
    assert _sources(index) == before
    r = run(cli, ["ingest", "--index", str(index), "-q", "--yes"], obj={})
    assert r.exit_code == 0, r.output
    assert len(_sources(index)) < len(before)


def test_a_failed_write_is_one_line_and_leaves_nothing_behind(corpus_copy, tmp_path,
                                                              tiny_embedder, monkeypatch):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    live = store.current_generation(index)
    _edit(corpus_copy / "学則.txt", "除籍する", "除籍するものとする")

    def full(path, lines):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store, "_write_lines", full)
    with pytest.raises(store.IndexStoreError, match="No space left on device.*unchanged"):
        ingest([corpus_copy], index, _settings(tiny_embedder))
    assert store.current_generation(index) == live
    assert not [e for e in index.iterdir() if e.name.endswith(".partial")]


def test_an_index_path_that_is_a_file_is_a_clear_error(corpus_copy, tmp_path, tiny_embedder):
    not_a_dir = tmp_path / "index"
    not_a_dir.write_text("x", encoding="utf-8")
    # Given through RAG_INDEX, it is not checked by the option parser.
    r = CliRunner().invoke(cli, ["ingest", str(corpus_copy), "--embedder", str(tiny_embedder)],
                           obj={}, env={"RAG_INDEX": str(not_a_dir)})
    assert r.exit_code == 1 and "is not a directory" in r.output
    assert "Traceback" not in r.output


def test_pipes_and_other_special_files_are_skipped_with_a_reason(corpus_copy, tmp_path,
                                                                 tiny_embedder):
    import os
    os.mkfifo(corpus_copy / "規程.txt")            # reading it would block forever
    (corpus_copy / "memo").write_text("x", encoding="utf-8")
    report = ingest([corpus_copy], tmp_path / "idx", _settings(tiny_embedder))
    reasons = {d.source: d.reason for d in report.skipped}
    assert "not a regular file" in reasons["規程.txt"]
    assert "unsupported file type '(no extension)'" in reasons["memo"]
    assert report.written and not report.failures


def test_leftovers_of_a_killed_run_go_even_when_nothing_changed(corpus_copy, tmp_path,
                                                                tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    (index / "gen-20260101T000000-1-abcdef.partial").mkdir()
    report = ingest([], index, _settings(tiny_embedder))
    assert not report.written
    assert not [e for e in index.iterdir() if e.name.endswith(".partial")]


READER = """
import json, sys, time
from pathlib import Path
from ingest import store
index, stop = Path(sys.argv[1]), Path(sys.argv[2])
loads = errors = 0
first = None
while not stop.exists():
    try:
        idx = store.load_index(index)
        assert len(idx.passages) == idx.dense.ntotal > 0
        loads += 1
    except Exception as e:  # noqa: BLE001 - every failure counts
        errors += 1
        first = first or repr(e)
print(json.dumps({"loads": loads, "errors": errors, "first": first}))
"""


def test_readers_are_never_broken_by_a_swap(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    ingest([corpus_copy], index, _settings(tiny_embedder))
    stop = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(index), str(stop)],
                                cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for i in range(8):                        # each edit makes a new generation
            _edit(corpus_copy / "学則.txt", "除籍", "除籍" if i % 2 else "除名")
            _edit(corpus_copy / "学則.txt", "除名", "除籍" if i % 2 else "除名")
            ingest([corpus_copy], index, _settings(tiny_embedder))
    finally:
        stop.touch()
    results = [json.loads(p.communicate(timeout=120)[0]) for p in readers]
    assert all(r["errors"] == 0 for r in results), results
    assert all(r["loads"] > 0 for r in results)


def test_dry_run_counts_what_it_would_embed(corpus_copy, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    report = ingest([corpus_copy], index, _settings(tiny_embedder), dry_run=True)
    assert report.embedded == report.passages > 80 and not report.written
    assert any(n.startswith("would embed") for n in report.notes)
    ingest([corpus_copy], index, _settings(tiny_embedder))
    _edit(corpus_copy / "学則.txt", "除籍する", "除籍するものとする")
    report = ingest([corpus_copy], index, _settings(tiny_embedder), dry_run=True)
    assert 0 < report.embedded < 5 and report.reused == report.passages - report.embedded
