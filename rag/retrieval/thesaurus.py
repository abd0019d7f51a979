"""Query expansion from everyday words to the terms regulations use.

Students ask 「学費が払えないと…」; the 学則 says 「授業料の納付を怠り…」. Neither BM25
nor a small embedder bridges that reliably, so known everyday words add the
regulation's own terms to the query (both for BM25 and for the embedder).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ingest.errors import RagError
from ingest.japanese import nfkc

DEFAULT = "default"


class ThesaurusError(RagError):
    pass


@dataclass
class Thesaurus:
    entries: list[tuple[str, tuple[str, ...]]]
    source: str

    @classmethod
    def load(cls, path: str | Path | None = DEFAULT) -> "Thesaurus | None":
        """The shipped thesaurus (DEFAULT), a TSV file, or None/"" for no expansion."""
        if not path:
            return None
        if path == DEFAULT:
            text = resources.files("rag.data").joinpath("thesaurus.tsv").read_text("utf-8")
            return cls.parse(text, "rag/data/thesaurus.tsv")
        path = Path(path)
        if not path.is_file():
            raise ThesaurusError(f"{path}: thesaurus file not found")
        return cls.parse(path.read_text(encoding="utf-8"), str(path))

    @classmethod
    def parse(cls, text: str, source: str) -> "Thesaurus":
        entries = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            key, sep, terms = line.partition("\t")
            if not sep or not key.strip() or not terms.split():
                raise ThesaurusError(f"{source}:{n}: expected 'word<TAB>term term ...'")
            entries.append((nfkc(key.strip()), tuple(nfkc(terms).split())))
        return cls(entries, source)

    def terms_for(self, query: str) -> list[str]:
        q = nfkc(query)
        out: list[str] = []
        for key, terms in self.entries:
            if key in q:
                out.extend(t for t in terms if t not in q and t not in out)
        return out

    def expand(self, query: str) -> str:
        terms = self.terms_for(query)
        return f"{query} {' '.join(terms)}" if terms else query
