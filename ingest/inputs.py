"""Which paths an ingest reads, and which the index records afterwards.

The index records every path it was given. `rag ingest PATH` adds or refreshes PATH
(a file inside a recorded folder keeps its place in that folder) and keeps every other
document; a bare `rag ingest` re-reads every recorded path; a recorded path that is
missing is an error, never a reason to fall back or to drop its documents, until it is
forgotten on purpose (`--forget`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .report import IngestError


@dataclass
class Inputs:
    """What this run reads, and the set of inputs the index records afterwards."""
    read: list[Path]                  # paths to (re)read now
    bases: dict[Path, Path]           # a read path inside a recorded input -> that input
    recorded: list[str]               # the index's inputs after this run (absolute)
    before: list[str]                 # ... and before it
    forgotten: list[str]              # dropped on purpose (--forget)

    def reads(self, path: Path) -> bool:
        """Whether a document at `path` (absolute) lies under a path read now."""
        return any(_under(path, r) for r in self.read)

    def keeps(self, path: Path) -> bool:
        """Whether a document at `path` still belongs to a recorded input."""
        return any(_under(path, r) for r in self.recorded)


def _abs(path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def _under(path, top) -> bool:
    path, top = Path(path).resolve(), Path(top).resolve()
    return path == top or path.is_relative_to(top)


def resolve_inputs(index_dir: Path, recorded: list[str], paths: list[Path],
                   forget: list[Path], default_paths: list[Path]) -> Inputs:
    before = [_abs(p) for p in (recorded)]
    forgotten = [_abs(f) for f in forget]
    for f, given in zip(forgotten, forget):
        if f not in before:
            raise IngestError(f"--forget {given}: not an input of {index_dir} (its inputs: "
                              f"{', '.join(before) or 'none'})")
    kept = [p for p in before if p not in forgotten]
    if not paths:
        if not kept and not forgotten:                 # a new index: the configured paths
            if not default_paths:
                raise IngestError(f"{index_dir} records no inputs: give the paths to index")
            return Inputs([Path(_abs(p)) for p in default_paths], {},
                           sorted({_abs(p) for p in default_paths}), before, [])
        for p in kept:
            if not Path(p).exists():
                raise IngestError(
                    f"{p}: an input of {index_dir} is missing (renamed, moved or not "
                    f"mounted?); bring it back, or drop it and its documents with "
                    f"`rag ingest --forget {p}`")
        return Inputs([Path(p) for p in kept], {}, kept, before, forgotten)
    read, bases, recorded = [], {}, list(kept)
    for given in paths:
        a = _abs(given)
        read.append(Path(a))
        owner = next((r for r in kept if Path(r).is_dir() and _under(a, r)), None)
        if owner is not None:
            if a != owner:
                bases[Path(a)] = Path(owner)         # refresh a file of a recorded folder
        elif a not in recorded:
            # A new input; a folder that holds recorded inputs takes their place.
            recorded = [r for r in recorded if not _under(r, a)] + [a]
    return Inputs(read, bases, sorted(recorded), before, forgotten)
