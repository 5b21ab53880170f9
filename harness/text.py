"""Plain-text tables for the terminal, in one place: `harness run`'s summary, the leaderboard, the listings.

    print(text_table(["method", "n"], [["jacobi", "20"], ["ar", "20"]], right={1}))
"""
from __future__ import annotations


def text_table(header: list[str] | None, rows: list[list[str]], right: set[int] = frozenset(), gap: int = 2) -> str:
    """Columns as wide as their widest cell plus `gap` spaces; a dashed rule under the header (if any);
    the columns whose index is in `right` are right-aligned (numbers)."""
    table = ([list(header)] if header else []) + [[str(c) for c in r] for r in rows]
    if not table:
        return ""
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(max(map(len, table)))]

    def line(cells):
        out = [f"{c:>{widths[i]}}" if i in right else f"{c:<{widths[i]}}" for i, c in enumerate(cells)]
        return (" " * gap).join(out).rstrip()
    lines = [line(r) for r in table]
    if header:
        lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
