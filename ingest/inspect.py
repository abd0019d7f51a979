"""`rag inspect`: how a document was read, for the admin who has to trust the index.

The title and where it came from, each article found (label, caption, page, first
characters), the share of the text inside articles, the lines dropped as page
furniture, and warnings when a document looks like a regulation but splits poorly.
"""
from __future__ import annotations

from pathlib import Path

from .display import ljust
from .loaders import load_document
from .passage import Passage
from .splitter import analyse_document


def article_sequence(passages: list[Passage]) -> list[str]:
    """The articles of a document in order (第N条, 第N条のM, 附則第N条, 附則), each once
    however many parts a long one was split into: what gold boundaries list."""
    out: list[str] = []
    for p in passages:
        if "条" not in p.article and p.article != "附則":
            continue
        if out and out[-1] == p.article and p.paragraph and not p.paragraph.startswith("第1項"):
            continue           # a later part of the same article
        out.append(p.article)
    return out


def inspect_file(path: Path, source: str | None = None, declared: str = "") -> dict:
    """A JSON-ready description of how `path` is loaded and split (no embedder needed:
    passages are not size-limited here, so long articles show whole)."""
    doc = load_document(path)
    if declared:
        doc.title, doc.declared_title, doc.title_source = declared, declared, "rag.toml titles"
    analysis = analyse_document(doc, source or path.name)
    articles = []
    for p in analysis.passages:
        articles.append({"article": p.article, "scope": p.scope, "caption": p.caption,
                         "paragraph": p.paragraph,
                         "page": p.page, "heading": p.heading, "chars": len(p.text),
                         "start": " ".join(p.text.split())[:60]})
    return {
        "file": str(path), "title": doc.title, "title_source": doc.title_source,
        "kind": doc.kind, "encoding": doc.encoding, "pages": len(doc.pages),
        "structure": analysis.structure, "passages": len(analysis.passages),
        "articles_split": analysis.split, "article_numbers_mentioned": analysis.mentioned,
        "article_share": round(analysis.article_share, 3),
        "despaced_lines": analysis.layout.despaced, "breaks_inserted": analysis.layout.broken,
        "dropped": [{"page": ln.page, "text": ln.text.strip()} for ln in analysis.layout.dropped],
        "warnings": doc.warnings + analysis.warnings, "units": articles,
    }


def render(report: dict, *, width: int = 60, all_units: bool = True) -> list[str]:
    """The report as lines for a terminal."""
    r = report
    out = [r["file"],
           f"  title: {r['title']}  ({r['title_source']}"
           + ("; the text does not name the regulation: give its title in [ingest.titles] "
              "of rag.toml)" if r["title_source"] == "file name" else ")"),
           f"  read as: {r['structure']}, {r['kind']}"
           + (f" {r['encoding']}" if r.get("encoding") else "")
           + (f", {r['pages']} pages" if r["kind"] == "pdf" else ""),
           f"  articles: {r['articles_split']} split of {r['article_numbers_mentioned']} article "
           f"headings in the text; {r['article_share']:.0%} of the text inside articles; "
           f"{r['passages']} passages"]
    if r["despaced_lines"] or r["breaks_inserted"]:
        out.append(f"  layout: {r['breaks_inserted']} breaks inserted into long lines, "
                   f"{r['despaced_lines']} spaced-out lines joined")
    if r["dropped"]:
        shown = " · ".join(d["text"] for d in r["dropped"][:8])
        more = f" (+{len(r['dropped']) - 8} more)" if len(r["dropped"]) > 8 else ""
        out.append(f"  dropped as page furniture ({len(r['dropped'])}): {shown}{more}")
    for w in r["warnings"]:
        out.append(f"  warning: {w}")
    if all_units:
        last_scope = ""
        for u in r["units"]:
            label = (u["article"] or "(text)") + (f"（{u['caption']}）" if u["caption"] else "") \
                + u["paragraph"]
            page = f"p.{u['page']}" if u["page"] else ""
            scope = u.get("scope", "")
            if scope != last_scope and scope not in ("", "附則"):
                out.append(f"    — {scope}")      # which 附則 (or booklet regulation) follows
            last_scope = scope
            # Padded by display width: a kanji takes two columns (ingest.display).
            out.append(f"    {ljust(label, 24)} {page:>5}  {u['start'][:width]}")
    return out
