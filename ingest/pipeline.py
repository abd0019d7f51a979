"""`rag ingest`: find documents, split them, embed what changed, swap the index in.

Only documents whose bytes changed are loaded and split again, and only passages
whose search text changed are embedded again; everything else is carried over
from the live index with its vectors and BM25 tokens.

`ingest()` runs these steps in order, each a function below:

  discover   which files (ingest/discover.py)
  _plan      the previous index, the embedder and its prefixes, and what of the old
             index still holds: its passages and vectors (same model, weights, prefixes
             and splitter), its BM25 tokens (same tokenizer)
  _collect   load and split each file, or carry it over unchanged; the report
  _embed     vectors and tokens: reused by content hash, the rest computed
  _write     the Manifest, FAISS and BM25, a new generation swapped in
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import bigram, store
from .editions import EDITIONS_FILE, EditionTable
from .discover import IGNORE_FILE, SourceFile, discover
from .display import escape_controls
from .embedder import DEFAULT_EMBEDDER, EmbedderInfo, LazyEmbedder, resolve_revision
from .estimate import estimate
from .inputs import Inputs, resolve_inputs
from .loaders import SUPPORTED_SUFFIXES, LoadError, load_document
from .passage import Passage, content_hash
from .progress import Progress, track
from .report import DocumentChange, IngestError, IngestReport, article_changes
from .splitter import SPLITTER_VERSION, analyse_document, change_key
from .store import DenseInfo, DocumentRecord, Manifest, StoredIndex
from .title import declared_title
from .tokenizer import JapaneseTokenizer


# A regulation, even a whole 便覧 as PDF, is a few MB; a file far larger is a mistake
# (a log, a dump, a video renamed) that would hold the index lock for a long time.
DEFAULT_MAX_FILE_BYTES = 20_000_000


@dataclass
class IngestSettings:
    embedder: str | None = None          # an explicit choice: re-embeds if it differs
    default_embedder: str | None = None  # for a new index only (config file, RAG_EMBEDDER)
    query_prefix: str | None = None
    passage_prefix: str | None = None
    max_tokens: int | None = None        # None: the embedder's own window
    batch_size: int = 32
    embed_dtype: str = "auto"            # auto | float32 | bfloat16 (ingest/embedder.py)
    dense: str | None = None             # flat | hnsw: explicit; rebuilds the FAISS index
    default_dense: str = "flat"          # for a new index only
    device: str | None = None
    trust_remote_code: bool = False
    titles: dict[str, str] = field(default_factory=dict)   # [ingest.titles]: path -> title
    editions: dict = field(default_factory=dict)   # [ingest.editions]: path -> date or table
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES      # larger files are not read (None: any)


# --------------------------------------------------------------------------- ingest

def ingest(paths: list[Path], index_dir: Path, settings: IngestSettings | None = None, *,
           strict: bool = False, dry_run: bool = False, progress: bool = False,
           forget: list[Path] = (), yes: bool = False, default_paths: list[Path] = (),
           log: Callable[[str], None] = lambda s: None) -> IngestReport:
    """Add or refresh `paths` in the index and keep every other document; with no
    paths, re-read every input the index records (`default_paths` for an index that
    records none). `forget` drops recorded inputs and their documents. A run that would
    remove more than half of the documents stops unless `yes`."""
    req = _Request(list(paths), Path(index_dir), settings or IngestSettings(), strict,
                   dry_run, progress, log, list(forget), yes, list(default_paths))
    started = time.perf_counter()
    lock = contextlib.nullcontext() if dry_run else store.index_lock(req.index_dir)
    with lock:
        if not dry_run:
            store.remove_partials(req.index_dir)      # left by a killed or failed run
        plan = _plan(req)
        inputs = resolve_inputs(req.index_dir, plan.old_manifest.inputs if plan.old_manifest
                                else [], req.paths, req.forget, req.default_paths)
        files, problems = discover(inputs.read, inputs.bases)
        if not files and not problems and not inputs.forgotten:
            raise IngestError(f"no supported documents ({', '.join(sorted(SUPPORTED_SUFFIXES))}) "
                              f"under {', '.join(map(str, inputs.read))}")
        new = _collect(req, plan, inputs, files, problems)
        report = new.report
        _refuse_incomplete(req, plan, new)
        report.passages = len(new.passages)
        report.indexed_documents = len(new.documents)     # a removed one is not among them
        if dry_run:
            report.embedded, notes = estimate(new.passages, plan.old.passages if plan.old and
                                              plan.same_setup else [], plan.embedder.get)
            report.reused = len(new.passages) - report.embedded
            report.notes += notes
        elif _nothing_to_write(plan, report, inputs) and _same_editions(plan, new, req):
            report.reused = len(new.passages)
        else:
            vectors = _embed(req, plan, new.passages)
            report.embedded = vectors.embedded
            report.reused = len(new.passages) - vectors.embedded
            _write(req, plan, new, vectors, inputs, _editions(req, new))
            report.written = True
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Request:
    """What `ingest()` was asked to do; every step reads it."""
    paths: list[Path]
    index_dir: Path
    settings: IngestSettings
    strict: bool
    dry_run: bool
    progress: bool
    log: Callable[[str], None]
    forget: list[Path]
    yes: bool
    default_paths: list[Path]


# --------------------------------------------------------------------------- plan

@dataclass
class _Plan:
    """The previous index and what this run can take over from it."""
    old: StoredIndex | None
    embedder: LazyEmbedder
    tokenizer: JapaneseTokenizer
    splitter: dict
    dense_kind: str
    same_setup: bool         # same model, weights, prefixes, splitter: passages and vectors
    same_tokenizer: bool     # BM25 tokens

    @property
    def old_manifest(self) -> Manifest | None:
        return self.old.manifest if self.old else None

    @property
    def old_documents(self) -> dict[str, DocumentRecord]:
        return self.old.manifest.documents if self.old else {}


def _plan(req: _Request) -> _Plan:
    s = req.settings
    old = _load_previous(req.index_dir, req.log)
    old_manifest = old.manifest if old else None
    old_embedder = old_manifest.embedder if old_manifest else None
    # An existing index keeps its embedder unless one is named explicitly: a changed
    # default in rag.toml must not silently re-embed (and re-split) everything.
    name = (s.embedder or (old_embedder.name if old_embedder else None) or s.default_embedder
            or DEFAULT_EMBEDDER)
    if Path(name).is_dir():
        name = str(Path(name).resolve())
    same_model = old_embedder is not None and name == old_embedder.name
    old_prefixes = ((old_embedder.query_prefix, old_embedder.passage_prefix)
                    if old_embedder else (None, None))
    # Prefixes: the flags, else those the index was built with, else the model's own.
    prefixes = tuple(given if given is not None else (kept if same_model else None)
                     for given, kept in zip((s.query_prefix, s.passage_prefix), old_prefixes))
    tokenizer = JapaneseTokenizer()
    splitter = {"version": SPLITTER_VERSION, "max_tokens": s.max_tokens}
    old_dense = old_manifest.dense.kind if old_manifest and old_manifest.dense else None
    dense_kind = s.dense or old_dense or s.default_dense
    # Same model (name and weights), prefixes and splitter: unchanged files are carried
    # over as they are. Anything else redoes every vector (and every passage size).
    revision = resolve_revision(name) if same_model else None
    same_setup = (same_model and old_manifest.splitter == splitter
                  and prefixes == old_prefixes
                  and revision in ("unknown", old_embedder.revision))
    # BM25 tokens depend only on the text and the tokenizer (Sudachi and its dictionary).
    same_tokenizer = old is not None and old_manifest.tokenizer == tokenizer.info
    if old and not same_setup:
        req.log("embedder, its weights, prefixes or splitter settings differ from the index: "
                "re-splitting and re-embedding everything")
    return _Plan(old, LazyEmbedder(req.settings, name, prefixes, req.log), tokenizer,
                 splitter, dense_kind, same_setup, same_tokenizer)


def _load_previous(index_dir: Path, log) -> StoredIndex | None:
    if store.current_generation(index_dir) is None:
        return None
    try:
        return store.load_index(index_dir, with_tokens=True)
    except store.IndexStoreError as e:
        log(f"ignoring the existing index ({e}); rebuilding from scratch")
        return None


# --------------------------------------------------------------------------- collect

class _Collection:
    """The new index's documents and passages, gathered file by file, and the report."""

    def __init__(self, plan: _Plan, report: IngestReport):
        self.plan, self.report = plan, report
        self.passages: list[Passage] = []
        self.documents: dict[str, DocumentRecord] = {}
        self._old_by_id = {p.id: i for i, p in enumerate(plan.old.passages)} if plan.old else {}

    def keep_old(self, source: str) -> int:
        """Carry a document's passages over from the live index (unchanged or unreadable
        now); how many."""
        prev = self.plan.old_documents.get(source)
        if not prev or self.plan.old is None:
            return 0
        self.documents[source] = prev
        for pid in prev.passages:
            self.passages.append(self.plan.old.passages[self._old_by_id[pid]])
        return len(prev.passages)

    def diff(self, source: str, prev: DocumentRecord | None,
             passages: list[Passage]) -> DocumentChange:
        if not prev:
            return DocumentChange(source, "added", passages=len(passages))
        old = self.plan.old.passages
        before = {change_key(pid, source): old[self._old_by_id[pid]].text
                  for pid in prev.passages}
        after = {change_key(p.id, source): p.text for p in passages}
        added, changed, removed = article_changes(before, after)
        return DocumentChange(source, "changed", passages=len(passages), added=added,
                              changed=changed, removed=removed)


def _collect(req: _Request, plan: _Plan, inputs: Inputs, files: list[SourceFile],
             problems: list[DocumentChange]) -> _Collection:
    new = _Collection(plan, IngestReport(str(req.index_dir), list(problems),
                                         dry_run=req.dry_run))
    report = new.report
    for f in track(files, len(files), "loading", "file", enabled=req.progress):
        report.documents.append(_collect_file(req, plan, new, f))
    for problem in problems:      # refused before loading (e.g. a symlink out): keep old
        if problem.source not in new.documents and problem.source in plan.old_documents:
            new.keep_old(problem.source)
            problem.reason += "; keeping the previously indexed version"
    listed = {d.source for d in report.documents}
    for source, prev in plan.old_documents.items():
        if source in new.documents or source in listed:
            continue
        path = Path(prev.root) / source
        if inputs.keeps(path) and not inputs.reads(path):
            # Not read this run (`rag ingest ONE_FILE`): everything else stays as it is.
            report.documents.append(DocumentChange(source, "unchanged",
                                                   passages=new.keep_old(source)))
        else:
            # Its file disappeared from a folder read now, or its input was forgotten.
            report.documents.append(DocumentChange(source, "removed",
                                                   passages=len(prev.passages)))
    report.documents.sort(key=lambda d: d.source)
    return new


def _collect_file(req: _Request, plan: _Plan, new: _Collection, f: SourceFile) -> DocumentChange:
    """Load and split one file into `new`, or carry its old passages over."""
    prev = plan.old_documents.get(f.source)
    kept = "; keeping the previously indexed version" if prev else ""
    limit = req.settings.max_file_bytes
    try:
        size = f.path.stat().st_size
        if limit and size > limit:
            new.keep_old(f.source)
            return DocumentChange(f.source, "failed", reason=(
                f"too large ({_mb(size)}, over the {_mb(limit)} limit: max_file_mb in "
                f"[ingest] of rag.toml){kept}"))
        data = f.path.read_bytes()
    except OSError as e:
        new.keep_old(f.source)
        return DocumentChange(f.source, "failed", reason=str(e) + kept)
    digest = hashlib.sha256(data).hexdigest()
    declared = declared_title(req.settings.titles, f.source)
    if (plan.same_setup and prev and prev.sha256 == digest
            and prev.declared_title == declared):
        return DocumentChange(f.source, "unchanged", passages=new.keep_old(f.source))
    try:
        doc = load_document(f.path, data)
        if declared:
            doc.title = doc.declared_title = declared
        model = plan.embedder.get()
        max_tokens = req.settings.max_tokens or model.max_tokens
        analysis = analyse_document(doc, f.source, max_tokens=max_tokens,
                                    count_tokens=model.count_tokens)
        passages = analysis.passages
    except LoadError as e:
        new.keep_old(f.source)
        reason = str(e) + ("; keeping the previously indexed version" if prev else "")
        return DocumentChange(f.source, "failed", reason=reason)
    for w in doc.warnings + analysis.warnings:
        new.report.notes.append(f"{f.source}: {w}")
    new.documents[f.source] = DocumentRecord(
        sha256=digest, title=doc.title, kind=doc.kind, encoding=doc.encoding,
        root=str(f.root), pages=len(doc.pages) if doc.kind == "pdf" else None,
        declared_title=declared, passages=[p.id for p in passages])
    new.passages.extend(passages)
    change = new.diff(f.source, prev, passages)
    if prev and prev.sha256 == digest:
        change.reason = "re-indexed (embedder or splitter settings changed)"
    return change


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def _refuse_incomplete(req: _Request, plan: _Plan, new: _Collection) -> None:
    """Stop before writing: --strict with a failed file, nothing left to index, or more
    than half of the documents about to go without --yes."""
    removed = [d.source for d in new.report.documents if d.status == "removed"]
    before = len(plan.old_documents)
    if removed and len(removed) * 2 > before and not req.yes and not req.dry_run:
        shown = ", ".join(removed[:10]) + (" …" if len(removed) > 10 else "")
        raise IngestError(f"this would remove {len(removed)} of the {before} documents of "
                          f"{req.index_dir} ({shown}); nothing was written. If that is what "
                          "you want, run it again with --yes")
    failures = new.report.failures
    if failures and req.strict:
        raise IngestError(escape_controls("--strict: not writing the index because of "
                          + "; ".join(f"{d.source}: {d.reason}" for d in failures)))
    if not new.passages:
        raise IngestError(escape_controls("no passages to index: every document failed to "
                          "load " + "; ".join(f"{d.source}: {d.reason}" for d in failures)))


def _nothing_to_write(plan: _Plan, report: IngestReport, inputs: Inputs) -> bool:
    """The live index already is what this run would write."""
    old = plan.old_manifest
    return bool(old and plan.same_setup and plan.same_tokenizer and not report.changed
                and not report.failures and old.dense and plan.dense_kind == old.dense.kind
                and inputs.recorded == sorted(inputs.before))


# --------------------------------------------------------------------------- embed

@dataclass
class _Vectors:
    vectors: np.ndarray              # one row per passage, in order
    tokens: list[list[str]]          # BM25 tokens, likewise
    embedder: EmbedderInfo           # the model the vectors come from
    embedded: int                    # how many were computed (the rest reused)


def _embed(req: _Request, plan: _Plan, passages: list[Passage]) -> _Vectors:
    """Reuse whatever has the same search text, compute the rest."""
    old = plan.old
    texts = [p.search_text() for p in passages]
    keys = [content_hash(t, 16) for t in texts]
    old_keys = {content_hash(p.search_text(), 16): i
                for i, p in enumerate(old.passages)} if old else {}
    vec_cache = old_keys if plan.same_setup else {}
    tok_cache = old_keys if plan.same_tokenizer else {}
    todo = [i for i, k in enumerate(keys) if k not in vec_cache]
    # Removing a document needs no model; anything new does, and then the model must
    # still be the one the stored vectors came from.
    model = plan.embedder.get() if todo else None
    if model and vec_cache and model.info.revision != old.manifest.embedder.revision:
        req.log(f"embedder {plan.embedder.name} changed since the index was built: "
                "re-embedding everything")
        vec_cache = {}
        todo = list(range(len(texts)))
    info = model.info if model else old.manifest.embedder
    old_vectors = old.vectors() if vec_cache else None
    vectors = np.zeros((len(texts), info.dimension), dtype=np.float32)
    tokens: list[list[str] | None] = [None] * len(texts)
    for i, k in enumerate(keys):
        if k in vec_cache:
            vectors[i] = old_vectors[vec_cache[k]]
        if k in tok_cache:
            tokens[i] = old.tokens[tok_cache[k]]
    bar = Progress(len(todo), "embedding", "passage", enabled=req.progress)
    step = max(1, req.settings.batch_size) * 4
    # Longest first, across the whole run: every batch holds passages of one length, so
    # little of it is padding (sentence-transformers sorts only within one call).
    todo.sort(key=lambda i: -len(texts[i]))
    for start in range(0, len(todo), step):
        batch = todo[start:start + step]
        vectors[batch] = model.embed_passages([texts[i] for i in batch])
        bar.update(len(batch))
    bar.close()
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = plan.tokenizer.tokenize(texts[i])
    return _Vectors(vectors, tokens, info, len(todo))


# --------------------------------------------------------------------------- write

def _editions(req: _Request, new: _Collection) -> EditionTable:
    """Editions, their periods and 経過措置 (ingest/editions.py), for editions.json."""
    return EditionTable.build({s: d.title for s, d in new.documents.items()}, new.passages,
                              req.settings.editions)


def _same_editions(plan: _Plan, new: _Collection, req: _Request) -> bool:
    """The live index's editions.json already says what this run would write."""
    path = plan.old.path / EDITIONS_FILE if plan.old else None
    try:
        stored = json.loads(path.read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return False
    return stored == json.loads(json.dumps(_editions(req, new).to_dict(), ensure_ascii=False))


def _write(req: _Request, plan: _Plan, new: _Collection, vectors: _Vectors,
           inputs: Inputs, editions: EditionTable | None = None) -> None:
    old = plan.old_manifest
    manifest = Manifest(
        created=(old.created if old else None) or _now(), updated=_now(),
        embedder=vectors.embedder,
        tokenizer=plan.tokenizer.info,
        dense=DenseInfo.for_kind(plan.dense_kind),
        splitter=plan.splitter,
        # Every input ever given and not forgotten: a bare `rag ingest` re-reads them.
        inputs=inputs.recorded,
        documents=new.documents,
        passages=len(new.passages),
    )
    dense = store.build_dense(vectors.vectors, plan.dense_kind)
    bm25 = store.build_bm25(vectors.tokens)
    extra = {EDITIONS_FILE: editions.to_dict()} if editions is not None else None
    bigram_bm25 = bigram.build([p.search_text() for p in new.passages])
    store.write_generation(req.index_dir, manifest, new.passages, vectors.tokens, dense, bm25,
                           bigram_bm25, extra=extra)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = ["ingest", "discover", "IngestSettings", "IngestReport", "DocumentChange",
           "IngestError", "EmbedderInfo", "SourceFile", "IGNORE_FILE", "declared_title"]
