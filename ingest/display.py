"""Text as a terminal shows it: control characters escaped (a file name may hold a
newline that would break a report line), and padding by display width (a kanji takes
two columns, not one)."""
from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """`text` with control, format (bidi overrides) and line/paragraph separator
    characters written as escapes (\\n, \\x1b, \\u202e), so that it stays on one line
    and means what it shows."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable() or unicodedata.category(c) == "Zs":   # a full-width space stays
            out.append(c)
        elif c in _NAMED:
            out.append(_NAMED[c])
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return "".join(out)


def width(text: str) -> int:
    """Columns `text` takes on a terminal: East Asian wide and full-width characters
    two, combining marks none, the rest one."""
    w = 0
    for c in text:
        if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
            continue
        w += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return w


def ljust(text: str, columns: int) -> str:
    """`text` padded with spaces to `columns` display columns (never cut)."""
    return text + " " * max(0, columns - width(text))


def rjust(text: str, columns: int) -> str:
    return " " * max(0, columns - width(text)) + text
