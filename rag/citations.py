"""How an answer's sources are shown: the one rendering of a citation, as JSON and as text.

- `citation_json(source)`: what a citation records (document, title, article, caption,
  項, page, score, the article that cited it): evaluation rows carry this.
- `source_json(source, n)`: an answer's source, the same everywhere an answer is given
  (`rag ask --json`, /api/ask, /v1/chat/completions, the feedback database): the
  citation plus its number, label, heading (章/節, or a prose passage's section: what
  labels a passage without an article), text, passage id and `edition` (title,
  effective from/to: rag.retrieval.editions).
- `cited_as(label, via)`: 第42条（除籍） or 第8条（第42条から参照）, as the prompt and
  the lists below write it.
- `grounds_heading(abstained)`, `citation_parts(source_json)`: the lines `rag ask` prints
  under an answer and the OpenAI endpoint appends to its text (「根拠:」, then
  `[n] title label  source p.N`; the sources an answer rests on, then その他の候補).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import Source


def cited_as(label: str, via: str | None) -> str:
    """The label of a passage, marked with the article that cited it."""
    return label + (f"（{via}から参照）" if via else "")


def citation_json(source: "Source") -> dict:
    return {**source.passage.citation(),
            "score": None if source.score is None else round(float(source.score), 6),
            "cross_reference_from": source.via}


def source_json(source: "Source", n: int) -> dict:
    from .retrieval.editions import edition_json

    p = source.passage
    return {"n": n, **citation_json(source), "label": p.label, "heading": p.heading,
            "text": p.text, "id": p.id, "edition": edition_json(p)}


def sources_json(sources: list["Source"]) -> list[dict]:
    return [source_json(s, n) for n, s in enumerate(sources, start=1)]


def label(citation: dict) -> str:
    """第42条（除籍）第2項, from a JSON citation (Passage.label of the dict form)."""
    caption = f"（{citation['caption']}）" if citation.get("caption") else ""
    return f"{citation.get('article') or ''}{caption}{citation.get('paragraph') or ''}"


def grounds_heading(abstained: bool) -> str:
    return "近い条文:" if abstained else "根拠:"


def citation_parts(citation: dict, n: int) -> tuple[str, str, str, str]:
    """([n], "title label", "（…から参照）" or "", "source p.N") of a JSON source."""
    cite = " ".join(x for x in (citation.get("title"), label(citation)) if x)
    via = cited_as("", citation.get("cross_reference_from"))
    page = f" p.{citation['page']}" if citation.get("page") else ""
    return f"[{n}]", cite, via, f"{citation.get('source', '')}{page}"


def grounds_text(sources: list[dict], abstained: bool) -> list[str]:
    """The grounds as plain lines (the heading, then one line a source). When some
    sources are marked `rests_on` (rag/trust.py), those are the grounds and the others
    follow on one line as その他の候補."""
    if not sources:
        return []
    rests = [s for s in sources if s.get("rests_on")] if not abstained else []
    shown = rests or sources
    lines = [grounds_heading(abstained)]
    for i, s in enumerate(shown, start=1):
        n, cite, via, where = citation_parts(s, s.get("n", i) if rests else i)
        lines.append(f"{n} {cite}{via}  {where}")
    if rests and len(rests) < len(sources):
        lines.append(OTHERS_HEADING + " " + "、".join(
            other(s) for s in sources if not s.get("rests_on")))
    return lines


OTHERS_HEADING = "その他の候補:"


def other(source: dict) -> str:
    """A candidate the answer does not rest on, briefly: `[n] title label`."""
    n, cite, via, _ = citation_parts(source, source.get("n", 0))
    return f"{n} {cite}{via}"
