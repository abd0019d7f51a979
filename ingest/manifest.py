"""manifest.json of an index generation: what its vectors and tokens were made with
(embedder, tokenizer, splitter), how the dense index is built, the inputs a bare
`rag ingest` re-reads, and per document its content hash, title and passage ids.
`Manifest.from_dict` checks every field and names the one at fault."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .embedder import EmbedderInfo
from .errors import RagError

FORMAT_NAME = "gakusoku-rag-index"
FORMAT_VERSION = 1


class IndexStoreError(RagError):
    """The index directory is missing, locked, corrupt or from another format."""


class IndexLocked(IndexStoreError):
    pass


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
                                  emb.get("passage_prefix", str), emb.get("max_tokens", int),
                                  emb.get("dtype", str, default="float32")),
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
