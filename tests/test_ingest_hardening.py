"""Issue 21, ingest side: files that broke an ingest or its report (a symlink loop, a
one-line file, a binary tail, an oversize file, a newline in a name), the document
count after a removal, progress off a terminal, `rag inspect`'s columns, the search
help, and a first run without the Hugging Face Hub."""
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest import layout, store
from ingest.discover import discover
from ingest.display import escape_controls, ljust, width
from ingest.document import LoadedDocument, LoadError, Page
from ingest.loaders import load_document
from ingest.pipeline import IngestSettings, ingest
from ingest.progress import Progress, write
from ingest.report import DocumentChange
from rag.cli import cli

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"
RULES = ["学則.txt", "履修規程.txt", "進級及び卒業要件に関する申合せ.txt"]


def run(*args, env=None):
    return CliRunner().invoke(cli, list(map(str, args)), obj={}, env=env)


@pytest.fixture
def small(tmp_path) -> Path:
    """Three of the sample regulations: enough to index, quick to embed."""
    d = tmp_path / "small"
    d.mkdir()
    for name in RULES:
        shutil.copy(CORPUS / name, d / name)
    return d


# --------------------------------------------------------------------------- bad files

def test_a_symlink_loop_is_reported_and_the_rest_indexed(small, tmp_path, tiny_embedder):
    (small / "a.txt").symlink_to("a.txt")                     # a.txt -> a.txt
    (small / "b.txt").symlink_to("c.txt")
    (small / "c.txt").symlink_to("b.txt")                     # b -> c -> b
    files, problems = discover([small])
    assert {f.source for f in files} == set(RULES)
    reasons = {p.source: p.reason for p in problems}
    assert set(reasons) == {"a.txt", "b.txt", "c.txt"}
    assert all("symlink loop" in r for r in reasons.values())
    report = ingest([small], tmp_path / "idx", IngestSettings(embedder=str(tiny_embedder)))
    assert {d.source for d in report.failures} == {"a.txt", "b.txt", "c.txt"}
    assert report.written and {p.source for p in store.load_index(tmp_path / "idx").passages} \
        == set(RULES)


def test_a_nul_byte_anywhere_makes_a_binary_file(tmp_path):
    text = "第１条　この規程は、学生の休学について定める。\n".encode() * 400    # > 8 KB
    assert len(text) > 8192
    f = tmp_path / "tail.txt"
    f.write_bytes(text + b"\x00\x01\x02binary tail")
    with pytest.raises(LoadError, match=r"binary file \(contains NUL bytes, the first at byte "
                                        rf"{len(text)}\)"):
        load_document(f)
    (tmp_path / "ok.txt").write_bytes(text)
    assert load_document(tmp_path / "ok.txt").text
    # A UTF-16 file (its BOM honoured) whose decoded text holds NUL characters.
    u16 = tmp_path / "u16.txt"
    u16.write_bytes("第１条　本文。\x00\x00まだ続く".encode("utf-16"))
    with pytest.raises(LoadError, match="NUL characters"):
        load_document(u16)


def test_a_nul_in_extracted_pdf_text_is_dropped_with_a_warning():
    from ingest.loaders import _refuse_nul
    doc = LoadedDocument([Page("第1条 本文\x00です。", 1)], "", "pdf")
    _refuse_nul(doc)
    assert doc.pages[0].text == "第1条 本文です。" and "NUL" in doc.warnings[0]


def test_an_oversize_file_is_reported_and_skipped(small, tmp_path, tiny_embedder):
    big = small / "大きすぎる.txt"
    big.write_text("第１条　この規程は大きい。\n" * 2000, encoding="utf-8")
    limit = big.stat().st_size - 1
    assert all((small / n).stat().st_size <= limit for n in RULES)
    report = ingest([small], tmp_path / "idx", IngestSettings(embedder=str(tiny_embedder),
                                                              max_file_bytes=limit))
    (failed,) = report.failures
    assert failed.source == "大きすぎる.txt"
    assert "too large" in failed.reason and "max_file_mb" in failed.reason
    assert {p.source for p in store.load_index(tmp_path / "idx").passages} == set(RULES)


def test_the_file_size_limit_is_a_setting(tmp_path):
    from rag.config import Config, load_config
    from rag.settings import ConfigError
    assert IngestSettings().max_file_bytes == 20_000_000 and Config().ingest.max_file_mb == 20
    toml = tmp_path / "rag.toml"
    toml.write_text("[ingest]\nmax_file_mb = 0.5\n", encoding="utf-8")
    assert load_config(toml).ingest.max_file_mb == 0.5
    toml.write_text("[ingest]\nmax_file_mb = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="max_file_mb"):
        load_config(toml)


# --------------------------------------------------------------------------- one long line

class _Recorder:
    """A compiled pattern that records the length of every string it is asked about."""

    def __init__(self, pattern, seen: list[int]):
        self.pattern, self.seen = pattern, seen

    def search(self, s, *a):
        self.seen.append(len(s))
        return self.pattern.search(s, *a)

    def match(self, s, *a):
        self.seen.append(len(s))
        return self.pattern.match(s, *a)


def _one_line(name: str, chars: int) -> str:
    unit = " ".join((CORPUS / name).read_text(encoding="utf-8").split("\n"))
    return (unit * (chars // len(unit) + 1))[:chars]


def test_a_one_line_file_is_read_through_bounded_windows(monkeypatch):
    """Each structural candidate of a long line is decided from the text near it, not
    from the whole line before and after it (which made reading quadratic: 4 MB took a
    minute); scripts/bench/bench_long_line.py measures the time."""
    seen: list[int] = []
    for name in ("_LABEL_BEFORE", "_CHAPTER_BEFORE", "_CAPTION_BEFORE", "_TITLE_BEFORE",
                 "REFERENCE_TAIL", "_QUANTITY"):
        monkeypatch.setattr(layout, name, _Recorder(getattr(layout, name), seen))
    text = _one_line("学則.txt", 120_000)
    lines, broken = layout._break_structure([layout.make_line(text, None)])
    assert broken > 500 and len(seen) > 1000
    assert max(seen) <= 1024, max(seen)           # the whole line was 120,000 characters


def test_a_one_line_file_splits_as_its_lines_do():
    """The 学則 as one line gives the articles the 学則 with its newlines gives."""
    from ingest.inspect import article_sequence
    from ingest.splitter import analyse_document
    source = (CORPUS / "学則.txt").read_text(encoding="utf-8")
    as_lines = analyse_document(LoadedDocument([Page(source)], "", "txt"), "a.txt")
    one = analyse_document(LoadedDocument([Page(" ".join(source.split("\n")))], "", "txt"),
                           "b.txt")
    assert article_sequence(one.passages) == article_sequence(as_lines.passages)
    assert len(article_sequence(one.passages)) > 40


def test_text_without_any_break_is_cut_counting_a_window_not_the_rest():
    """A line with neither 。 nor 、 is cut by characters: each cut counts the tokens of
    a window ahead (linear), not of everything left (quadratic in the line's length)."""
    from ingest.splitter import analyse_document
    text = "学生は所定の手続を経て授業料を納付するものとし" * 4000        # 92,000 characters
    counted: list[int] = []

    def count(s: str) -> int:
        counted.append(len(s))
        return len(s)

    analysis = analyse_document(LoadedDocument([Page(text)], "t", "txt"), "flat.txt",
                                max_tokens=128, count_tokens=count)
    total = sum(counted)
    body = "".join(p.text for p in analysis.passages)
    assert body == text                                     # nothing lost or repeated
    assert all(len(p.search_text()) <= 128 for p in analysis.passages)
    assert total < 12 * len(text), total                    # before: ~400 times


# --------------------------------------------------------------------------- reports

def test_control_characters_in_a_name_are_escaped_in_the_report():
    line = DocumentChange("悪い\n名前\x1b[31m.txt", "failed", reason="empty file").describe()
    assert "\n" not in line and "\x1b" not in line
    assert line == "悪い\\n名前\\x1b[31m.txt: skipped: empty file"
    assert escape_controls("第１条\u3000本文") == "第１条\u3000本文"   # a full-width space stays
    assert escape_controls("a\u202eb\tc") == "a\\u202eb\\tc"


def test_a_newline_in_a_file_name_stays_on_its_report_line(small, tmp_path, tiny_embedder):
    (small / "改行\n入り.txt").write_bytes(b"")                 # empty: reported by name
    r = run("ingest", small, "--index", tmp_path / "idx", "--embedder", tiny_embedder, "-q")
    assert r.exit_code == 0, r.output
    (line,) = [ln for ln in r.stderr.splitlines() if "入り" in ln]
    assert line == "改行\\n入り.txt: skipped: empty file"


def test_the_document_count_leaves_out_a_removed_document(small, tmp_path, tiny_embedder):
    index = tmp_path / "idx"
    args = ("ingest", small, "--index", index, "--embedder", tiny_embedder, "-q")
    r = run(*args)
    assert r.exit_code == 0 and "from 3 documents" in r.stdout, r.output
    (small / RULES[1]).unlink()
    dry = run(*args, "--dry-run")
    assert "would index" in dry.stdout and "from 2 documents" in dry.stdout, dry.output
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert f"{RULES[1]}: removed" in r.stdout and "from 2 documents" in r.stdout, r.stdout
    assert len(store.read_manifest(index).documents) == 2


# --------------------------------------------------------------------------- progress

def test_progress_off_a_terminal_is_plain_lines(small, tmp_path, tiny_embedder,
                                                monkeypatch):
    """stderr is no terminal here (a Slurm .err file, a pipe): lines, not silence. And
    the messages of an ingest go through `ingest.progress.write`, which puts them
    above a bar on a terminal rather than into its middle."""
    import ingest.progress
    written = []
    original = ingest.progress.write
    monkeypatch.setattr(ingest.progress, "write",
                        lambda m, stream=None: (written.append(m), original(m, stream)))
    r = run("ingest", small, "--index", tmp_path / "idx", "--embedder", tiny_embedder,
            "--batch-size", 4)
    assert r.exit_code == 0, r.output
    assert written == [f"loading embedder {tiny_embedder}"]
    err = r.stderr.splitlines()
    assert any(re.fullmatch(r"loading: 3/3 files done in \d+s", ln) for ln in err), err
    embedding = [ln for ln in err if ln.startswith("embedding: ")]
    assert any(re.fullmatch(r"embedding: \d+/\d+ passages \(\d+%\), \d+s", ln)
               for ln in embedding), err
    assert re.fullmatch(r"embedding: (\d+)/\1 passages done in \d+s", embedding[-1])
    assert "\r" not in r.stderr                             # no bar drawn into a file
    quiet = run("ingest", small, "--index", tmp_path / "idx2", "--embedder", tiny_embedder,
                "-q")
    assert "embedding" not in quiet.stderr


def test_plain_progress_every_step_or_interval():
    out = io.StringIO()
    now = [0.0]
    bar = Progress(100, "embedding", "passage", stream=out, step=0.25, interval=10,
                   clock=lambda: now[0])
    for _ in range(10):
        bar.update(1)                                       # 10 %: not yet
    now[0] = 11.0
    bar.update(1)                                           # 11 %, but 11 s later
    bar.update(20)                                          # 31 %: past the first step
    bar.update(69)
    bar.close()
    assert out.getvalue().splitlines() == [
        "embedding: 11/100 passages (11%), 11s", "embedding: 31/100 passages (31%), 11s",
        "embedding: 100/100 passages done in 11s"]
    disabled = io.StringIO()
    with Progress(5, "x", "file", enabled=False, stream=disabled) as p:
        p.update(5)
    assert disabled.getvalue() == ""


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_message_during_a_bar_goes_above_it_not_into_it():
    """`loading embedder ...` is logged while the loading bar is drawn: on a line of its
    own, the bar redrawn after it."""
    tty = _Tty()
    with Progress(3, "loading", "file", stream=tty) as bar:
        bar.update(1)
        write("loading embedder cl-nagoya/ruri-v3-30m", stream=tty)
        bar.update(2)
    screen = tty.getvalue()
    # Whatever the bar drew before, the message starts a line (after a newline or the
    # carriage return that cleared the bar) and ends one.
    assert re.search(r"(^|[\r\n])loading embedder cl-nagoya/ruri-v3-30m\n", screen), screen
    assert "loading:" in screen.split("loading embedder")[1]          # redrawn after it


# --------------------------------------------------------------------------- display

def test_inspect_pads_by_display_width():
    from ingest.inspect import render
    units = [{"article": a, "caption": c, "paragraph": "", "page": None, "start": "本文"}
             for a, c in (("第1条", "目的"), ("第42条", "除籍及び再入学"), ("(text)", ""))]
    report = {"file": "x.txt", "title": "t", "title_source": "the text", "structure": "r",
              "kind": "txt", "pages": 1, "articles_split": 2, "article_numbers_mentioned": 2,
              "article_share": 1.0, "passages": 3, "despaced_lines": 0,
              "breaks_inserted": 0, "dropped": [], "warnings": [], "units": units}
    rows = [ln for ln in render(report) if ln.endswith("本文")]
    assert len(rows) == 3
    assert len({width(ln.split("本文")[0]) for ln in rows}) == 1, rows   # one column
    assert width("第42条（除籍）") == 14 and ljust("第1条", 8) == "第1条   "


def test_search_and_ask_help_say_which_score_is_which():
    search = " ".join(run("search", "--help").output.split())
    assert "reciprocal rank fusion" in search and "--min-score" in search
    assert "cosine" in search
    ask = " ".join(run("ask", "--help").output.split())
    assert "dense (cosine) similarity" in ask and "not the hybrid score" in ask


# --------------------------------------------------------------------------- first run

def test_the_quick_start_installs_cpu_torch_and_points_to_offline_use():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    command = next(ln for ln in quick.splitlines() if ln.startswith("python3 -m venv"))
    assert "--index-url https://download.pytorch.org/whl/cpu" in command
    assert command.index("whl/cpu") < command.index("pip install -e")
    assert "(#offline-use)" in quick and "rag models download" in quick
    assert "\n## Offline use\n" in readme


def _no_hub_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_CACHE=str(tmp_path / "hf" / "hub"), PYTHONPATH=str(REPO))
    return env


def test_an_unreachable_hub_is_one_line_within_seconds(small, tmp_path):
    """No Hub (HF_ENDPOINT refuses) and a model that is not cached: one line that says
    what to do, not a minute and a half of retries (the timeout is a guard: before, 86 s)."""
    proc = subprocess.run(
        [sys.executable, "-m", "rag", "ingest", str(small), "--index", str(tmp_path / "i"),
         "--embedder", "nobody/not-cached-embedder", "-q"],
        cwd=tmp_path, env=_no_hub_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: cannot load embedder 'nobody/not-cached-embedder': the "
                           "Hugging Face Hub (http://127.0.0.1:9) cannot be reached")
    assert "`rag models download`" in line and '"Offline use"' in line
    code = ("from rag.generation.models import load_tokenizer\n"
            "try:\n    load_tokenizer('nobody/not-cached-generator')\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env=_no_hub_env(tmp_path), capture_output=True, text=True, timeout=60)
    (line,) = proc.stdout.strip().splitlines()
    assert line.startswith("HubUnreachable cannot load generator 'nobody/not-cached-generator'")


def test_an_unreachable_hub_reads_a_cached_model_without_retrying(tmp_path, tiny_embedder):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--cl-nagoya--tiny-test"
    shutil.copytree(tiny_embedder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = ("from ingest.embedder import Embedder; e = Embedder('cl-nagoya/tiny-test'); "
            "print(e.name, e.revision, e.embed_queries(['除籍']).shape[0])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env=_no_hub_env(tmp_path), capture_output=True, text=True,
                          timeout=60)                       # before: retries past 300 s
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cl-nagoya/tiny-test", commit, "1"]
    assert "Retrying" not in proc.stderr and "127.0.0.1:9" not in proc.stderr
