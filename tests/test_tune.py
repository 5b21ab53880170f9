"""`harness tune`: every grid candidate counted on pilot questions, the best expected speedup chosen per method."""
from __future__ import annotations

import json

from click.testing import CliRunner

from harness.cli import main
from harness.orchestration.tune import TuneConfig, grid, tune


def test_tune_picks_the_best_expected_speedup_per_method_and_bench_reads_it(tmp_path, write_gsm8k):
    data = write_gsm8k(tmp_path / "data", [{"question": f"Tom has {i} apples and buys 4 more. How many?",
                                             "answer": "#### 1"} for i in range(2)])
    out = tmp_path / "tuning.json"
    result = tune(TuneConfig(out=str(out), model="tiny-random", limit=2, max_new_tokens=12, data_dir=str(data)),
                  echo=lambda *a: None)
    assert json.loads(out.read_text()) == result
    rows = result["candidates"]
    assert [(r["method"], r["options"]) for r in rows] == [(m, ",".join(f"{k}={v}" for k, v in sorted(o.items())))
                                                            for m, o in grid()]
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


def test_profile_costs_reads_measured_widths_interpolates_between_and_refuses_outside(tmp_path):
    import pytest

    from harness import HarnessError
    from harness.orchestration.tune import interpolate_costs, profile_costs

    csv = tmp_path / "p.csv"
    csv.write_text("engine,width,ms_median,ms_p10,ms_p90,break_even_tokens_per_step,vs_first_engine_w1\n"
                   "eager,1,80,79,81,1.0,1.0\neager,4,160,150,170,2.0,2.0\n"
                   "compiled,1,40,39,41,1.0,0.5\ncompiled,4,52,50,54,1.3,0.65\ncompiled,8,64,60,68,1.6,0.8\n")
    costs = interpolate_costs(profile_costs(str(csv), "compiled"), [1, 4, 6])
    assert costs[1] == 1.0 and costs[4] == 1.3 and abs(costs[6] - 1.45) < 1e-9
    with pytest.raises(HarnessError, match="width 9 is outside the measured widths"):
        interpolate_costs(profile_costs(str(csv), "compiled"), [9])
    with pytest.raises(HarnessError, match="no rows for the compiled engine"):
        (tmp_path / "e.csv").write_text("engine,width,break_even_tokens_per_step\neager,1,1.0\n")
        profile_costs(str(tmp_path / "e.csv"), "compiled")


def test_tuned_specs_equal_to_a_method_already_in_the_sweep_are_run_once(tmp_path):
    from harness.orchestration.tune import tuned_specs

    path = tmp_path / "tuning.json"
    path.write_text(json.dumps({"tuned": ["jacobi:block_size=16", "speculative:draft=ngram,k=3",
                                          "lookahead:guess_set=6,ngram=3,window=6"]}))
    notes = []
    kept = tuned_specs(str(path), ("jacobi,lookahead", "speculative:draft=ngram"), echo=notes.append)
    assert kept == ["speculative:draft=ngram,k=3"]  # jacobi's default block is 16; lookahead's defaults are (6, 3, 6)
    assert len(notes) == 2 and all("run once" in n for n in notes)
    assert tuned_specs(str(path), ("jacobi:block_size=7",), echo=notes.append)[0] == "jacobi:block_size=16"
