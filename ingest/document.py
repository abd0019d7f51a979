"""What a loaded file is: its pages of text (`Page`) and what was learnt reading it
(`LoadedDocument`), or why it cannot be read (`LoadError`). The loaders (loaders.py,
docx.py, pdf_columns.py) make them; layout, title detection and the splitter read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RagError


class LoadError(RagError):
    """A file that cannot be indexed; the message says why."""


@dataclass
class Page:
    text: str
    number: int | None = None  # 1-based page number for PDFs


@dataclass
class LoadedDocument:
    pages: list[Page]
    title: str                # the regulation's name (ingest.title decides it on load)
    kind: str                 # txt | md | html | pdf | docx
    encoding: str | None = None
    warnings: list[str] = field(default_factory=list)
    declared_title: str = ""  # front matter or rag.toml's title map: wins over detection
    title_source: str = ""    # how the title was found, for `rag inspect`
    _layout: object = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.pages)

    def layout(self):
        """The logical lines of the pages (ingest.layout), read once: title detection
        and the splitter both need them."""
        if self._layout is None:
            from .layout import read_layout
            self._layout = read_layout(self)
        return self._layout
