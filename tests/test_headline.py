"""headline.md: the method × task matrix, the per-task tables and the reproduction table, on hand-built boards."""
from __future__ import annotations

import pandas as pd

from harness.analysis.headline import PAPER, cell, render_headline
from harness.analysis.leaderboard import leaderboard

from tests.test_report import synthetic_runs


def test_cell_marks_only_intervals_wholly_above_one():
    row = lambda s, lo, hi: pd.Series({"speedup": s, "speedup_lo": lo, "speedup_hi": hi})  # noqa: E731
    assert cell(row(1.5, 1.2, 1.8)) == "**1.50× [1.20, 1.80]**"
    assert cell(row(1.1, 0.9, 1.3)) == "1.10× [0.90, 1.30]"
    assert cell(row(0.5, 0.4, 0.6)) == "0.50× [0.40, 0.60]"
    assert cell(row(2.0, None, None)) == "2.00× (no CI)"
    assert cell(None) == "–" and cell(row(None, None, None)) == "–"


def test_headline_matrix_per_task_tables_and_reproduction():
    board = leaderboard(synthetic_runs(), n_boot=200)
    profile = ({"created": "2026-12-01 06:21", "model": "m"},
               pd.DataFrame({"engine": ["compiled"] * 3, "width": [1, 4, 16], "ms_median": [29.0, 35.3, 60.8],
                             "ms_p10": [0.0] * 3, "ms_p90": [0.0] * 3,
                             "break_even_tokens_per_step": [1.0, 1.22, 2.10]}))
    text = render_headline(board, {("m", "2-core CPU"): profile}, command="harness bench x")
    lines = text.splitlines()
    assert "| method | gsm8k | humaneval | tokens/step (mean over tasks) | lossless |" in lines
    # one matrix row per method (AR left out), each with a cell per task carrying the board's figures
    # one matrix row per method (AR left out), twice: every pair, then the clean pairs only
    rows = [line for line in lines if line.startswith("| `") and line.count("|") == 6]
    assert [r.split("|")[1].strip() for r in rows] == ["`jacobi`", "`lookahead`", "`speculative`"] * 2
    assert lines.index("### Clean pairs only") > lines.index(rows[2]) and "(n " in rows[3]
    spec = board[(board["method"] == "speculative") & (board["task"] == "gsm8k")].iloc[0]
    assert cell(spec) in rows[2] and spec["speedup_lo"] > 1 and "**" in rows[2]
    assert "### gsm8k" in lines and "### humaneval" in lines
    assert sum(line.startswith("| `ar` |") for line in lines) == 2  # AR's row in each task table
    # the reproduction table: every paper row, ours filled where the method ran, "not run" where it did not
    repro = [line for line in lines if line.startswith("| cllm |") or line.startswith("| jacobi |")]
    assert len(repro) == sum(p["method"] in ("cllm", "jacobi") for p in PAPER)
    jac = board[board["method"] == "jacobi"]
    low, high = jac["speedup"].min(), jac["speedup"].max()
    assert f"| {low:.2f}–{high:.2f}× |" in next(r for r in repro if r.startswith("| jacobi | all"))
    assert all("| not run | – |" in r for r in repro if r.startswith("| cllm"))
    assert "compiled (t(1) = 29.0 ms): w=4: 1.22, w=16: 2.10" in text and "harness bench x" in text


def test_headline_says_when_no_profile_was_measured():
    text = render_headline(leaderboard(synthetic_runs(), n_boot=50), {})
    assert "No forward-cost profile of this hardware was found" in text
