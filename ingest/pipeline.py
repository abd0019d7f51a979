"""`rag ingest`: find documents, split them, embed what changed, swap the index in.

Only documents whose bytes changed are loaded and split again, and only passages
whose search text changed are embedded again; everything else is carried over
from the live index with its vectors and BM25 tokens.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .embedder import DEFAULT_EMBEDDER, Embedder, EmbedderInfo, resolve_revision
from .errors import RagError
from .loaders import CONVERTIBLE, SUPPORTED_SUFFIXES, LoadError, load_document
from .passage import Passage, content_hash
from .splitter import SPLITTER_VERSION, analyse_document, change_key
from .tokenizer import JapaneseTokenizer


class IngestError(RagError):
    """Ingest cannot go on (no documents, --strict with bad files, ...)."""


@dataclass
class SourceFile:
    path: Path        # absolute
    source: str       # relative to its root, POSIX separators
    root: Path


@dataclass
class DocumentChange:
    source: str
    status: str                     # added | changed | removed | unchanged | failed
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reason: str = ""                # why it failed, or why an unchanged file was re-indexed
    passages: int = 0

    def describe(self) -> str:
        if self.status == "failed":
            return f"{self.source}: skipped: {self.reason}"
        if self.status in ("added", "removed", "unchanged"):
            return f"{self.source}: {self.status} ({self.passages} passages)"
        if self.reason:          # re-indexed for new settings: part lists would be noise
            return f"{self.source}: {self.reason}"
        parts = [f"{k} changed" for k in self.changed] + [f"{k} added" for k in self.added] + [
            f"{k} removed" for k in self.removed]
        return f"{self.source}: " + (", ".join(parts) or "no article changed (layout only)")


@dataclass
class IngestReport:
    index: str
    documents: list[DocumentChange]
    passages: int = 0
    embedded: int = 0
    reused: int = 0
    dry_run: bool = False
    written: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[DocumentChange]:
        return [d for d in self.documents if d.status == "failed"]

    @property
    def changed(self) -> bool:
        return any(d.status not in ("unchanged", "failed") for d in self.documents)

    def to_dict(self) -> dict:
        return {"index": self.index, "dry_run": self.dry_run, "written": self.written,
                "passages": self.passages, "embedded": self.embedded, "reused": self.reused,
                "seconds": round(self.seconds, 3), "notes": self.notes,
                "documents": [d.__dict__ for d in self.documents]}


@dataclass
class IngestSettings:
    embedder: str | None = None          # an explicit choice: re-embeds if it differs
    default_embedder: str | None = None  # for a new index only (config file, RAG_EMBEDDER)
    query_prefix: str | None = None
    passage_prefix: str | None = None
    max_tokens: int | None = None        # None: the embedder's own window
    batch_size: int = 32
    dense: str | None = None             # flat | hnsw: explicit; rebuilds the FAISS index
    default_dense: str = "flat"          # for a new index only
    device: str | None = None
    trust_remote_code: bool = False
    titles: dict[str, str] = field(default_factory=dict)   # [ingest.titles]: path -> title


def declared_title(titles: dict[str, str], source: str) -> str:
    """The admin's title for a document: keyed by its path relative to the ingested
    directory (matched as the end of the path), or by its file name."""
    source = source.replace("\\", "/")
    for key, title in titles.items():
        key = key.strip("/")
        if source == key or source.endswith("/" + key):
            return title
    return titles.get(source.rsplit("/", 1)[-1], "")


# --------------------------------------------------------------------------- discovery

def discover(paths: list[Path]) -> tuple[list[SourceFile], list[DocumentChange]]:
    """Supported files under `paths`, never leaving them (symlinks out are refused)."""
    found: dict[str, SourceFile] = {}
    problems: list[DocumentChange] = []
    seen: set[Path] = set()           # `rag ingest corpus corpus/学則.txt` reads it once
    for given in paths:
        given = Path(given)
        if not given.exists():
            raise IngestError(f"{given}: no such file or directory")
        root = given.resolve() if given.is_dir() else given.resolve().parent
        if given.is_file():
            suffix = given.suffix.lower()
            if suffix not in SUPPORTED_SUFFIXES:
                reason = CONVERTIBLE.get(suffix) or f"unsupported file type {given.suffix!r}"
                problems.append(DocumentChange(given.name, "failed", reason=reason))
                continue
            candidates = [given.absolute()]
        else:
            # Real files before symlinks, so a link to a file in the tree is the duplicate.
            candidates = sorted(_walk(given.absolute()), key=lambda p: (p.is_symlink(), p))
        for path in candidates:
            rel = Path(os.path.relpath(path, given.absolute() if given.is_dir()
                                       else given.absolute().parent)).as_posix()
            if path.suffix.lower() in CONVERTIBLE:     # a Word .doc among the rules: say so
                problems.append(DocumentChange(rel, "failed",
                                               reason=CONVERTIBLE[path.suffix.lower()]))
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    problems.append(DocumentChange(rel, "failed",
                                                   reason=f"symlink to {target}, outside {given}"))
                    continue
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            if rel in found:
                problems.append(DocumentChange(rel, "failed", reason=(
                    f"same relative path under {found[rel].root} and {root}")))
                continue
            found[rel] = SourceFile(path, rel, root)
    return list(found.values()), problems


IGNORE_FILE = ".ragignore"


def _walk(top: Path):
    """Documents under `top` (and files to report as convertible), skipping hidden ones
    and what a `.ragignore` in a directory excludes (glob patterns relative to that
    directory, one a line; `name/` excludes a directory)."""
    rules: list[tuple[Path, list[str]]] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        here = Path(dirpath)
        if IGNORE_FILE in filenames:
            rules.append((here, _ignore_patterns(here / IGNORE_FILE)))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not _ignored(here / d, True, rules))
        for name in sorted(filenames):
            suffix = Path(name).suffix.lower()
            if (not name.startswith(".") and (suffix in SUPPORTED_SUFFIXES or suffix in CONVERTIBLE)
                    and not _ignored(here / name, False, rules)):
                yield here / name


def _ignore_patterns(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _ignored(path: Path, is_dir: bool, rules: list[tuple[Path, list[str]]]) -> bool:
    for base, patterns in rules:
        if not path.is_relative_to(base):
            continue
        rel = path.relative_to(base).as_posix()
        for pat in patterns:
            if pat.endswith("/"):
                if is_dir and (fnmatch.fnmatch(rel, pat[:-1]) or fnmatch.fnmatch(path.name, pat[:-1])):
                    return True
            elif fnmatch.fnmatch(rel, pat) or ("/" not in pat and fnmatch.fnmatch(path.name, pat)):
                return True
    return False


# --------------------------------------------------------------------------- ingest

def ingest(paths: list[Path], index_dir: Path, settings: IngestSettings | None = None, *,
           strict: bool = False, dry_run: bool = False, progress: bool = False,
           log: Callable[[str], None] = lambda s: None) -> IngestReport:
    settings = settings or IngestSettings()
    index_dir = Path(index_dir)
    started = time.perf_counter()
    files, problems = discover(paths)
    if not files and not problems:
        raise IngestError(f"no supported documents ({', '.join(sorted(SUPPORTED_SUFFIXES))}) "
                          f"under {', '.join(map(str, paths))}")
    lock = contextlib.nullcontext() if dry_run else store.index_lock(index_dir)
    with lock:
        report = _ingest_locked(paths, files, problems, index_dir, settings, strict, dry_run,
                                progress, log)
    report.seconds = time.perf_counter() - started
    return report


class _LazyEmbedder:
    """Loads the model only when a document actually needs splitting or embedding."""

    def __init__(self, settings: IngestSettings, name: str, prefixes: tuple, log):
        self.settings, self.name, self.prefixes, self.log = settings, name, prefixes, log
        self._model: Embedder | None = None

    def get(self) -> Embedder:
        if self._model is None:
            s = self.settings
            self.log(f"loading embedder {self.name}")
            self._model = Embedder(self.name, query_prefix=self.prefixes[0],
                                   passage_prefix=self.prefixes[1], device=s.device,
                                   batch_size=s.batch_size,
                                   trust_remote_code=s.trust_remote_code)
        return self._model


def _ingest_locked(paths, files, problems, index_dir, settings, strict, dry_run, progress,
                   log):
    from tqdm.auto import tqdm

    old = _load_previous(index_dir, log)
    old_manifest = old.manifest if old else {}
    old_embedder = old_manifest.get("embedder") or {}
    # An existing index keeps its embedder unless one is named explicitly: a changed
    # default in rag.toml must not silently re-embed (and re-split) everything.
    name = (settings.embedder or old_embedder.get("name") or settings.default_embedder
            or DEFAULT_EMBEDDER)
    if Path(name).is_dir():
        name = str(Path(name).resolve())
    same_model = bool(old) and name == old_embedder.get("name")
    # Prefixes: the flags, else those the index was built with, else the model's own.
    prefixes = tuple(
        given if given is not None else (old_embedder.get(key) if same_model else None)
        for given, key in ((settings.query_prefix, "query_prefix"),
                           (settings.passage_prefix, "passage_prefix")))
    embedder = _LazyEmbedder(settings, name, prefixes, log)
    tokenizer = JapaneseTokenizer()
    splitter_cfg = {"version": SPLITTER_VERSION, "max_tokens": settings.max_tokens}
    dense_kind = (settings.dense or old_manifest.get("dense", {}).get("kind")
                  or settings.default_dense)
    # Same model (name and weights), prefixes and splitter: unchanged files are carried
    # over as they are. Anything else redoes every vector (and every passage size).
    revision = resolve_revision(name) if same_model else None
    same_setup = (same_model and old_manifest.get("splitter") == splitter_cfg
                  and prefixes == (old_embedder.get("query_prefix"),
                                   old_embedder.get("passage_prefix"))
                  and revision in ("unknown", old_embedder.get("revision")))
    # BM25 tokens depend only on the text and the tokenizer (Sudachi and its dictionary).
    same_tokenizer = bool(old) and old_manifest.get("tokenizer") == tokenizer.info
    if old and not same_setup:
        log("embedder, its weights, prefixes or splitter settings differ from the index: "
            "re-splitting and re-embedding everything")
    old_docs = old_manifest.get("documents", {})
    old_by_id = {p.id: i for i, p in enumerate(old.passages)} if old else {}

    report = IngestReport(str(index_dir), list(problems), dry_run=dry_run)
    new_passages: list[Passage] = []
    documents: dict[str, dict] = {}
    for f in tqdm(files, desc="loading", unit="file", disable=not progress):
        try:
            data = f.path.read_bytes()
        except OSError as e:
            report.documents.append(DocumentChange(f.source, "failed", reason=str(e)))
            _keep_old(f.source, old, old_docs, old_by_id, new_passages, documents)
            continue
        digest = hashlib.sha256(data).hexdigest()
        prev = old_docs.get(f.source)
        declared = declared_title(settings.titles, f.source)
        if (same_setup and prev and prev["sha256"] == digest
                and prev.get("declared_title", "") == declared):
            n = _keep_old(f.source, old, old_docs, old_by_id, new_passages, documents)
            report.documents.append(DocumentChange(f.source, "unchanged", passages=n))
            continue
        try:
            doc = load_document(f.path, data)
            if declared:
                doc.title = doc.declared_title = declared
            model = embedder.get()
            max_tokens = settings.max_tokens or model.max_tokens
            analysis = analyse_document(doc, f.source, max_tokens=max_tokens,
                                        count_tokens=model.count_tokens)
            passages = analysis.passages
        except LoadError as e:
            reason = str(e) + ("; keeping the previously indexed version" if prev else "")
            report.documents.append(DocumentChange(f.source, "failed", reason=reason))
            _keep_old(f.source, old, old_docs, old_by_id, new_passages, documents)
            continue
        for w in doc.warnings + analysis.warnings:
            report.notes.append(f"{f.source}: {w}")
        documents[f.source] = {"sha256": digest, "title": doc.title, "kind": doc.kind,
                               "encoding": doc.encoding, "root": str(f.root),
                               "pages": len(doc.pages) if doc.kind == "pdf" else None,
                               "declared_title": declared,
                               "passages": [p.id for p in passages]}
        new_passages.extend(passages)
        change = _diff(f.source, prev, old, old_by_id, passages)
        if prev and prev["sha256"] == digest:
            change.reason = "re-indexed (embedder or splitter settings changed)"
        report.documents.append(change)
    for problem in problems:      # refused before loading (e.g. a symlink out): keep old
        if problem.source not in documents and problem.source in old_docs:
            _keep_old(problem.source, old, old_docs, old_by_id, new_passages, documents)
            problem.reason += "; keeping the previously indexed version"
    for source, prev in old_docs.items():
        if source not in documents and not any(d.source == source for d in report.documents):
            report.documents.append(DocumentChange(source, "removed",
                                                   passages=len(prev["passages"])))
    report.documents.sort(key=lambda d: d.source)

    if report.failures and strict:
        raise IngestError("--strict: not writing the index because of "
                          + "; ".join(f"{d.source}: {d.reason}" for d in report.failures))
    if not new_passages:
        raise IngestError("no passages to index: every document failed to load "
                          + "; ".join(f"{d.source}: {d.reason}" for d in report.failures))
    report.passages = len(new_passages)
    unchanged = (old and same_setup and same_tokenizer and not report.changed
                 and not report.failures and dense_kind == old_manifest.get("dense", {}).get("kind"))
    if dry_run or unchanged:
        report.reused = len(new_passages)
        return report

    # Vectors and tokens: reuse whatever has the same search text, compute the rest.
    texts = [p.search_text() for p in new_passages]
    keys = [content_hash(t, 16) for t in texts]
    old_keys = {content_hash(p.search_text(), 16): i
                for i, p in enumerate(old.passages)} if old else {}
    vec_cache = old_keys if same_setup else {}
    tok_cache = old_keys if same_tokenizer else {}
    todo = [i for i, k in enumerate(keys) if k not in vec_cache]
    # Removing a document needs no model; anything new does, and then the model must
    # still be the one the stored vectors came from.
    model = embedder.get() if todo else None
    if model and vec_cache and model.info.revision != old_embedder.get("revision"):
        log(f"embedder {name} changed since the index was built: re-embedding everything")
        vec_cache = {}
        todo = list(range(len(texts)))
    embedder_info = model.info.to_dict() if model else old_embedder
    old_vectors = old.vectors() if vec_cache else None
    vectors = np.zeros((len(texts), embedder_info["dimension"]), dtype=np.float32)
    tokens: list[list[str] | None] = [None] * len(texts)
    for i, k in enumerate(keys):
        if k in vec_cache:
            vectors[i] = old_vectors[vec_cache[k]]
        if k in tok_cache:
            tokens[i] = old.tokens[tok_cache[k]]
    bar = tqdm(total=len(todo), desc="embedding", unit="passage", disable=not progress)
    step = max(1, settings.batch_size) * 4
    for start in range(0, len(todo), step):
        batch = todo[start:start + step]
        vectors[batch] = model.embed_passages([texts[i] for i in batch])
        bar.update(len(batch))
    bar.close()
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = tokenizer.tokenize(texts[i])
    report.embedded, report.reused = len(todo), len(texts) - len(todo)

    manifest = {
        "format": store.FORMAT_NAME, "format_version": store.FORMAT_VERSION,
        "created": old_manifest.get("created") or _now(), "updated": _now(),
        "embedder": embedder_info,
        "tokenizer": tokenizer.info,
        "dense": {"kind": dense_kind, "metric": "inner_product", "normalized": True,
                  **({"hnsw_m": 32, "ef_search": 128} if dense_kind == "hnsw" else {})},
        "splitter": splitter_cfg,
        # What was asked for (a directory or single files), so a bare `rag ingest`
        # later reads the same inputs and nothing more.
        "inputs": [str(Path(p).absolute()) for p in paths],
        "documents": documents,
        "passages": len(new_passages),
    }
    dense = store.build_dense(vectors, dense_kind)
    bm25 = store.build_bm25(tokens)
    store.write_generation(index_dir, manifest, new_passages, tokens, dense, bm25)
    report.written = True
    return report


def _keep_old(source, old, old_docs, old_by_id, new_passages, documents) -> int:
    """Carry a document's passages over from the live index (unchanged or unreadable now)."""
    prev = old_docs.get(source)
    if not prev or old is None:
        return 0
    documents[source] = prev
    for pid in prev["passages"]:
        i = old_by_id[pid]
        new_passages.append(old.passages[i])
    return len(prev["passages"])


def _diff(source, prev, old, old_by_id, passages) -> DocumentChange:
    if not prev:
        return DocumentChange(source, "added", passages=len(passages))
    before = {change_key(pid, source): old.passages[old_by_id[pid]].text
              for pid in prev["passages"]}
    after = {change_key(p.id, source): p.text for p in passages}
    return DocumentChange(
        source, "changed", passages=len(passages),
        added=[k for k in after if k not in before],
        changed=[k for k in after if k in before and before[k] != after[k]],
        removed=[k for k in before if k not in after])


def _load_previous(index_dir: Path, log) -> store.StoredIndex | None:
    if store.current_generation(index_dir) is None:
        return None
    try:
        return store.load_index(index_dir, with_tokens=True)
    except store.IndexStoreError as e:
        log(f"ignoring the existing index ({e}); rebuilding from scratch")
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = ["ingest", "discover", "IngestSettings", "IngestReport", "DocumentChange",
           "IngestError", "EmbedderInfo"]
