"""Which files an ingest reads: supported documents under the given paths, never
leaving them (symlinks out are refused), minus hidden files and what `.ragignore` files
exclude. Unsupported or convertible files are reported, not read."""
from __future__ import annotations

import errno
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from .loaders import CONVERTIBLE, SUPPORTED_SUFFIXES
from .report import DocumentChange, IngestError


@dataclass
class SourceFile:
    path: Path        # absolute
    source: str       # relative to its root, POSIX separators
    root: Path


def discover(paths: list[Path], bases: dict[Path, Path] | None = None,
             ) -> tuple[list[SourceFile], list[DocumentChange]]:
    """Supported files under `paths`, never leaving them (symlinks out are refused).
    A file's source is its path relative to the given directory (a given file: its
    folder), or to `bases[path]` when the path lies in an input the index already
    records (`rag ingest corpus/学則.txt` refreshes the 学則.txt of `corpus/`)."""
    found: dict[str, SourceFile] = {}
    problems: list[DocumentChange] = []
    seen: set[Path] = set()           # `rag ingest corpus corpus/学則.txt` reads it once
    for given in paths:
        given = Path(given)
        if not given.exists():
            raise IngestError(f"{given}: no such file or directory")
        base = (bases or {}).get(given.absolute())
        root = base.resolve() if base else (
            given.resolve() if given.is_dir() else given.resolve().parent)
        rel_to = base or (given.absolute() if given.is_dir() else given.absolute().parent)
        if given.is_file():
            suffix = given.suffix.lower()
            if suffix not in SUPPORTED_SUFFIXES:
                reason = CONVERTIBLE.get(suffix) or f"unsupported file type {given.suffix!r}"
                problems.append(DocumentChange(given.name, "skipped", reason=reason))
                continue
            candidates = [given.absolute()]
        elif not given.is_dir():
            problems.append(DocumentChange(given.name, "skipped", reason=(
                "not a regular file (a pipe, socket or device)")))
            continue
        else:
            # Real files before symlinks, so a link to a file in the tree is the duplicate.
            candidates = sorted(_walk(given.absolute()), key=lambda p: (p.is_symlink(), p))
        for path in candidates:
            rel = Path(os.path.relpath(path, rel_to)).as_posix()
            if not path.is_symlink() and not path.is_file():
                # A FIFO would block the read forever; a socket or device is no document.
                problems.append(DocumentChange(rel, "skipped", reason=(
                    "not a regular file (a pipe, socket or device)")))
                continue
            if path.suffix.lower() not in SUPPORTED_SUFFIXES | set(CONVERTIBLE):
                problems.append(DocumentChange(rel, "skipped", reason=(
                    f"unsupported file type {path.suffix or '(no extension)'!r}; supported: "
                    f"{', '.join(sorted(SUPPORTED_SUFFIXES))}")))
                continue
            if path.suffix.lower() in CONVERTIBLE:     # a Word .doc among the rules: say so
                problems.append(DocumentChange(rel, "skipped",
                                               reason=CONVERTIBLE[path.suffix.lower()]))
                continue
            target, why = _resolve(path)
            if target is None:
                problems.append(DocumentChange(rel, "failed", reason=why))
                continue
            if path.is_symlink() and not target.is_relative_to(root):
                problems.append(DocumentChange(rel, "failed",
                                               reason=f"symlink to {target}, outside {given}"))
                continue
            if target in seen:
                continue
            seen.add(target)
            if rel in found:
                problems.append(DocumentChange(rel, "failed", reason=(
                    f"same relative path under {found[rel].root} and {root}")))
                continue
            found[rel] = SourceFile(path, rel, root)
    return list(found.values()), problems


def _resolve(path: Path) -> tuple[Path | None, str]:
    """(the real path, "") or (None, why not): a symlink loop (`a.txt -> a.txt`) makes
    `resolve()` raise instead of answering."""
    try:
        return path.resolve(), ""
    except RuntimeError:                    # Python < 3.13: "Symlink loop from ..."
        return None, "symlink loop (the link points back to itself)"
    except OSError as e:                    # 3.13+: ELOOP; or a directory we may not read
        if e.errno == errno.ELOOP:
            return None, "symlink loop (the link points back to itself)"
        return None, f"cannot resolve the path: {e.strerror or e}"


IGNORE_FILE = ".ragignore"


def _walk(top: Path):
    """Files under `top` (documents, and the rest to report), skipping hidden ones
    and what a `.ragignore` in a directory excludes (glob patterns relative to that
    directory, one a line; `name/` excludes a directory)."""
    rules: list[tuple[Path, list[str]]] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        here = Path(dirpath)
        if IGNORE_FILE in filenames:
            rules.append((here, _ignore_patterns(here / IGNORE_FILE)))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not _ignored(here / d, True, rules))
        for name in sorted(filenames):
            # Every visible file that is not excluded: unsupported ones are reported.
            if not name.startswith(".") and not _ignored(here / name, False, rules):
                yield here / name


def _ignore_patterns(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _ignored(path: Path, is_dir: bool, rules: list[tuple[Path, list[str]]]) -> bool:
    for base, patterns in rules:
        if not path.is_relative_to(base):
            continue
        rel = path.relative_to(base).as_posix()
        for pat in patterns:
            if pat.endswith("/"):
                if is_dir and (fnmatch.fnmatch(rel, pat[:-1]) or fnmatch.fnmatch(path.name, pat[:-1])):
                    return True
            elif fnmatch.fnmatch(rel, pat) or ("/" not in pat and fnmatch.fnmatch(path.name, pat)):
                return True
    return False
