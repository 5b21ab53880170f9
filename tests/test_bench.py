"""`harness bench`: the METHOD:k=v,... and --limit syntax, the reproducing command, and a sweep end to end on
tiny-random with a hand-built GSM8K data directory: interrupted, resumed with one model load, the report,
finished runs skipped."""
from __future__ import annotations

import shlex

import pandas as pd
import pytest
from click.testing import CliRunner

import harness.engine.session
import harness.orchestration.bench
import harness.engine.models
import harness.orchestration.run
from harness import HarnessError
from harness.orchestration.bench import BenchConfig, parse_limits, parse_methods
from harness.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_method_specs():
    assert parse_methods(["jacobi,lookahead,speculative:draft=layerskip:4,k=3", "cllm:checkpoint=ck", "jacobi"]) == (
        ("jacobi", ()), ("lookahead", ()), ("speculative", (("draft", "layerskip:4"), ("k", "3"))),
        ("cllm", (("checkpoint", "ck"),)))
    assert parse_methods(["speculative:draft=ngram", "speculative:draft=ngram,k=2"]) == (
        ("speculative", (("draft", "ngram"),)), ("speculative", (("draft", "ngram"), ("k", "2"))))
    for bad, message in (("k=3,jacobi", "comes before any method"), ("speculative:ngram", "METHOD:key=value"),
                         (",", "no methods")):
        with pytest.raises(HarnessError, match=message):
            parse_methods([bad])


def test_limits():
    assert parse_limits(["20", "gsm8k=5"], ("gsm8k", "humaneval")) == (20, {"gsm8k": 5})
    assert parse_limits(["gsm8k=5,humaneval=2"], ("gsm8k", "humaneval")) == (None, {"gsm8k": 5, "humaneval": 2})
    for bad, message in (("spider=3", "is not one of --tasks"), ("0", "at least 1"), ("gsm8k=x", "expected N or TASK=N")):
        with pytest.raises(HarnessError, match=message):
            parse_limits([bad], ("gsm8k", "humaneval"))


def test_run_configs_and_the_reproducing_command(monkeypatch):
    cfg = BenchConfig(tasks=("gsm8k", "mt_bench"), methods=parse_methods(["jacobi,speculative:draft=ngram,k=3"]),
                      model="tiny-random", limit=4, limits=(("mt_bench", 2),), max_new_tokens=16, data_dir="d",
                      judge_url="http://j/v1", judge_model="j", chat_template=False)
    runs = cfg.run_configs()
    assert [(r.task, r.method, r.limit) for r in runs] == [
        ("gsm8k", "jacobi", 4), ("gsm8k", "speculative", 4), ("mt_bench", "jacobi", 2), ("mt_bench", "speculative", 2)]
    assert runs[1].options == {"draft": "ngram", "k": "3"} and runs[0].judge_url is None and runs[2].judge_url == "http://j/v1"
    assert all(r.model == "tiny-random" and r.max_new_tokens == 16 and not r.chat_template for r in runs)
    seen = []
    monkeypatch.setattr(harness.orchestration.bench, "bench", lambda c, **_: seen.append(c) or (None, None))
    CliRunner().invoke(main, shlex.split(cfg.command())[1:])  # the command parses back to the same sweep
    assert seen == [cfg]


@pytest.fixture
def data_dir(tmp_path, write_gsm8k):
    return write_gsm8k(tmp_path / "data", [{"question": f"Tom has {i} apples and buys 4 more. How many?",
                                            "answer": f"{i} + 4 = {i + 4}\n#### {i + 4}"} for i in range(3)])


@pytest.fixture
def loads(monkeypatch):
    """Counts model loads."""
    calls = []
    real = harness.engine.models.load_model
    monkeypatch.setattr(harness.engine.models, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def bench_args(tmp_path, data_dir, *extra):
    return ["bench", "--tasks", "gsm8k", "--methods", "jacobi:block_size=4,speculative:draft=ngram,k=3",
            "--model", "tiny-random", "--limit", "2", "--max-new-tokens", "8", "--num-fewshot", "0",
            "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "res"),
            "--bootstrap", "200", *extra]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_bench_interrupted_then_resumed_then_skipped(tmp_path, data_dir, loads, monkeypatch):
    real, calls = harness.engine.session.run_one, []

    def interrupt_on_third(*a, **k):  # the jacobi run's second request, after its first pair
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(harness.engine.session, "run_one", interrupt_on_third)
    result = invoke(*bench_args(tmp_path, data_dir))
    assert result.exit_code == 130 and "rerun the same command" in result.output
    (jacobi,) = (tmp_path / "runs").iterdir()
    before = (jacobi / "samples.jsonl").read_text().splitlines()
    assert len(before) == 2 and not (jacobi / "summary.json").exists()

    monkeypatch.setattr(harness.engine.session, "run_one", real)
    result = invoke(*bench_args(tmp_path, data_dir))
    assert result.exit_code == 0, result.output
    assert f"[1/2] gsm8k × jacobi:block_size=4: resuming {jacobi.name}" in result.output
    assert "[2/2] gsm8k × speculative:draft=ngram,k=3: running" in result.output
    assert len(loads) == 2  # one model load per bench process, for all its runs
    after = (jacobi / "samples.jsonl").read_text().splitlines()
    assert after[:2] == before and len(after) == 4  # finished rows kept, only the missing ones run
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").exists() for r in runs)

    board = pd.read_csv(tmp_path / "res" / "leaderboard.csv")
    assert list(board["method"]) == ["ar", "jacobi", "speculative"]
    assert list(board["n"]) == [4, 2, 2] and board["speedup"].notna().all() and board["accuracy"].notna().all()
    assert board["speedup_lo"].isna().all() and board["n_docs"].tolist() == [2, 2, 2]  # too few documents to resample
    assert board["interval_note"].iloc[1:].str.contains("fewer than 10").all()
    assert set(board["metric"]) == {"exact_match,flexible-extract"} and set(board["model"]) == {"tiny-random"}
    assert list(board["lossless_rate"]) == [1.0, 1.0, 1.0]
    assert board.loc[1, "options"] == "block_size=4,init=prompt,seed=0"
    plots = sorted((tmp_path / "res" / "plots").iterdir())
    assert len(plots) == 6 and all(p.read_bytes()[:8] == PNG for p in plots)
    report = (tmp_path / "res" / "report.md").read_text()
    assert "harness bench --tasks gsm8k --methods jacobi:block_size=4,speculative:draft=ngram,k=3" in report

    # the same command again: nothing to do, no model load
    result = invoke(*bench_args(tmp_path, data_dir))
    assert result.exit_code == 0, result.output
    assert result.output.count("finished earlier") == 2 and len(loads) == 2
    assert sorted((tmp_path / "runs").iterdir()) == runs

    # a changed setting is a new run, not a resumed one
    result = invoke(*bench_args(tmp_path, data_dir, "--methods", "lookahead"))
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "runs").iterdir())) == 3 and len(loads) == 3


@pytest.mark.parametrize("change,message", [
    (("--methods", "jacobbi"), "did you mean 'jacobi'?"),
    (("--methods", "jacobi:blocksize=4"), "unknown option 'blocksize'"),
    (("--tasks", "gsm8k,humanevl"), "unknown task 'humanevl'"),
    (("--limit", "humaneval=3"), "is not one of --tasks"),
    (("--data-dir", "/nonexistent/data"), "/nonexistent/data"),
    (("--num-fewshot", "-1"), "--num-fewshot must be 0 or more"),
    (("--seed", "-1"), "--seed must be between 0 and 2**63 - 1"),
])
def test_bad_input_is_one_line_before_any_model_load(tmp_path, data_dir, monkeypatch, change, message):
    monkeypatch.setattr(harness.engine.models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    args = bench_args(tmp_path, data_dir)
    flag, value = change
    if flag in ("--methods", "--tasks", "--data-dir"):
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", ["--out", "--runs-dir"])
def test_a_folder_below_a_file_is_one_line_before_any_model_load(tmp_path, data_dir, monkeypatch, flag):
    monkeypatch.setattr(harness.engine.models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "somefile").write_text("x")
    args = bench_args(tmp_path, data_dir)
    args[args.index(flag) + 1] = str(tmp_path / "somefile" / "sub")
    result = invoke(*args)
    assert result.exit_code == 2 and f"{flag} {tmp_path / 'somefile' / 'sub'}: {tmp_path / 'somefile'} is a file" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_finished_run_is_not_reused_once_its_model_files_changed(tmp_path, data_dir, monkeypatch):
    """Same settings, other weights (a model or checkpoint retrained under the same name): run anew, say why."""
    from harness.engine.models import tiny_random

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))

    def save(seed):
        model, tok = tiny_random(seed=seed)
        model.save_pretrained(tmp_path / "m")
        tok.save_pretrained(tmp_path / "m")

    save(1)
    args = [a.replace("tiny-random", str(tmp_path / "m")) for a in bench_args(tmp_path, data_dir)]
    assert invoke(*args).exit_code == 0
    result = invoke(*args)
    assert result.output.count("finished earlier") == 2, result.output
    save(2)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "finished earlier" not in result.output
    assert result.output.count(f"but {tmp_path / 'm'} has changed since it ran; not reused") == 2
    assert len(list((tmp_path / "runs").iterdir())) == 4
