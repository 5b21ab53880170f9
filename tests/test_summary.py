"""Summary statistics on hand-built rows, checked by hand."""
from __future__ import annotations

import math

import pytest

from harness.summary import format_table, summarize


def row(method, doc, new, steps, wall, sha, error=None):
    return {"method": method, "doc_id": doc, "new_tokens": new, "steps": steps, "wall_time_s": wall,
            "output_sha1": sha, "error": error}


def test_paired_speedup_and_lossless_rate():
    rows = [row("ar", "a", 10, 10, 2.0, "x"), row("m", "a", 10, 4, 1.0, "x"),
            row("ar", "b", 20, 20, 6.0, "y"), row("m", "b", 20, 5, 1.0, "z"),
            row("ar", "c", 5, 5, 1.0, "w"), row("m", "c", None, None, None, None, error="Boom: x")]
    s = summarize(rows)
    m = s["m"]
    assert m["n"] == 2 and m["n_errors"] == 1 and m["n_paired"] == 2
    assert m["tokens_per_step"] == pytest.approx(30 / 9)
    assert m["tokens_per_s"] == pytest.approx(30 / 2.0)
    assert m["speedup"] == pytest.approx((2.0 + 6.0) / (1.0 + 1.0))  # ratio of total times
    assert m["speedup_geomean"] == pytest.approx(math.sqrt(2.0 * 6.0))
    assert m["lossless_rate"] == pytest.approx(0.5)
    assert m["accuracy"] is None
    assert s["ar"]["speedup"] == 1.0 and s["ar"]["n"] == 3 and s["ar"]["tokens_per_step"] == 1.0
    table = format_table(s)
    assert "m " in table and "4.00" in table and "50%" in table


def test_method_without_baseline_rows_has_no_speedup():
    s = summarize([row("m", "a", 4, 2, 1.0, "x")])
    assert s["m"]["speedup"] is None and s["m"]["lossless_rate"] is None and s["m"]["tokens_per_step"] == 2.0
    assert summarize([]) == {}
