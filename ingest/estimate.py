"""`rag ingest --dry-run`: how many passages an ingest would embed, and about how long
that takes on this machine (timed on a few of them), with a note for any one file
that would take minutes."""
from __future__ import annotations

import time
from collections.abc import Callable

from .passage import Passage, content_hash


def estimate(passages: list[Passage], reusable: list[Passage],
             model: Callable[[], object]) -> tuple[int, list[str]]:
    """(passages to embed, notes). `reusable`: passages whose vectors the index holds;
    `model()` gives the embedder (loaded only when something is to be embedded)."""
    known = {content_hash(p.search_text(), 16) for p in reusable}
    todo = [p for p in passages if content_hash(p.search_text(), 16) not in known]
    if not todo:
        return 0, []
    sample = [p.search_text() for p in todo[:16]]
    embedder = model()
    started = time.perf_counter()
    embedder.embed_passages(sample)
    per = (time.perf_counter() - started) / len(sample)
    notes = [f"would embed {len(todo)} passages: about {_duration(per * len(todo))} "
             "on this machine"]
    by_file: dict[str, int] = {}
    for p in todo:
        by_file[p.source] = by_file.get(p.source, 0) + 1
    notes += [f"{source}: {n} passages to embed, about {_duration(per * n)}"
              for source, n in sorted(by_file.items()) if per * n > 180]
    return len(todo), notes


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
