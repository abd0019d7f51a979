"""What `rag ingest` tells its caller: a line per document, the totals, and the error
that stops an ingest before it writes anything."""
from __future__ import annotations

from dataclasses import dataclass, field

from .display import escape_controls
from .errors import RagError


class IngestError(RagError):
    """Ingest cannot go on (no documents, --strict with bad files, ...)."""


def article_changes(before: dict[str, str], after: dict[str, str]):
    """(added, changed, removed) article keys between two {key: text} maps, in document
    order: the article-level change report of a re-ingested document, and `rag diff`'s."""
    return ([k for k in after if k not in before],
            [k for k in after if k in before and before[k] != after[k]],
            [k for k in before if k not in after])


@dataclass
class DocumentChange:
    source: str
    # added | changed | removed | unchanged | failed (a document that could not be read)
    # | skipped (a file that is not a document: unsupported type, .doc to convert, a pipe)
    status: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reason: str = ""                # why it failed, or why an unchanged file was re-indexed
    passages: int = 0

    def describe(self) -> str:
        """One line for the terminal: a newline or escape code in a file name (or a
        reason) is shown escaped, never passed through."""
        return escape_controls(self._describe())

    def _describe(self) -> str:
        if self.status in ("failed", "skipped"):
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
    indexed_documents: int = 0      # documents in the index written (or that would be)
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
        return any(d.status not in ("unchanged", "failed", "skipped") for d in self.documents)

    @property
    def skipped(self) -> list[DocumentChange]:
        return [d for d in self.documents if d.status == "skipped"]

    def to_dict(self) -> dict:
        return {"index": self.index, "dry_run": self.dry_run, "written": self.written,
                "passages": self.passages, "indexed_documents": self.indexed_documents,
                "embedded": self.embedded, "reused": self.reused,
                "seconds": round(self.seconds, 3), "notes": self.notes,
                "documents": [d.__dict__ for d in self.documents]}
