"""Summary statistics on hand-built rows, checked by hand."""
from __future__ import annotations

import math

import pytest

from harness.analysis.summary import format_table, summarize


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


def test_speedup_is_the_ratio_of_throughputs_and_length_ratio_shows_shorter_outputs():
    # the method stops after 8 tokens where AR writes 128 (a different text): 6.4x less time but 0.4x the
    # throughput; on the second request it writes 128 tokens in the time AR takes for 40
    rows = [row("ar", "a", 128, 128, 12.8, "x"), row("m", "a", 8, 4, 2.0, "y"),
            row("ar", "b", 40, 40, 4.0, "z"), row("m", "b", 128, 16, 4.0, "w")]
    m = summarize(rows)["m"]
    assert m["speedup"] == pytest.approx((136 / 6.0) / (168 / 16.8))
    assert m["speedup"] < (12.8 + 4.0) / (2.0 + 4.0)  # the ratio of times would credit the short answer
    assert m["speedup_geomean"] == pytest.approx(math.sqrt(0.4 * 3.2))
    assert m["length_ratio"] == pytest.approx(136 / 168) and m["n_docs"] == 2
    assert summarize(rows)["ar"]["length_ratio"] == 1.0


def test_pairs_without_tokens_are_left_out_of_the_ratios():
    rows = [row("ar", "a", 10, 10, 1.0, "x"), row("m", "a", 10, 5, 0.5, "x"),
            row("ar", "b", 0, 1, 0.1, ""), row("m", "b", 0, 1, 0.1, "")]  # nothing generated: no throughput
    m = summarize(rows)["m"]
    assert m["n_paired"] == 1 and m["speedup"] == pytest.approx(2.0) and m["lossless_rate"] == 1.0


def test_longest_run_finds_the_longest_repeat():
    from harness.engine.generate import longest_run

    assert longest_run([]) == 0
    assert longest_run([5]) == 1
    assert longest_run([1, 2, 2, 3, 3, 3, 2]) == 3
    assert longest_run([7] * 12 + [1]) == 12


def test_repeats_phrase_needs_one_word_sequence_three_times():
    from harness.text import repeats_phrase

    sentence = "He runs 180 meters per week times 3 weeks. "
    assert repeats_phrase(sentence * 3)
    assert not repeats_phrase(sentence * 2)  # twice is not a loop
    assert not repeats_phrase("one two three four five six seven " * 3)  # 7 words: shorter than the phrase
    assert not repeats_phrase("")
    assert repeats_phrase("x " * 10)  # a run of one word is a phrase loop too


def test_phrase_repeat_share_reads_the_outputs():
    loop = "the answer is 4 so the total is 4 and " * 3
    rows = [{**row("ar", d, 20, 20, 2.0, d), "output": t} for d, t in (("a", "fine"), ("b", "also fine"))]
    rows += [{**row("m", d, 20, 5, 1.0, d), "output": t} for d, t in (("a", loop), ("b", "fine"))]
    rows.append(row("old", "a", 20, 10, 1.0, "a"))  # no output text recorded
    s = summarize(rows)
    assert s["ar"]["phrase_repeat_share"] == 0.0 and s["m"]["phrase_repeat_share"] == pytest.approx(0.5)
    assert s["old"]["phrase_repeat_share"] is None
    assert "phrases" in format_table(s) and "50%" in format_table(s)


def test_repeat_share_counts_looping_outputs_per_method():
    rows = [{**row("ar", d, 20, 20, 2.0, d), "max_repeat_run": r} for d, r in (("a", 3), ("b", 10))]
    rows += [{**row("m", d, 20, 5, 1.0, d), "max_repeat_run": r} for d, r in (("a", 12), ("b", 15))]
    rows.append(row("old", "a", 20, 10, 1.0, "a"))  # a run recorded before the field existed
    s = summarize(rows)
    assert s["ar"]["repeat_share"] == pytest.approx(0.5) and s["m"]["repeat_share"] == pytest.approx(1.0)
    assert s["old"]["repeat_share"] is None
    assert "looping" in format_table(s) and "100%" in format_table(s)
