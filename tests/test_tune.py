"""`harness tune`: every grid candidate counted on pilot questions, the best expected speedup chosen per method."""
from __future__ import annotations

import json

from click.testing import CliRunner

from harness.cli import main
from harness.orchestration.tune import GRID, TuneConfig, tune


def test_tune_picks_the_best_expected_speedup_per_method_and_bench_reads_it(tmp_path, write_gsm8k):
    data = write_gsm8k(tmp_path / "data", [{"question": f"Tom has {i} apples and buys 4 more. How many?",
                                             "answer": "#### 1"} for i in range(2)])
    out = tmp_path / "tuning.json"
    result = tune(TuneConfig(out=str(out), model="tiny-random", limit=2, max_new_tokens=12, data_dir=str(data)),
                  echo=lambda *a: None)
    assert json.loads(out.read_text()) == result
    rows = result["candidates"]
    assert [(r["method"], r["options"]) for r in rows] == [(m, ",".join(f"{k}={v}" for k, v in sorted(o.items())))
                                                            for m, o in GRID]
    for r in rows:
        assert r["tokens_per_step"] >= 1.0 and r["cost_vs_width_1"] > 0
        assert abs(r["expected_speedup"] - r["tokens_per_step"] / r["cost_vs_width_1"]) < 0.01
    assert len(result["tuned"]) == 3  # jacobi, lookahead, speculative
    for spec in result["tuned"]:
        method, options = spec.split(":", 1)
        best = max((r for r in rows if r["method"] == method), key=lambda r: r["expected_speedup"])
        assert options == best["options"]
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = CliRunner().invoke(main, ["bench", "--tasks", "gsm8k", "--methods", "jacobi", "--tuned", str(bad)])
    assert res.exit_code == 2 and "not a tuning file" in res.output and len(res.output.strip().splitlines()) == 1
