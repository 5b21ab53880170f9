"""CLI round trips on tiny-random into temp folders: records, summary, bad input, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import harness.engine.session
import harness.engine.models
import harness.orchestration.run
import methods
from harness.cli import main
from methods.ar import AR

ROW_KEYS = {"method", "task", "doc_id", "prompt_tokens", "new_tokens", "steps", "tokens_per_step", "wall_time_s",
            "tokens_per_s", "stop_reason", "output_sha1", "output", "error"}


def write_prompts(path: Path, n=4, extra=()):
    rows = [{"id": f"p{i}", "prompt": f"prompt number {i}: abc abc"} for i in range(n)] + list(extra)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def run_args(tmp_path, *extra, method="jacobi", prompts=None):
    prompts = prompts or write_prompts(tmp_path / "prompts.jsonl")
    return ["run", "--method", method, "--model", "tiny-random", "--prompts", str(prompts),
            "--max-new-tokens", "24", "--runs-dir", str(tmp_path / "runs"), *extra]


def only_run(tmp_path) -> Path:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def test_run_round_trip(tmp_path):
    result = invoke(*run_args(tmp_path, "-O", "block_size=4", "--seed", "3"))
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    assert f"run folder: {run_dir}" in result.output and "lossless" in result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["method"]["name"] == "jacobi" and info["method"]["options"]["block_size"] == 4
    assert info["config"]["seed"] == 3 and info["max_new_tokens"] == 24
    assert info["model"]["name"] == "tiny-random" and info["versions"]["torch"]
    assert info["config"]["engine"] == "eager" and info["engine"]["engine"] == "eager"  # the default engine
    assert info["hardware"]["cpu_isa"] in info["hardware"]["label"]  # same CPU name, other ISA: other hardware
    rows = rows_of(run_dir)
    assert len(rows) == 8 and {r["method"] for r in rows} == {"jacobi", "ar"}
    for r in rows:
        assert ROW_KEYS <= set(r) and r["error"] is None
        assert r["new_tokens"] == sum(r["step_tokens"]) <= 24
        assert len(r["step_drafted"]) == len(r["step_accepted"]) == r["steps"]
        assert sum(r["step_drafted"]) == r["drafted_tokens"] and sum(r["step_accepted"]) == r["accepted_tokens"]
    # alternating order: the method goes first on even requests, AR first on odd ones
    firsts = [r["method"] for r in rows if r["order"] == 0]
    assert firsts == ["jacobi", "ar", "jacobi", "ar"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "tiny-random" and summary["task"] == "prompts:prompts.jsonl"
    jac = summary["methods"]["jacobi"]
    assert jac["n"] == 4 and jac["lossless_rate"] == 1.0 and jac["speedup"] > 0 and jac["accuracy"] is None
    assert set(jac) >= {"n", "tokens_per_step", "tokens_per_s", "speedup", "speedup_geomean", "lossless_rate",
                        "length_ratio", "n_docs"}
    # lossless: the same tokens, so the ratio of throughputs is the ratio of times
    ar_rows, jac_rows = ([r for r in rows if r["method"] == m] for m in ("ar", "jacobi"))
    assert jac["length_ratio"] == 1.0 and jac["speedup"] == pytest.approx(
        sum(r["wall_time_s"] for r in ar_rows) / sum(r["wall_time_s"] for r in jac_rows))
    assert summary["speedup_definition"].startswith("(sum method new_tokens / sum method wall_time_s) / (sum ar")
    assert info["versions"]["lm_eval"] and info["git"]["dirty"] in (True, False) and info["method"]["models"] == []


def test_ar_alone_has_no_pairing(tmp_path):
    result = invoke(*run_args(tmp_path, method="ar"))
    assert result.exit_code == 0, result.output
    rows = rows_of(only_run(tmp_path))
    assert len(rows) == 4 and {r["method"] for r in rows} == {"ar"}


def test_humaneval_task(tmp_path):
    result = invoke("run", "--method", "jacobi", "--task", "humaneval", "--model", "tiny-random", "--limit", "2",
                    "--max-new-tokens", "8", "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    rows = rows_of(run_dir)
    assert [r["doc_id"] for r in rows if r["method"] == "ar"] == ["0", "1"]  # lm-eval's doc ids
    scores = [json.loads(x) for x in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert {(s["method"], s["doc_id"]) for s in scores} == {(m, d) for m in ("jacobi", "ar") for d in ("0", "1")}
    assert json.loads((run_dir / "summary.json").read_text())["methods"]["ar"]["metric"] == "pass@1,none"


@pytest.mark.parametrize("args,message", [
    (["--method", "jacobbi"], "unknown method 'jacobbi'; did you mean 'jacobi'?"),
    (["-O", "block_size=zero"], "expected a number"),
    (["-O", "blocksize=4"], "unknown option 'blocksize'"),
    (["-O", "block_size"], "options are written key=value"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--model", "tiny-randon"], "did you mean 'tiny-random'?"),
    (["--model", "/nonexistent/model.gguf"], "does not exist"),
    (["--task", "humaneval"], "either --task or --prompts"),
    (["--device", "tpu"], "unknown --device"),
    (["--dtype", "int3"], "unknown --dtype"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    base = run_args(tmp_path)
    if args[0] == "--method":
        base[base.index("--method") + 1] = args[1]
        args = []
    result = invoke(*base, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_unknown_task_and_missing_prompts(tmp_path):
    result = invoke("run", "--method", "ar", "--task", "gsm9k", "--model", "tiny-random")
    assert result.exit_code == 2 and "unknown task 'gsm9k'" in result.output
    result = invoke("run", "--method", "ar", "--prompts", str(tmp_path / "nope.jsonl"), "--model", "tiny-random")
    assert result.exit_code == 2 and "cannot read prompts file" in result.output


def test_malformed_prompts_file_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "ok"}\n{"id": 2, "text": "no prompt"}\n')
    result = invoke(*run_args(tmp_path, prompts=bad))
    assert result.exit_code == 2 and f"{bad}:2:" in result.output


def test_prompt_longer_than_the_context(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", n=1, extra=[{"id": "long", "prompt": "x" * 600}])
    result = invoke(*run_args(tmp_path, prompts=prompts))
    assert result.exit_code == 2
    assert "request long: the prompt has 600 tokens but the model's context is 512" in result.output
    assert not any((tmp_path / "runs").glob("*"))  # failed before any work: no run folder left


class Failing(AR):
    description = "fails on prompts that mention boom"

    def decode(self, input_ids, max_new_tokens):
        if (input_ids == 0).sum() == 0 and input_ids.shape[1] == 4:  # the 4-byte prompt "boom"
            raise ValueError("the decoder exploded")
        yield from super().decode(input_ids, max_new_tokens)


def test_an_exception_in_one_request_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(methods.BUILTINS, "failing", "tests.test_cli:Failing")
    prompts = write_prompts(tmp_path / "p.jsonl", n=2, extra=[{"id": "b", "prompt": "boom"}])
    result = invoke(*run_args(tmp_path, method="failing", prompts=prompts))
    assert result.exit_code == 0, result.output
    rows = rows_of(only_run(tmp_path))
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and failed[0]["doc_id"] == "b" and "exploded" in failed[0]["error"]
    assert failed[0]["wall_time_s"] is None  # an error row carries no timings
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["methods"]["failing"]["n"] == 2 and summary["methods"]["failing"]["n_errors"] == 1


def test_interrupted_run_resumes_without_redoing_or_losing_samples(tmp_path, monkeypatch):
    real = harness.engine.session.run_one
    calls = {"n": 0}

    def interrupt_on_fifth(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(harness.engine.session, "run_one", interrupt_on_fifth)
    result = invoke(*run_args(tmp_path))
    assert result.exit_code == 130 and "--resume" in result.output
    run_dir = only_run(tmp_path)
    before = rows_of(run_dir)
    assert len(before) == 4
    with open(run_dir / "samples.jsonl", "a") as f:  # a row torn by a crash mid-write
        f.write('{"method": "ar", "doc_id": "p2", "new_tok')

    monkeypatch.setattr(harness.engine.session, "run_one", real)
    result = invoke("run", "--resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "4 of 4" not in result.output and "resuming" in result.output
    after = rows_of(run_dir)
    assert after[:4] == before  # finished rows kept as they were
    assert len(after) == 8 and len({(r["method"], r["doc_id"]) for r in after}) == 8
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["methods"]["jacobi"]["n"] == 4

    result = invoke("run", "--resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0 and len(rows_of(run_dir)) == 8  # nothing left to do, nothing redone


def test_resume_refuses_different_settings_and_unknown_runs(tmp_path):
    assert invoke(*run_args(tmp_path)).exit_code == 0
    run_dir = only_run(tmp_path)
    result = invoke("run", "--resume", run_dir.name, "--max-new-tokens", "99", "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "--max-new-tokens 24" in result.output
    result = invoke("run", "--resume", "no-such-run", "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "no run 'no-such-run'" in result.output


def test_methods_and_tasks_listings():
    result = invoke("methods")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "builtin" in lines["jacobi"] and "builtin" in lines["ar"]
    assert "lookahead" in lines and "speculative" in lines
    result = invoke("tasks")
    assert result.exit_code == 0 and "humaneval" in result.output
    result = invoke("drafters")
    names = [line.split()[0] for line in result.output.splitlines()]
    assert result.exit_code == 0 and names == ["layerskip", "ngram", "MODEL"]


def test_speculative_options_errors_are_one_line(tmp_path):
    result = invoke(*run_args(tmp_path, "-O", "draft=layerskip:9", method="speculative"))
    assert result.exit_code == 2 and "layerskip:L needs 1 <= L < 2" in result.output
    assert len(result.output.strip().splitlines()) == 1


SAMPLED = ("method", "doc_id", "turn", "order", "seed", "output_sha1", "output", "new_tokens", "step_tokens",
           "step_accepted", "error")


def sampled(run_dir) -> list[dict]:
    """What a resumed run must reproduce, row for row: everything but the timings."""
    return [{k: r[k] for k in SAMPLED} for r in rows_of(run_dir)]


def interrupted_copy(run_dir: Path, name: str, k: int) -> Path:
    """The run folder an interruption after k samples rows leaves: run.json and the first k rows."""
    cut = run_dir.parent / name
    cut.mkdir()
    (cut / "run.json").write_bytes((run_dir / "run.json").read_bytes())
    (cut / "samples.jsonl").write_text("".join(line + "\n" for line in (run_dir / "samples.jsonl").read_text().splitlines()[:k]))
    return cut


def test_a_resumed_sampled_run_equals_an_uninterrupted_one(tmp_path):
    # six copies of one prompt: at temperature 1 only the seed tells their outputs apart
    prompts = tmp_path / "same.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": "abc abc abc"}) + "\n" for i in range(6)))
    args = run_args(tmp_path, "-O", "temperature=1", "-O", "draft=ngram", "--seed", "5", method="speculative",
                    prompts=prompts)
    assert invoke(*args).exit_code == 0
    whole = only_run(tmp_path)
    expected = sampled(whole)
    assert len(expected) == 12 and [r["seed"] for r in expected[::2]] == [5, 6, 7, 8, 9, 10]
    assert len({r["output"] for r in expected if r["method"] == "speculative"}) > 1  # the seed matters
    for k in (3, 8):  # mid-pair (the second request ran AR first), and after four whole pairs
        cut = interrupted_copy(whole, f"cut{k}", k)
        result = invoke("run", "--resume", cut.name, "--runs-dir", str(tmp_path / "runs"))
        assert result.exit_code == 0 and "resuming" in result.output, result.output
        assert sampled(cut) == expected, k


def test_resume_of_a_damaged_run_json_is_one_line(tmp_path):
    assert invoke(*run_args(tmp_path)).exit_code == 0
    run_dir = only_run(tmp_path)
    manifest = json.loads((run_dir / "run.json").read_text())
    for bad, message in (("[1, 2]", "holds a JSON list, not an object"), ('{"config": 5}', '"config" is 5, not an object'),
                         (json.dumps({**manifest, "config": {**manifest["config"], "limit": "abc"}}),
                          "limit must be int or None, not 'abc'"),
                         (json.dumps({**manifest, "config": {}}), "missing 1 required positional argument: 'method'")):
        (run_dir / "run.json").write_text(bad)
        result = invoke("run", "--resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"))
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.startswith(f"error: {run_dir / 'run.json'}") and len(result.output.strip().splitlines()) == 1


def test_resume_skips_malformed_rows_and_redoes_them(tmp_path):
    assert invoke(*run_args(tmp_path)).exit_code == 0
    run_dir = only_run(tmp_path)
    rows = rows_of(run_dir)
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows[:5], {**rows[5], "doc_id": {"a": 1}}]))
    result = invoke("run", "--resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    after = rows_of(run_dir)
    assert after[:5] == rows[:5] and len(after) == 8 and len({(r["method"], r["doc_id"]) for r in after}) == 8


@pytest.mark.parametrize("args,message", [
    (["--seed", str(2**70)], "--seed must be between 0 and 2**63 - 1"),
    (["--seed", "-1"], "--seed must be between 0 and 2**63 - 1"),
])
def test_bad_seed_is_one_line(tmp_path, args, message):
    result = invoke(*run_args(tmp_path, *args))
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_output_dir_below_a_file_is_one_line_before_the_model_loads(tmp_path, monkeypatch):
    (tmp_path / "somefile").write_text("x")
    monkeypatch.setattr(harness.orchestration.run, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    args = run_args(tmp_path)
    args[args.index("--runs-dir") + 1] = str(tmp_path / "somefile" / "sub")
    result = invoke(*args)
    assert result.exit_code == 2 and f"{tmp_path / 'somefile'} is a file" in result.output, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


def test_an_unreachable_hub_id_fails_at_once_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network in tests: the offline path, as with no route to the hub
    result = invoke(*run_args(tmp_path, "--model", "nobody/does-not-exist-xyz"))
    assert result.exit_code == 2 and "not in the local Hugging Face cache and the hub is unreachable" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_cllm_out_below_a_file_is_one_line_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(harness.engine.models, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    (tmp_path / "somefile").write_text("x")
    below = tmp_path / "somefile" / "sub"
    for args in (["collect", "--model", "tiny-random", "--out", str(below / "t.jsonl")],
                 ["train", "--data", str(tmp_path / "t.jsonl"), "--out", str(below)]):
        result = invoke("cllm", *args)
        assert result.exit_code == 2 and f"{tmp_path / 'somefile'} is a file" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
