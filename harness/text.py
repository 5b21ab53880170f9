"""Plain text in one place: tables for the terminal (`harness run`'s summary, the leaderboard, the listings) and
the comma-separated numbers options take.

    print(text_table(["method", "n"], [["jacobi", "20"], ["ar", "20"]], right={1}))
    positive_ints("4,8,16", "--block-sizes", "4,8,16")  # (4, 8, 16)
"""
from __future__ import annotations

from harness import HarnessError


def positive_ints(text: str, option: str, example: str) -> tuple[int, ...]:
    """"1,2,4" -> (1, 2, 4), sorted and unique; anything but positive integers is a one-line HarnessError."""
    try:
        numbers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HarnessError(f"{option} {text!r}: expected positive integers separated by commas, e.g. {example}") from None
    if not numbers or min(numbers) < 1:
        raise HarnessError(f"{option} {text!r}: every number must be a positive integer, e.g. {example}")
    return tuple(sorted(set(numbers)))


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
