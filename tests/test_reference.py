"""Which engine made a number: `harness run`, `harness report` (terminal and report.md) and `harness compare` name the
engine, and say in one line where a run's settings differ from the committed sweep's (compiled, 256 tokens, batch 1)."""
from __future__ import annotations

import json

from click.testing import CliRunner

from harness.analysis.reference import differences, reference_note
from harness.cli import main
from tests.test_report import METRIC, RUN1, manifest, write_run

SWEEP = {"engine": "compiled", "max_new_tokens": "256", "batch_size": "1"}


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def configured(run_id, engine, max_new_tokens, batch_size=1):
    info = manifest(run_id, "m", {"k": 4}, metric=METRIC, max_new_tokens=max_new_tokens)
    info["config"].update(engine=engine, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return info


def test_differences_name_each_setting_that_departs_from_the_sweep():
    assert differences(SWEEP) == [] and reference_note({"this run": []}) is None
    assert differences({**SWEEP, "engine": "eager"}) == ["engine eager (dynamic KV cache)"]
    assert differences({"engine": "compiled", "max_new_tokens": "default", "batch_size": "4"}) == [
        "max new tokens: the task's default", "batch size 4"]
    note = reference_note({"A": ["engine eager (dynamic KV cache)"], "B": []})
    assert note.startswith("note: the committed results (results/README.md) were measured with --engine compiled")
    assert note.endswith("A: engine eager (dynamic KV cache)") and "B:" not in note


def test_compare_names_each_runs_engine_and_which_run_differs_from_the_sweep(tmp_path):
    _, rows, scores = RUN1
    write_run(tmp_path, configured("r1", "eager", 128), rows, scores)
    write_run(tmp_path, configured("r2", "compiled", 256), rows, scores)
    out = invoke("compare", "r1", "r2", "--runs-dir", str(tmp_path)).output.splitlines()
    assert out[0].endswith("engine eager (dynamic KV cache))") and out[1].endswith("engine compiled (static KV cache))")
    assert out[2].startswith("note: the committed results") and out[2].endswith(
        "A: engine eager (dynamic KV cache), max new tokens 128")
    same = invoke("compare", "r2", "r2", "--runs-dir", str(tmp_path)).output
    assert "note: the committed results" not in same


def test_report_names_the_engine_and_notes_settings_unlike_the_sweep(tmp_path):
    _, rows, scores = RUN1
    write_run(tmp_path / "sweep", configured("r1", "compiled", 256), rows, scores)
    write_run(tmp_path / "mine", configured("r2", "eager", 256), rows, scores)
    for runs, engine, noted in (("sweep", "compiled (static KV cache)", False), ("mine", "eager (dynamic KV cache)", True)):
        result = invoke("report", str(tmp_path / runs), "--out", str(tmp_path / f"out-{runs}"), "--no-plots")
        md = (tmp_path / f"out-{runs}" / "report.md").read_text()
        assert f"## m on hw (engine: {engine})" in md and f"m on hw (engine: {engine})" in result.output
        assert ("note: the committed results" in md) is noted and ("note: the committed results" in result.output) is noted


def test_a_run_prints_its_engine_and_how_it_differs_from_the_sweep(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}: abc abc"}) + "\n" for i in range(2)))
    result = invoke("run", "--method", "jacobi", "--model", "tiny-random", "--prompts", str(prompts),
                    "--max-new-tokens", "8", "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("engine: eager (dynamic KV cache)")
    assert lines[at + 1].startswith("note: the committed results") and lines[at + 1].endswith(
        "this run: engine eager (dynamic KV cache), max new tokens 8")
