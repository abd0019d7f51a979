"""Reading order for two-column booklet pages.

pypdf returns a page's text in the order of its content stream. A 学生便覧 set in two
columns may draw its lines across both columns in turn (row by row), which
interleaves two articles line by line. When a page has two columns (text starting in
both halves, almost nothing crossing the gutter), the text runs are ordered as a
reader reads them: what spans the page at the top (running header), the left column
top to bottom, the right column, then what spans the page at the bottom (page number).
Single-column pages keep pypdf's own extraction.
"""
from __future__ import annotations


def page_text(page) -> str:
    runs: list[tuple[float, float, float, str]] = []     # (x, y, width, text)

    def visit(text, cm, tm, font_dict, font_size):
        if not text or not text.strip():
            return
        x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        scale = (tm[0] ** 2 + tm[1] ** 2) ** 0.5 * ((cm[0] ** 2 + cm[1] ** 2) ** 0.5 or 1)
        size = (font_size or 1) * (scale or 1)
        for k, line in enumerate(text.split("\n")):
            if line.strip():
                width = sum(size if ord(c) > 0x2e80 else size * 0.5 for c in line)
                runs.append((x, y - k * size * 1.2, width, line))

    plain = page.extract_text(visitor_text=visit) or ""
    box = page.mediabox
    left, right = float(box.left), float(box.right)
    mid = (left + right) / 2
    gutter = (right - left) * 0.02
    body = [r for r in runs if r[0] + r[2] <= mid + gutter or r[0] >= mid - gutter]
    spanning = [r for r in runs if r not in body]
    right_col = [r for r in body if r[0] >= mid - gutter]
    if len(runs) < 6 or len(right_col) < 0.25 * len(body) or len(spanning) > 0.15 * len(runs):
        return plain
    top = max(r[1] for r in body)
    head = sorted((r for r in spanning if r[1] > top - 1), key=lambda r: (-r[1], r[0]))
    foot = sorted((r for r in spanning if r[1] <= top - 1), key=lambda r: (-r[1], r[0]))
    left_col = [r for r in body if r not in right_col]
    return "\n".join(_lines(head) + _lines(left_col) + _lines(right_col) + _lines(foot))


def _lines(runs) -> list[str]:
    """Runs on one baseline joined left to right, lines top to bottom."""
    rows: list[list[tuple[float, float, float, str]]] = []
    for r in sorted(runs, key=lambda r: (-r[1], r[0])):
        if rows and abs(rows[-1][0][1] - r[1]) < 2:
            rows[-1].append(r)
        else:
            rows.append([r])
    return ["".join(t for _, _, _, t in sorted(row)) for row in rows]
