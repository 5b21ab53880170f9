"""`harness profile` and harness.orchestration.profile on tiny-random: the table's shape and definitions (no timing values
are checked), the files it writes, one-line errors for bad input, and the report's profile section."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.engine.models import tiny_random
from harness.orchestration.profile import COLUMNS, measure
from harness.engine.provenance import hardware
from harness.analysis.markdown import find_profile, profile_markdown

PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(main, ["profile", "--model", "tiny-random", *args], catch_exceptions=False)


def test_measure_table():
    model, _ = tiny_random()
    table = measure(model, context=20, widths=(8, 2, 2), repeats=4, warmup=1)
    assert list(table.columns) == COLUMNS and table["width"].tolist() == [1, 2, 8]  # 1 always, sorted, unique
    assert set(table["engine"]) == {"eager"}
    assert table["vs_first_engine_w1"].tolist() == table["break_even_tokens_per_step"].tolist()
    assert (table["ms_p10"] <= table["ms_median"]).all() and (table["ms_median"] <= table["ms_p90"]).all()
    assert (table["ms_median"] > 0).all()
    assert table["break_even_tokens_per_step"].tolist() == pytest.approx((table["ms_median"] / table["ms_median"][0]).tolist())


@torch.inference_mode()
def test_measure_leaves_the_model_as_it_was():
    model, _ = tiny_random()
    x = torch.arange(5, 15).unsqueeze(0)
    before = model(x).logits
    measure(model, context=10, widths=(1, 4), repeats=2, warmup=0)
    torch.testing.assert_close(model(x).logits, before)


def test_cli_writes_csv_json_png_named_by_hardware(tmp_path):
    result = invoke("--context", "16", "--widths", "1,4", "--repeats", "3", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    label = hardware(torch.device("cpu"))["label"]
    assert label in result.output and "break-even tokens/step" in result.output
    (meta,) = tmp_path.glob("*.json")
    assert meta.name.endswith("--tiny-random.json")
    cond = json.loads(meta.read_text())
    assert cond["hardware"]["label"] == label and cond["model"] == "tiny-random" and cond["context"] == 16
    table = pd.read_csv(meta.with_suffix(".csv"))
    assert list(table.columns) == COLUMNS and table["width"].tolist() == [1, 4]
    assert table["break_even_tokens_per_step"][0] == 1.0
    assert meta.with_suffix(".png").read_bytes()[:8] == PNG
    for row in table.itertuples():  # the printed table is the CSV's
        assert f"{row.break_even_tokens_per_step:.2f}" in result.output


@pytest.mark.parametrize("args,message", [
    (["--widths", "0"], "positive integer"),
    (["--widths", "a,b"], "expected positive integers"),
    (["--widths", "1,-4"], "positive integer"),
    (["--widths", ","], "positive integer"),
    (["--context", "0"], "--context must be at least 1"),
    (["--context", "-5"], "--context must be at least 1"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--context", "500", "--widths", "1,32"], "exceeds the context length of tiny-random (512)"),
    (["--engines", "eager,fast"], "choose from eager, compiled"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    result = invoke(*args, "--out", str(tmp_path))
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")
    assert not list(tmp_path.iterdir())  # nothing written


def write_profile(folder, label, model, ms=(10.0, 30.0)):
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{label}--{model}"
    pd.DataFrame({"width": [1, 16], "ms_median": ms, "ms_p10": [m - 1 for m in ms], "ms_p90": [m + 1 for m in ms],
                  "break_even_tokens_per_step": [1.0, ms[1] / ms[0]]}).to_csv(f"{stem}.csv", index=False)
    stem.with_suffix(".json").write_text(json.dumps({
        "hardware": {"label": label}, "model": model, "dtype": "float32", "context": 256, "repeats": 20,
        "created": "2026-11-30 12:00"}))


def profile_lines(model, hardware, out):
    return profile_markdown(find_profile(model, hardware, out))


def test_report_shows_the_profile_of_its_hardware(tmp_path):
    out = tmp_path / "results"
    assert profile_lines("m", "2-core CPU", out) == []
    write_profile(out / "profile", "other CPU", "m")
    assert profile_lines("m", "2-core CPU", out) == []  # another machine's costs say nothing here
    write_profile(out / "profile", "2-core CPU", "other-model", ms=(10.0, 50.0))
    assert "| eager | 16 | 50.00 | 49.00–51.00 | 5.00 |" in profile_lines("m", "2-core CPU", out)
    write_profile(out / "profile", "2-core CPU", "m", ms=(10.0, 30.0))  # this model's own profile wins
    text = "\n".join(profile_lines("m", "2-core CPU", out))
    assert "| eager | 16 | 30.00 | 29.00–31.00 | 3.00 |" in text and "50.00" not in text and "2026-11-30" in text
    (out / "profile" / "2-core CPU--m.json").write_text("{")  # a damaged profile is left out, not fatal
    assert "50.00" in "\n".join(profile_lines("m", "2-core CPU", out))


def test_report_md_includes_the_profile(tmp_path):
    from harness.analysis.leaderboard import leaderboard
    from harness.analysis.report import write_report
    from tests.test_report import synthetic_runs

    runs = synthetic_runs()
    out = tmp_path / "out"
    write_profile(out / "profile", "2-core CPU", "m", ms=(10.0, 30.0))
    written = write_report(runs, leaderboard(runs, n_boot=0), out, plots=False)
    md = written["report"].read_text()
    assert "### Forward cost on this hardware" in md and "| 16 | 30.00 | 29.00–31.00 | 3.00 |" in md


def test_measure_both_engines_side_by_side():
    """The compiled engine's rows come after the eager ones, each with its own t(1) and against eager's t(1)."""
    model, _ = tiny_random()
    table = measure(model, context=12, widths=(1, 3), repeats=2, warmup=1, engines=("eager", "compiled"),
                    autotune=False)
    assert table[["engine", "width"]].values.tolist() == [["eager", 1], ["eager", 3], ["compiled", 1], ["compiled", 3]]
    compiled = table[table["engine"] == "compiled"].reset_index()
    assert compiled["break_even_tokens_per_step"][0] == 1.0
    eager_one = table["ms_median"][0]
    assert compiled["vs_first_engine_w1"].tolist() == pytest.approx((compiled["ms_median"] / eager_one).tolist())
