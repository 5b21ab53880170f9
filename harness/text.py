"""Plain text in one place: tables for the terminal (`harness run`'s summary, the leaderboard, the listings), the
comma-separated numbers options take, and the sentence-loop check reports apply to outputs.

    print(text_table(["method", "n"], [["jacobi", "20"], ["ar", "20"]], right={1}))
    positive_ints("4,8,16", "--block-sizes", "4,8,16")  # (4, 8, 16)
    repeats_phrase("a b c d e f g h " * 3)  # True: 8 words that occur 3 times
"""
from __future__ import annotations

from collections import Counter

from harness import HarnessError

PHRASE_WORDS, PHRASE_TIMES = 8, 3  # an output holding one 8-word sequence 3+ times repeats a phrase


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


def repeats_phrase(text: str, words: int = PHRASE_WORDS, times: int = PHRASE_TIMES) -> bool:
    """Whether some sequence of `words` whitespace-separated words occurs `times` or more times in `text`
    (overlaps count): a loop over a sentence, which a run of one repeated token does not catch."""
    w = text.split()
    counts = Counter(tuple(w[i:i + words]) for i in range(len(w) - words + 1))
    return max(counts.values(), default=0) >= times
