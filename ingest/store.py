"""The index directory: write a new generation beside the old, swap atomically.

    INDEX_DIR/
      CURRENT              name of the live generation (replaced with os.replace)
      .lock                held by the one ingest that may write
      gen-<time>-<pid>/    manifest.json, passages.jsonl, tokens.jsonl, dense.faiss, bm25/

Readers follow CURRENT, so a crash or kill at any point of an ingest leaves the
previous generation loadable; the next ingest removes unfinished generations.

manifest.json is a `Manifest`: what the vectors and tokens were made with (embedder,
tokenizer, splitter), how the dense index is built, and per document its content hash,
title and passage ids. Only this module turns it into JSON and back.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .embedder import EmbedderInfo
from .errors import RagError
from .passage import Passage

FORMAT_NAME = "gakusoku-rag-index"
FORMAT_VERSION = 1
CURRENT = "CURRENT"


class IndexStoreError(RagError):
    """The index directory is missing, locked, corrupt or from another format."""


class IndexLocked(IndexStoreError):
    pass


# --------------------------------------------------------------------------- manifest

@dataclass
class DenseInfo:
    """How dense.faiss is built: exact ("flat") or HNSW, inner product on unit vectors."""
    kind: str                      # flat | hnsw
    metric: str = "inner_product"
    normalized: bool = True
    hnsw_m: int | None = None      # HNSW only
    ef_search: int | None = None   # HNSW only: set on the index when it is loaded

    @classmethod
    def for_kind(cls, kind: str) -> DenseInfo:
        return cls(kind, hnsw_m=32, ef_search=128) if kind == "hnsw" else cls(kind)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "metric": self.metric, "normalized": self.normalized}
        if self.hnsw_m is not None:
            d["hnsw_m"] = self.hnsw_m
        if self.ef_search is not None:
            d["ef_search"] = self.ef_search
        return d


@dataclass
class DocumentRecord:
    """One indexed document: what it was read from and which passages it gave."""
    sha256: str                    # of the file's bytes: unchanged files are carried over
    title: str
    kind: str                      # txt | md | html | pdf | docx
    encoding: str | None
    root: str                      # the directory its source path is relative to
    pages: int | None              # PDFs only
    declared_title: str = ""       # [ingest.titles] when it was indexed
    passages: list[str] = field(default_factory=list)    # passage ids, in order

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "title": self.title, "kind": self.kind,
                "encoding": self.encoding, "root": self.root, "pages": self.pages,
                "declared_title": self.declared_title, "passages": list(self.passages)}


@dataclass
class Manifest:
    """manifest.json of a generation. `tokenizer` and `splitter` are compared whole
    (same values: stored tokens and passage sizes still hold), never read key by key."""
    embedder: EmbedderInfo
    documents: dict[str, DocumentRecord]
    passages: int                  # how many, in passages.jsonl order
    dense: DenseInfo | None = None
    tokenizer: dict | None = None
    splitter: dict | None = None
    inputs: list[str] = field(default_factory=list)   # the paths a bare `rag ingest` reads
    created: str | None = None
    updated: str | None = None
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return {"format": self.format, "format_version": self.format_version,
                "created": self.created, "updated": self.updated,
                "embedder": self.embedder.to_dict(), "tokenizer": self.tokenizer,
                "dense": self.dense.to_dict() if self.dense else None,
                "splitter": self.splitter, "inputs": list(self.inputs),
                "documents": {k: d.to_dict() for k, d in self.documents.items()},
                "passages": self.passages}

    @classmethod
    def from_dict(cls, data, where: str = "manifest") -> Manifest:
        """Check and convert parsed JSON; unknown keys are ignored. A missing or wrongly
        typed field raises IndexStoreError naming `where` (the file) and the field."""
        top = _Fields(data, where)
        emb = top.record("embedder")
        documents = {}
        for source in top.get("documents", dict):
            d = top.record("documents", source)
            documents[source] = DocumentRecord(
                d.get("sha256", str), d.get("title", str), d.get("kind", str),
                d.get("encoding", str, null=True), d.get("root", str),
                d.get("pages", int, null=True), d.get("declared_title", str, default=""),
                d.strings("passages"))
        dense = top.record("dense", optional=True)
        if dense is not None:
            dense = DenseInfo(dense.get("kind", str),
                              dense.get("metric", str, default="inner_product"),
                              dense.get("normalized", bool, default=True),
                              dense.get("hnsw_m", int, null=True, default=None),
                              dense.get("ef_search", int, null=True, default=None))
        return cls(
            embedder=EmbedderInfo(emb.get("name", str), emb.get("revision", str),
                                  emb.get("dimension", int), emb.get("query_prefix", str),
                                  emb.get("passage_prefix", str), emb.get("max_tokens", int)),
            documents=documents,
            passages=top.get("passages", int),
            dense=dense,
            tokenizer=top.get("tokenizer", dict, null=True, default=None),
            splitter=top.get("splitter", dict, null=True, default=None),
            inputs=top.strings("inputs", default=[]),
            created=top.get("created", str, null=True, default=None),
            updated=top.get("updated", str, null=True, default=None),
            format=top.get("format", str),
            format_version=top.get("format_version", int))


_REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "an object",
               list: "a list"}


class _Fields:
    """Typed access to one JSON object of a manifest; errors name the file and the field."""

    def __init__(self, data, where: str, path: str = ""):
        self.where, self.path = where, path
        if not isinstance(data, dict):
            self._fail(f"{path!r} is not an object" if path else "not an object")
        self.data = data

    def get(self, key: str, kind: type, *, null: bool = False, default=_REQUIRED):
        """data[key], which must be of `kind` (or null if `null`); `default` if absent,
        an error if absent without a default."""
        if key not in self.data:
            if default is _REQUIRED:
                self._fail(f"field {self._name(key)!r} is missing")
            return default
        value = self.data[key]
        if value is None and null:
            return None
        # JSON true/false are Python bools, which are also ints: never take one for the other.
        if type(value) is not kind:
            shown = json.dumps(value, ensure_ascii=False)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            self._fail(f"field {self._name(key)!r} should be {_TYPE_NAMES[kind]}"
                       f"{' or null' if null else ''}, not {shown}")
        return value

    def record(self, key: str, item: str | None = None, optional: bool = False):
        """The object at `key`, or at `key`[`item`] if `key` holds objects by name
        (None if `optional` and absent or null)."""
        value = self.get(key, dict, null=optional, default=None if optional else _REQUIRED)
        name = self._name(key)
        if item is not None:
            value, name = value[item], f"{name}[{item}]"
        return None if value is None and optional else _Fields(value, self.where, name)

    def strings(self, key: str, default=_REQUIRED) -> list[str]:
        value = self.get(key, list, default=default)
        if not all(type(v) is str for v in value):
            self._fail(f"field {self._name(key)!r} should be a list of strings")
        return list(value)

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _fail(self, problem: str):
        raise IndexStoreError(f"{self.where}: {problem}; run `rag ingest` again to rebuild "
                              "the index")


@dataclass
class StoredIndex:
    path: Path                 # the generation directory
    manifest: Manifest
    passages: list[Passage]
    tokens: list[list[str]] | None    # None unless loaded with_tokens
    dense: "object"            # faiss.Index
    bm25: "object"             # bm25s.BM25

    def vectors(self) -> np.ndarray:
        """All stored vectors, in passage order (FAISS flat and HNSW both reconstruct)."""
        n = self.dense.ntotal
        if n == 0:
            return np.zeros((0, self.dense.d), dtype=np.float32)
        return self.dense.reconstruct_n(0, n)


def current_generation(index_dir: Path) -> Path | None:
    pointer = index_dir / CURRENT
    if not pointer.is_file():
        return None
    gen = index_dir / pointer.read_text(encoding="utf-8").strip()
    return gen if (gen / "manifest.json").is_file() else None


def read_manifest(index_dir: Path, gen: Path | None = None) -> Manifest:
    gen = gen or current_generation(index_dir)
    if gen is None:
        raise IndexStoreError(f"no index at {index_dir} (run `rag ingest` first)")
    path = gen / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IndexStoreError(f"{path} is damaged ({e}); run `rag ingest` "
                              "again to rebuild the index") from None
    if not isinstance(data, dict):
        raise IndexStoreError(f"{path}: not an index manifest")
    if data.get("format") != FORMAT_NAME:
        raise IndexStoreError(f"{path}: not an index of this project")
    version = data.get("format_version", 0)
    if type(version) is int and version > FORMAT_VERSION:
        raise IndexStoreError(f"{index_dir}: index format {version} is "
                              f"newer than this program reads ({FORMAT_VERSION}); upgrade "
                              "or re-ingest")
    return Manifest.from_dict(data, str(path))


def load_index(index_dir: Path, *, with_tokens: bool = False) -> StoredIndex:
    """The live generation. Its BM25 token lists are read only `with_tokens` (ingest
    reuses them; searching needs the BM25 index alone)."""
    import bm25s
    import faiss

    index_dir = Path(index_dir)
    gen = current_generation(index_dir)      # read once: an ingest may swap meanwhile
    manifest = read_manifest(index_dir, gen)
    try:
        passages = [Passage.from_dict(json.loads(line))
                    for line in (gen / "passages.jsonl").read_text(encoding="utf-8").splitlines()]
        tokens = [json.loads(line) for line in (gen / "tokens.jsonl").read_text(
            encoding="utf-8").splitlines()] if with_tokens else None
        dense = faiss.read_index(str(gen / "dense.faiss"))
        bm25 = bm25s.BM25.load(str(gen / "bm25"), show_progress=False) if passages else None
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise IndexStoreError(f"index at {gen} is damaged ({e}); run `rag ingest` again") from None
    if len(passages) != dense.ntotal or (tokens is not None and len(tokens) != len(passages)):
        raise IndexStoreError(f"index at {gen} is inconsistent: {len(passages)} passages, "
                              f"{len(tokens) if tokens is not None else '?'} token lists, "
                              f"{dense.ntotal} vectors")
    if manifest.dense and manifest.dense.ef_search is not None and hasattr(dense, "hnsw"):
        dense.hnsw.efSearch = manifest.dense.ef_search
    return StoredIndex(gen, manifest, passages, tokens, dense, bm25)


def build_dense(vectors: np.ndarray, kind: str = "flat", hnsw_m: int = 32):
    """Exact inner product on normalised vectors, or HNSW for large corpora."""
    import faiss

    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 128
    else:
        raise IndexStoreError(f"unknown dense index kind {kind!r} (flat or hnsw)")
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def build_bm25(tokens: list[list[str]]):
    import bm25s

    retriever = bm25s.BM25()
    # bm25s needs every document non-empty to keep ids aligned; "" is its empty token.
    retriever.index([t or [""] for t in tokens], show_progress=False)
    return retriever


def write_generation(index_dir: Path, manifest: Manifest, passages: list[Passage],
                     tokens: list[list[str]], dense, bm25) -> Path:
    """Write a complete new generation, then point CURRENT at it atomically."""
    import faiss

    index_dir.mkdir(parents=True, exist_ok=True)
    name = f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"
    gen = index_dir / name
    tmp = index_dir / (name + ".partial")
    tmp.mkdir()
    _write_lines(tmp / "passages.jsonl",
                 (json.dumps(p.to_dict(), ensure_ascii=False) for p in passages))
    _write_lines(tmp / "tokens.jsonl", (json.dumps(t, ensure_ascii=False) for t in tokens))
    faiss.write_index(dense, str(tmp / "dense.faiss"))
    if bm25 is not None:
        bm25.save(str(tmp / "bm25"), show_progress=False)
    # The manifest is written last: a generation without one is never read.
    _write_lines(tmp / "manifest.json",
                 [json.dumps(manifest.to_dict(), ensure_ascii=False, indent=1)])
    for f in tmp.rglob("*"):
        if f.is_file():
            _fsync(f)
    os.rename(tmp, gen)
    pointer_tmp = index_dir / f".{CURRENT}.{os.getpid()}"
    pointer_tmp.write_text(name + "\n", encoding="utf-8")
    _fsync(pointer_tmp)
    os.replace(pointer_tmp, index_dir / CURRENT)
    _fsync_dir(index_dir)
    remove_stale_generations(index_dir)
    return gen


def remove_stale_generations(index_dir: Path) -> None:
    """Remove every generation but the live one (call with the lock held)."""
    live = current_generation(index_dir)
    for entry in index_dir.iterdir():
        if entry.name.startswith("gen-") and entry != live:
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f".{CURRENT}."):
            entry.unlink(missing_ok=True)


@contextmanager
def index_lock(index_dir: Path):
    """One writer per index. flock is released by the kernel if the process dies."""
    index_dir.mkdir(parents=True, exist_ok=True)
    path = index_dir / ".lock"
    fh = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise IndexLocked(f"{index_dir} is being written by {holder}; wait for that "
                              "ingest to finish and run this one again") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})")
        fh.flush()
        yield
    finally:
        fh.close()


def _write_lines(path: Path, lines) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
