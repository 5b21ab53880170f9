"""`--batch-size` and `--batch-sizes` end to end on tiny-random (docs/batching.md): bad input is one line, a batch
larger than the requests is clamped with a note, every row records its batch, wall times are shares of the
batch's so that throughput is tokens over batch time, outputs equal the batch-1 run's, an interrupted batched run
resumes batch by batch, the leaderboard keys on the batch size, and a bench over two batch sizes draws the plot."""
from __future__ import annotations

import json
from collections import defaultdict

import pandas as pd
import pytest
from click.testing import CliRunner

import harness.engine.session
from harness import HarnessError
from harness.analysis.leaderboard import KEY, settings
from harness.cli import main
from harness.engine.parallel import Process
from harness.engine.session import RunConfig
from harness.evaluation.tasks import get_task
from harness.orchestration.run import check_batch_size
from tests.test_cli import only_run, rows_of, run_args, write_prompts

PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "0"], "--batch-size must be at least 1 (got 0)"),
    (["--batch-size", "-3"], "--batch-size must be at least 1 (got -3)"),
])
def test_bad_batch_size_is_one_line(tmp_path, args, message):
    result = invoke(*run_args(tmp_path, *args))
    assert result.exit_code == 2 and result.output.strip() == f"error: {message}"


@pytest.mark.parametrize("args,message", [
    (["--batch-sizes", "1,0"], "--batch-sizes must be at least 1 (got 0)"),
    (["--batch-sizes", "2,x"], "expected numbers"),
    (["--batch-size", "2", "--batch-sizes", "1,2"], "give --batch-size or --batch-sizes, not both"),
    (["--batch-size", "0"], "--batch-sizes must be at least 1 (got 0)"),
])
def test_bad_bench_batch_sizes_are_one_line(tmp_path, args, message):
    result = invoke("bench", "--tasks", "gsm8k", "--methods", "jacobi", "--model", "tiny-random", *args)
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_batched_runs_refuse_what_they_cannot_batch():
    class Five:
        def count(self):
            return 5
    cfg = RunConfig(method="jacobi", prompts="p.jsonl", batch_size=4)
    with pytest.raises(HarnessError, match="does not combine with a data-parallel launch"):
        check_batch_size(cfg, Five(), Process(rank=0, world_size=2))
    for name in ("mt_bench", "spec_bench:rag"):  # conversation tasks (spec_bench's every question runs as one)
        with pytest.raises(HarnessError, match=f"single-turn tasks only; run {name} with --batch-size 1"):
            check_batch_size(RunConfig(method="jacobi", task=name, batch_size=2), get_task(name), Process())
    notes = []
    assert check_batch_size(RunConfig(method="jacobi", prompts="p", batch_size=9), Five(), Process(),
                            notes.append).batch_size == 5 and "using 5" in notes[0]


def test_a_batched_run_records_its_batches_and_equals_the_batch_1_run(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=5, extra=[{"id": "long", "prompt": "x" * 40}])
    one = tmp_path / "one"
    assert invoke(*run_args(one, "-O", "block_size=3", prompts=prompts)).exit_code == 0
    result = invoke(*run_args(tmp_path, "-O", "block_size=3", "--batch-size", "4", prompts=prompts))
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["batch_size"] == 4 and info["engine"]["engine"] == "eager"
    rows = rows_of(run_dir)
    assert len(rows) == 12 and all(r["error"] is None for r in rows)
    by_batch = defaultdict(list)
    for r in rows:
        by_batch[(r["method"], r["batch"])].append(r)
    assert sorted(by_batch) == [("ar", 0), ("ar", 1), ("jacobi", 0), ("jacobi", 1)]
    for (_, b), group in by_batch.items():
        assert [r["batch_size"] for r in group] == ([4] * 4 if b == 0 else [2] * 2)
        (wall,) = {r["batch_wall_time_s"] for r in group}
        assert all(r["wall_time_s"] == pytest.approx(wall / r["batch_size"]) for r in group)
    # the same outputs as one request at a time (lossless at any batch size), for the method and for AR
    single = {(r["method"], r["doc_id"]): r["output_sha1"] for r in rows_of(only_run(one))}
    assert {(r["method"], r["doc_id"]): r["output_sha1"] for r in rows} == single
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["batch_size"] == 4
    for method in ("jacobi", "ar"):  # throughput: tokens over the batches' wall time, each batch counted once
        walls = {r["batch"]: r["batch_wall_time_s"] for r in rows if r["method"] == method}
        tokens = sum(r["new_tokens"] for r in rows if r["method"] == method)
        assert summary["methods"][method]["tokens_per_s"] == pytest.approx(tokens / sum(walls.values()))
    assert summary["methods"]["jacobi"]["lossless_rate"] == 1.0


def test_a_batch_larger_than_the_requests_is_clamped_with_a_note(tmp_path):
    result = invoke(*run_args(tmp_path, "--batch-size", "9"))
    assert result.exit_code == 0 and "note: --batch-size 9 is larger than the 4 requests" in result.output
    run_dir = only_run(tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["config"]["batch_size"] == 4
    assert {r["batch_size"] for r in rows_of(run_dir)} == {4}


def test_an_interrupted_batched_run_resumes_batch_by_batch(tmp_path, monkeypatch):
    real, calls = harness.engine.session.run_batch_rows, []

    def interrupt_on_third(*a, **k):  # the second batch's first method
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(harness.engine.session, "run_batch_rows", interrupt_on_third)
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=5)
    assert invoke(*run_args(tmp_path, "--batch-size", "2", prompts=prompts)).exit_code == 130
    run_dir = only_run(tmp_path)
    before = rows_of(run_dir)
    assert len(before) == 4 and {r["batch"] for r in before} == {0}
    monkeypatch.setattr(harness.engine.session, "run_batch_rows", real)
    result = invoke("run", "--resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    after = rows_of(run_dir)
    assert after[:4] == before and len(after) == 10
    assert len({(r["method"], r["doc_id"]) for r in after}) == 10 and {r["batch"] for r in after} == {0, 1, 2}


def test_the_leaderboard_keys_on_the_batch_size():
    assert "batch_size" in KEY
    assert settings({"config": {"batch_size": 4}})["batch_size"] == "4"
    assert settings({"config": {}})["batch_size"] == "1"  # runs from before --batch-size


def test_bench_over_two_batch_sizes_draws_speedup_vs_batch_size(tmp_path, write_gsm8k):
    data = write_gsm8k(tmp_path / "data", [{"question": f"Tom has {i} apples and buys 4 more. How many?",
                                            "answer": f"{i} + 4 = {i + 4}\n#### {i + 4}"} for i in range(4)])
    result = invoke("bench", "--tasks", "gsm8k", "--methods", "jacobi:block_size=3", "--model", "tiny-random",
                    "--limit", "4", "--max-new-tokens", "8", "--num-fewshot", "0", "--batch-sizes", "1,2",
                    "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "res"),
                    "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    board = pd.read_csv(tmp_path / "res" / "leaderboard.csv")
    assert sorted(zip(board["method"], board["batch_size"])) == [("ar", 1), ("ar", 2), ("jacobi", 1), ("jacobi", 2)]
    assert (board["lossless_rate"] == 1).all()
    plot = tmp_path / "res" / "plots" / "speedup_vs_batch_size.png"
    assert plot.read_bytes()[:8] == PNG and "speedup_vs_batch_size.png" in (tmp_path / "res" / "report.md").read_text()
    again = invoke("bench", "--tasks", "gsm8k", "--methods", "jacobi:block_size=3", "--model", "tiny-random",
                   "--limit", "4", "--max-new-tokens", "8", "--num-fewshot", "0", "--batch-sizes", "1,2",
                   "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "res"),
                   "--bootstrap", "0")
    assert again.output.count("skipped") == 2  # each batch size's run is found again
