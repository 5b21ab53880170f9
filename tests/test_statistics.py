"""The reviewer's statistics (docs/measurement.md) on hand-built tables: clean pairs, per-answer speedup, the accuracy
difference and the quality-weighted speedup against direct re-computations; the interval that resamples runs then
documents; per-turn rows and AR's own conversations; run-level AR speed flags; acceptance by position; every
leaderboard column documented; `bench --repeats 2` on tiny-random."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from harness.analysis.acceptance import by_position, committed
from harness.analysis.columns import COLUMNS as DOCUMENTED, markdown_table
from harness.analysis.leaderboard import COLUMNS, board_row, leaderboard, run_speeds
from harness.analysis.paired import ALPHA, paired_statistics
from harness.cli import main
from tests.test_report import hand_runs, manifest, sample

ROOT = Path(__file__).resolve().parents[1]


def pairs(rows) -> pd.DataFrame:
    """rows: (run, doc, method tokens, method s, AR tokens, AR s, method stop, AR stop)."""
    cols = ["run_id", "doc_id", "new_tokens", "wall_time_s", "new_tokens_ar", "wall_time_s_ar", "stop_reason",
            "stop_reason_ar"]
    return pd.DataFrame(rows, columns=cols)


def spider_like() -> pd.DataFrame:
    """12 documents: 6 end on their own at 1.2x, 6 hit the cap on a side and the drafter copies a loop at 3x."""
    rows = [("r", f"e{i}", 50, 50 / (12 * 1.2), 50, 50 / 12, "eos", "stop_string") for i in range(6)]
    rows += [("r", f"c{i}", 256, 256 / (12 * 3.0), 256, 256 / 12, "max_new_tokens", "eos" if i % 2 else "max_new_tokens")
             for i in range(6)]
    return pairs(rows)


def test_clean_speedup_leaves_out_capped_pairs():
    p = spider_like()
    s = paired_statistics(p, n_boot=500)
    m_tok, m_s, a_tok, a_s = (p[c].sum() for c in ("new_tokens", "wall_time_s", "new_tokens_ar", "wall_time_s_ar"))
    assert s["speedup"] == pytest.approx((m_tok / m_s) / (a_tok / a_s))
    assert s["speedup"] > 2  # the loops dominate the all-pairs figure
    assert s["speedup_clean"] == pytest.approx(1.2) and s["n_clean"] == 6 and s["capped_share"] == pytest.approx(0.5)
    # six clean documents: the all-pairs figure has an interval, the clean one does not, and says why
    assert s["speedup_lo"] is not None and s["speedup_clean_lo"] is None
    assert "6 documents with clean pairs, fewer than 10" in s["clean_interval_note"]
    more = pd.concat([p, spider_like().assign(doc_id=lambda d: d["doc_id"] + "b")])
    s = paired_statistics(more, n_boot=500)
    assert s["speedup_clean_lo"] <= 1.2 <= s["speedup_clean_hi"] and s["clean_interval_note"] is None


def test_per_answer_speedup_of_a_lossy_method_that_writes_longer():
    # HumanEval-cllm-like: 1.42x the tokens at 1.09x the throughput is 1.30x the time per answer
    rows = [("r", str(i), 142, 142 / (10 * 1.09), 100, 10.0, "eos", "eos") for i in range(12)]
    s = paired_statistics(pairs(rows), n_boot=300)
    assert s["speedup"] == pytest.approx(1.09) and s["length_ratio"] == pytest.approx(1.42)
    assert s["speedup_per_answer"] == pytest.approx(120 / (12 * 142 / 10.9))  # Σ AR time / Σ method time
    assert s["speedup_per_answer"] == pytest.approx(1.09 / 1.42)
    assert s["speedup_per_answer_hi"] < 1  # slower per answer, on every resample


def test_accuracy_difference_and_quality_weight_by_hand():
    p = pairs([("r", str(i), 10, 0.5, 10, 1.0, "eos", "eos") for i in range(12)])  # 2x per answer
    acc = pd.DataFrame({"run_id": "r", "doc_id": [str(i) for i in range(12)],
                        "m_acc": [1.0] * 4 + [0.0] * 8, "a_acc": [1.0] * 6 + [0.0] * 6})
    s = paired_statistics(p, accuracy=acc, n_boot=500)
    assert s["accuracy_delta"] == pytest.approx(4 / 12 - 6 / 12)
    weight = min(1.0, math.exp(-ALPHA * (1 - (4 / 12) / (6 / 12))))
    assert s["speedup_quality"] == pytest.approx(2.0 * weight)
    assert s["accuracy_delta_lo"] <= s["accuracy_delta"] <= s["accuracy_delta_hi"]
    # accuracy kept (or AR at zero): the full per-answer credit
    better = paired_statistics(p, accuracy=acc.assign(m_acc=acc["a_acc"]), n_boot=0)
    assert better["speedup_quality"] == pytest.approx(2.0)
    zero = paired_statistics(p, accuracy=acc.assign(m_acc=0.0, a_acc=0.0), n_boot=0)
    assert zero["speedup_quality"] == pytest.approx(2.0) and zero["accuracy_delta"] == 0
    assert paired_statistics(p, n_boot=0)["speedup_quality"] is None  # no metric: no quality figure


def test_the_interval_resamples_runs_then_documents():
    rng = np.random.default_rng(0)
    docs = [str(i) for i in range(20)]
    noise = rng.normal(0, 0.02, 20)

    def run(name, level):
        return [(name, d, 10, 1 / (level + e), 10, 1.0, "eos", "eos") for d, e in zip(docs, noise)]

    one = paired_statistics(pairs(run("a", 1.3)), n_boot=1000)
    drift = paired_statistics(pairs(run("a", 1.2) + run("b", 1.4)), n_boot=1000)
    assert one["n_runs"] == 1 and drift["n_runs"] == 2
    assert drift["speedup_run_min"] == pytest.approx(1.2, rel=0.02) and drift["speedup_run_max"] == pytest.approx(1.4, rel=0.02)
    # the run-to-run drift widens the interval well past what document sampling alone gives
    assert (drift["speedup_hi"] - drift["speedup_lo"]) > 3 * (one["speedup_hi"] - one["speedup_lo"])
    assert drift["speedup_lo"] < 1.25 and drift["speedup_hi"] > 1.35
    assert paired_statistics(pairs(run("a", 1.3)), n_boot=300, seed=4) == paired_statistics(pairs(run("a", 1.3)),
                                                                                            n_boot=300, seed=4)


def conversation_runs():
    """Two runs on a two-turn task: a lossless method (same outputs) and a lossy one whose first answers differ on doc
    a (so AR's turn 2 of doc a followed the lossy method's answer, not its own)."""
    def rows(method, same_a):
        out = []
        for doc in "ab":
            for turn in (1, 2):
                sha = "x" if (doc == "b" or same_a) else "y"
                out += [sample("ar", doc, 2.0, 10, 10, f"{doc}{turn}", turn=turn),
                        sample(method, doc, 1.0 if turn == 1 else 0.5, 10, 5, f"{doc}{turn}" if sha == "x" else "q",
                               turn=turn)]
        return out
    return hand_runs((manifest("r1", "fast", task="mt"), rows("fast", True), []),
                     (manifest("r2", "lossy", task="mt"), rows("lossy", False), []))


def test_per_turn_rows_and_ar_from_its_own_conversations_only():
    board = leaderboard(conversation_runs(), n_boot=0)
    assert list(board["turn"]) == ["all"] * 3 + ["1"] * 3 + ["2"] * 3
    fast = board[board["method"] == "fast"].set_index("turn")["speedup"]
    assert fast["1"] == pytest.approx(2.0) and fast["2"] == pytest.approx(4.0)
    assert fast["all"] == pytest.approx(40 / 3 / 5)  # 40 tokens in 3 s against 40 in 8 s
    ar = board[board["method"] == "ar"].set_index("turn")
    # AR's turn 2 of doc a in the lossy run followed the lossy method's answer: not in AR's row
    assert ar.loc["1", "n"] == 4 and ar.loc["2", "n"] == 3 and ar.loc["all", "n"] == 7
    lossy = board[board["method"] == "lossy"].set_index("turn")
    assert lossy.loc["2", "n_paired"] == 2  # it still pairs with the method


def test_run_speeds_flag_a_run_whose_machine_ran_faster():
    runs = []
    for i, ar_s in enumerate([2.0, 2.1, 1.9, 1.0]):  # the last run's AR is twice as fast
        info = manifest(f"r{i}", "m", task="t", created=f"2026-01-0{i + 1}T00:00")
        runs.append((info, [sample("ar", d, ar_s, 10, 10) for d in "ab"] + [sample("m", d, 1.0, 10, 5) for d in "ab"],
                     []))
    speeds = run_speeds(hand_runs(*runs)).set_index("run_id")
    assert speeds.loc["r3", "ar_tokens_per_s"] == pytest.approx(10.0)
    median = np.median([10 / r for r in (2.0, 2.1, 1.9, 1.0)])
    assert speeds.loc["r3", "ar_vs_median"] == pytest.approx(10.0 / median)
    assert list(speeds["flagged"]) == [False, False, False, True]


def test_acceptance_by_position_and_committed_distribution():
    steps = pd.DataFrame({"step_tokens": [[1, 4, 2, 1]], "step_drafted": [[0, 3, 3, 3]], "step_accepted": [[0, 3, 1, 0]]})
    c = committed(steps).set_index("k")["share"]
    assert c.to_dict() == {1: 0.5, 2: 0.25, 4: 0.25}
    pos = by_position(steps).set_index("k")
    # position 1: 3 drafted steps, 2 accepted it; 2: of those 2, 1; 3: of that 1, 1
    assert pos["rate"].to_dict() == {1: pytest.approx(2 / 3), 2: 0.5, 3: 1.0}
    assert pos["steps"].to_dict() == {1: 3, 2: 2, 3: 1}
    assert by_position(pd.DataFrame({"step_drafted": [[0, 0]], "step_accepted": [[0, 0]]})).empty  # AR drafts nothing


def test_every_leaderboard_column_is_documented_and_the_docs_table_is_generated():
    runs = hand_runs((manifest("r1", "m", task="t", metric="acc"),
                      [sample("ar", "a", 2.0), sample("m", "a", 1.0)],
                      [{"method": m, "doc_id": "a", "scores": {"acc": 1.0}} for m in ("m", "ar")]))
    s = runs.samples
    row = board_row(s[s["method"] == "m"], s[s["method"] == "ar"], runs.scores, "acc", 0, 0)
    assert set(row) <= set(COLUMNS), f"undocumented: {set(row) - set(COLUMNS)}"  # nothing computed then dropped
    assert COLUMNS == list(DOCUMENTED) and all(DOCUMENTED.values())
    text = (ROOT / "docs" / "records.md").read_text()
    block = re.search(r"<!-- columns:start -->\n(.*?)\n<!-- columns:end -->", text, re.S)
    assert block and block.group(1) == markdown_table(), "run: python -m harness.analysis.columns > the block"


def test_one_definition_of_speedup_in_the_docs():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pattern = re.compile(r"speedup`?\)? *(=|is Σ|\(Σ)", re.I)  # "speedup = ...", "speedup is Σ ...", "speedup (Σ ..."
    defining = [p.name for p in docs if pattern.search(p.read_text())]
    assert defining == ["measurement.md"], defining


def test_bench_repeats_runs_every_cell_twice_interleaved_and_pools_them(tmp_path, write_gsm8k):
    data = write_gsm8k(tmp_path / "data", [{"question": f"Tom has {i} apples and buys 4 more. How many?",
                                            "answer": f"#### {i + 4}"} for i in range(10)])
    args = ["bench", "--tasks", "gsm8k", "--methods", "jacobi:block_size=2,speculative:draft=ngram,k=2",
            "--model", "tiny-random", "--limit", "10", "--max-new-tokens", "4", "--num-fewshot", "0",
            "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "res"),
            "--bootstrap", "200", "--repeats", "2"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    heads = re.findall(r"\[\d/4\] gsm8k × (\S+) \(replicate (\d)/2\)", result.output)
    assert heads == [("jacobi:block_size=2", "1"), ("speculative:draft=ngram,k=2", "1"),
                     ("jacobi:block_size=2", "2"), ("speculative:draft=ngram,k=2", "2")]  # methods interleaved
    infos = [json.loads((r / "run.json").read_text()) for r in sorted((tmp_path / "runs").iterdir())]
    assert sorted(i["config"]["replicate"] for i in infos) == [1, 1, 2, 2]
    engines = {i["method"]["name"]: i["engines"] for i in infos}
    assert set(engines["jacobi"]) == {"jacobi", "ar"} and engines["jacobi"]["jacobi"]["target"]["engine"] == "eager"
    board = pd.read_csv(tmp_path / "res" / "leaderboard.csv")
    rows = board[board["method"] != "ar"]
    assert list(rows["n_runs"]) == [2, 2] and list(rows["n"]) == [20, 20]
    assert (rows["speedup_run_min"] <= rows["speedup_run_max"]).all() and rows["speedup_lo"].notna().all()
    assert "--repeats 2" in (tmp_path / "res" / "report.md").read_text()
    # the same command again reuses all four runs
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.output.count("finished earlier") == 4
