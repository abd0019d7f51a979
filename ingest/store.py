"""The index directory: write a new generation beside the old, swap atomically.

    INDEX_DIR/
      CURRENT              name of the live generation (replaced with os.replace)
      .lock                held by the one ingest that may write
      gen-<time>-<pid>/    manifest.json, passages.jsonl, tokens.jsonl, dense.faiss, bm25/,
                           bm25_bigram/ (ingest/bigram.py; absent in older indexes)

Readers follow CURRENT, so a crash or kill at any point of an ingest leaves the
previous generation loadable; every ingest first removes what a killed one left
half-written. The generation a swap replaces stays until the next swap, so a reader
that loaded it a moment ago can still open its files (and a reader that still loses
one re-reads CURRENT once). A failed write removes what it wrote and names the path
and the reason.

manifest.json is a `Manifest` (ingest/manifest.py); only these two modules turn it
into JSON and back.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bigram
from .manifest import (FORMAT_NAME, FORMAT_VERSION, DenseInfo, DocumentRecord, IndexLocked,
                       IndexStoreError, Manifest)
from .passage import Passage

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "CURRENT", "DenseInfo", "DocumentRecord",
           "IndexLocked", "IndexStoreError", "Manifest", "StoredIndex", "current_generation",
           "read_manifest", "load_index", "build_dense", "build_bm25", "write_generation",
           "remove_stale_generations", "remove_partials", "index_lock"]

CURRENT = "CURRENT"


@dataclass
class StoredIndex:
    path: Path                 # the generation directory
    manifest: Manifest
    passages: list[Passage]
    tokens: list[list[str]] | None    # None unless loaded with_tokens
    dense: "object"            # faiss.Index
    bm25: "object"             # bm25s.BM25
    bm25_bigram: "object" = None   # bm25s.BM25 over character bigrams; None: not stored

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
    index_dir = Path(index_dir)
    gen = current_generation(index_dir)      # read once: an ingest may swap meanwhile
    try:
        return _load_generation(index_dir, gen, with_tokens)
    except IndexStoreError:
        # Two swaps while we read removed the generation under us: read the new one.
        again = current_generation(index_dir)
        if again is None or again == gen:
            raise
        return _load_generation(index_dir, again, with_tokens)


def _load_generation(index_dir: Path, gen: Path | None, with_tokens: bool) -> StoredIndex:
    import bm25s
    import faiss

    manifest = read_manifest(index_dir, gen)
    try:
        passages = [Passage.from_dict(json.loads(line))
                    for line in (gen / "passages.jsonl").read_text(encoding="utf-8").splitlines()]
        tokens = [json.loads(line) for line in (gen / "tokens.jsonl").read_text(
            encoding="utf-8").splitlines()] if with_tokens else None
        dense = faiss.read_index(str(gen / "dense.faiss"))
        bm25 = bm25s.BM25.load(str(gen / "bm25"), show_progress=False) if passages else None
        bigram_bm25 = bigram.load(gen) if passages else None
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise IndexStoreError(f"index at {gen} is damaged ({e}); run `rag ingest` again") from None
    if len(passages) != dense.ntotal or (tokens is not None and len(tokens) != len(passages)):
        raise IndexStoreError(f"index at {gen} is inconsistent: {len(passages)} passages, "
                              f"{len(tokens) if tokens is not None else '?'} token lists, "
                              f"{dense.ntotal} vectors")
    if manifest.dense and manifest.dense.ef_search is not None and hasattr(dense, "hnsw"):
        dense.hnsw.efSearch = manifest.dense.ef_search
    return StoredIndex(gen, manifest, passages, tokens, dense, bm25, bigram_bm25)


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
                     tokens: list[list[str]], dense, bm25, bigram_bm25=None, *,
                     extra: dict | None = None) -> Path:
    """Write a complete new generation, then point CURRENT at it atomically. A write
    that fails (no space left, no permission) removes what it wrote and says which path
    and why; the live generation is untouched. `extra`: file name -> JSON-ready object
    written beside the manifest (editions.json)."""
    import faiss

    name = f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"
    gen = index_dir / name
    tmp = index_dir / (name + ".partial")
    previous = current_generation(index_dir)
    try:
        tmp.mkdir(parents=True)
        _write_lines(tmp / "passages.jsonl",
                     (json.dumps(p.to_dict(), ensure_ascii=False) for p in passages))
        _write_lines(tmp / "tokens.jsonl", (json.dumps(t, ensure_ascii=False) for t in tokens))
        faiss.write_index(dense, str(tmp / "dense.faiss"))
        if bm25 is not None:
            bm25.save(str(tmp / "bm25"), show_progress=False)
        if bigram_bm25 is not None:
            bigram.save(bigram_bm25, tmp)
        for file, obj in (extra or {}).items():
            _write_lines(tmp / file, [json.dumps(obj, ensure_ascii=False, indent=1)])
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
    except (OSError, RuntimeError) as e:         # faiss reports I/O errors as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        if current_generation(index_dir) != gen:
            shutil.rmtree(gen, ignore_errors=True)
        raise IndexStoreError(f"cannot write the index in {index_dir}: {_reason(e)}; the "
                              "previous index is unchanged") from None
    # The generation just replaced stays until the next swap: a reader that loaded it a
    # moment ago may still be opening its files.
    remove_stale_generations(index_dir, keep=previous)
    return gen


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError):
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return str(e).splitlines()[0][:200]


def remove_stale_generations(index_dir: Path, keep: Path | None = None) -> None:
    """Remove every generation but the live one and `keep` (call with the lock held)."""
    live = current_generation(index_dir)
    for entry in index_dir.iterdir():
        if entry.name.startswith("gen-") and entry not in (live, keep) and not entry.name.endswith(
                ".partial"):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f".{CURRENT}."):
            entry.unlink(missing_ok=True)


def remove_partials(index_dir: Path) -> None:
    """Remove generations a killed or failed ingest left half-written (lock held)."""
    if not index_dir.is_dir():
        return
    for entry in index_dir.iterdir():
        if entry.name.startswith("gen-") and entry.name.endswith(".partial"):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f".{CURRENT}."):
            entry.unlink(missing_ok=True)


@contextmanager
def index_lock(index_dir: Path):
    """One writer per index. flock is released by the kernel if the process dies."""
    path = index_dir / ".lock"
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+", encoding="utf-8")
    except OSError as e:
        what = "is not a directory" if index_dir.exists() and not index_dir.is_dir() else (
            _reason(e))
        raise IndexStoreError(f"cannot use {index_dir} as an index: {what}") from None
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
