"""One CLI grammar (issue #39): -h and --version, did-you-mean, repeated keys refused, METHOD:k=v in run, the old
option names still working with a note, --dry-run planning without a model, and default outputs that leave the
committed results alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import harness.engine.models
import harness.orchestration.run
from harness import LOCAL_DIR, RUNS_DIR
from harness.cli import main
from harness.evaluation.names import TASK_NAMES
from harness.evaluation.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def prompts(tmp_path, n=3) -> str:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"abc abc {i}"}) + "\n" for i in range(n)))
    return str(path)


def no_model(monkeypatch):
    fail = lambda *a, **k: pytest.fail("the model was loaded")  # noqa: E731
    monkeypatch.setattr(harness.orchestration.run, "load_model", fail)
    monkeypatch.setattr(harness.engine.models, "load_model", fail)


def one_error_line(result, message):
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [[], ["run"], ["bench"], ["report"], ["compare"], ["profile"], ["tune"], ["methods"],
                                     ["drafters"], ["tasks"], ["cllm"], ["cllm", "collect"], ["cllm", "train"],
                                     ["cllm", "measure"], ["cllm", "study"]])
def test_dash_h_is_help_with_an_example(command):
    short, long = invoke(*command, "-h"), invoke(*command, "--help")
    assert short.exit_code == 0 and short.output == long.output
    assert "Usage:" in short.output and "Example:" in short.output and "harness " in short.output.split("Example:")[1]


def test_version_is_the_package_version():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"harness {version('parallel-decoding-harness')}"


@pytest.mark.parametrize("args,message", [
    (["run", "--method", "jacobbi", "--task", "gsm8k"], "unknown method 'jacobbi'; did you mean 'jacobi'?"),
    (["run", "--method", "jacobi:block_size=3", "--task", "gsm9k"], "unknown task 'gsm9k'; did you mean 'gsm8k'?"),
    (["bench", "--tasks", "gsm8k", "--methods", "jacobi,lokahead"], "unknown method 'lokahead'; did you mean 'lookahead'?"),
    (["bench", "--tasks", "gsm8k,humanevl", "--methods", "jacobi"], "unknown task 'humanevl'; did you mean 'humaneval'?"),
    (["run", "--method", "jacobi", "-O", "blocksize=4"], "option 'blocksize' for this method; did you mean 'block_size'?"),
    (["run", "--method", "speculative", "-O", "draft=ngarm"], "unknown drafter 'ngarm'; did you mean 'ngram'?"),
    (["run", "--method", "speculative:draft=layerskp:4"], "unknown drafter 'layerskp'; did you mean 'layerskip'?"),
    (["run", "--method", "jacobi", "-O", "block_size=3", "-O", "block_size=4"], "option 'block_size' is given twice"),
    (["run", "--method", "jacobi:block_size=3", "-O", "block_size=4"], "option 'block_size' is given twice"),
    (["bench", "--tasks", "gsm8k", "--methods", "speculative:k=3,k=4"], "option 'k' is given twice"),
    (["run", "--method", "jacobi,lookahead"], "one method per run"),
])
def test_mistakes_get_one_line_with_a_suggestion_before_any_model(tmp_path, monkeypatch, args, message):
    no_model(monkeypatch)
    if args[0] == "run" and "--task" not in args:
        args = [*args, "--model", "tiny-random", "--prompts", prompts(tmp_path)]
    one_error_line(invoke(*args, "--runs-dir", str(tmp_path / "runs")), message)
    assert not (tmp_path / "runs").exists()


def test_a_mistyped_method_is_answered_without_importing_torch():
    code = ("import sys\nfrom harness.cli import main\n"
            "try:\n    main(['run', '--method', 'jacobbi', '--task', 'gsm8k'])\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "did you mean 'jacobi'" in out.stderr and out.stdout.strip() == "exit 2 False", (out.stdout, out.stderr)


def test_the_task_names_are_the_tasks():
    assert tuple(TASKS) == TASK_NAMES


def test_method_spec_in_run_equals_dash_o(tmp_path):
    base = ["--model", "tiny-random", "--prompts", prompts(tmp_path), "--max-new-tokens", "8"]
    for name, method in (("a", ["--method", "jacobi:block_size=3,init=repeat"]),
                         ("b", ["--method", "jacobi", "-O", "block_size=3", "-O", "init=repeat"]),
                         ("c", ["--method", "jacobi:block_size=3", "-O", "init=repeat"])):
        result = invoke("run", *method, *base, "--runs-dir", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        (run_dir,) = (tmp_path / name).iterdir()
        info = json.loads((run_dir / "run.json").read_text())
        assert info["config"]["method"] == "jacobi" and info["config"]["options"] == {"block_size": "3", "init": "repeat"}
        assert info["method"]["options"]["block_size"] == 3


def test_old_option_names_still_work_with_a_note(tmp_path):
    result = invoke("run", "--method", "ar", "--model", "tiny-random", "--prompts", prompts(tmp_path, 1),
                    "--max-new-tokens", "4", "--output-dir", str(tmp_path / "old"))
    assert result.exit_code == 0, result.output
    assert "note: --output-dir is deprecated; use --runs-dir" in result.output and len(list((tmp_path / "old").iterdir())) == 1
    (run_id,) = [p.name for p in (tmp_path / "old").iterdir()]
    result = invoke("compare", run_id, run_id, "--output-dir", str(tmp_path / "old"))
    assert result.exit_code == 0 and "note: --output-dir is deprecated; use --runs-dir" in result.output, result.output
    result = invoke("compare", "a", "b", "--output-dir", "x", "--runs-dir", "y")
    assert result.exit_code == 2 and result.output.splitlines()[-1] == "error: give --runs-dir or --output-dir, not both"


def test_cllm_study_old_names_reach_the_new_options(monkeypatch, tmp_path):
    import harness.cllm.study

    seen = []

    def study(cfg, **_):
        seen.append(cfg)
        raise harness.HarnessError("stopped here")

    monkeypatch.setattr(harness.cllm.study, "study", study)
    result = invoke("cllm", "study", "--checkpoint", "ck", "--base", "tiny-random", "--out-dir", str(tmp_path / "s"))
    assert "note: --out-dir is deprecated; use --out" in result.output
    assert "note: --base is deprecated; use --model" in result.output and "error: stopped here" in result.output
    assert seen[0].base == "tiny-random" and seen[0].out_dir == str(tmp_path / "s")
    one_error_line(invoke("cllm", "study", "--checkpoint", "ck"), "no --out")


def write_profile(folder: Path, label: str, model="tiny-random", t1=0.01):
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{label.lower().replace(' ', '-')}--{model}"
    rows = "".join(f"{e},{w},{1000 * t1 * (1 + w / 8):.4f},0,0,{1 + w / 8:.4f},1\n"
                   for e in ("eager", "compiled") for w in (1, 2, 4, 8, 16, 32))
    stem.with_suffix(".csv").write_text("engine,width,ms_median,ms_p10,ms_p90,break_even_tokens_per_step,"
                                        "vs_first_engine_w1\n" + rows)
    stem.with_suffix(".json").write_text(json.dumps({"hardware": {"label": label}, "model": model}))
    return stem.with_suffix(".csv")


def this_label() -> str:
    from harness.engine.models import resolve_device
    from harness.engine.provenance import hardware

    return hardware(resolve_device("auto"))["label"]


def test_dry_run_prints_the_plan_and_an_estimate_without_a_model(tmp_path, monkeypatch):
    no_model(monkeypatch)
    monkeypatch.chdir(tmp_path)  # the profile is looked up in results/local/profile and results/profile here
    write_profile(tmp_path / "results" / "profile", "Some Other CPU", t1=5.0)  # another machine's: never used
    args = ["bench", "--tasks", "gsm8k,mt_bench", "--methods", "jacobi:block_size=3,speculative:draft=layerskip:1",
            "--model", "tiny-random", "--limit", "4", "--max-new-tokens", "10", "--runs-dir", str(tmp_path / "runs"),
            "--dry-run"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(" new " in f" {line} " for line in lines) == 4  # 2 tasks x 2 methods, none run yet
    assert "no forward-cost profile of this model on this hardware" in result.output
    write_profile(tmp_path / LOCAL_DIR / "profile", this_label())
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    # jacobi block 3 on gsm8k: 4 requests x 10 tokens x (t(1) + t(4) / 1 token per step) = 40 x (11.25 + 15) ms ~ 1 s
    (jacobi,) = [line for line in result.output.splitlines() if "gsm8k" in line and "jacobi" in line]
    assert jacobi.split()[4:8] == ["4", "10", "1.00", "(assumed)"] and " 4 " in jacobi
    (mt,) = [line for line in result.output.splitlines() if "mt_bench" in line and "jacobi" in line]
    assert mt.split()[4] == "8"  # two turns per question
    assert "the drafter's own forwards are not costed" in result.output
    assert f"estimate on {this_label()} from {Path(LOCAL_DIR) / 'profile'}" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / LOCAL_DIR / "leaderboard.csv").exists()


def test_run_dry_run_reads_pilot_tokens_per_step_from_a_tuning_file(tmp_path, monkeypatch):
    from harness.engine.session import RunConfig
    from harness.orchestration.plan import plan

    tuning = tmp_path / "tuning.json"
    tuning.write_text(json.dumps({"candidates": [{"method": "jacobi", "options": "block_size=3", "tokens_per_step": 2.5}]}))
    monkeypatch.chdir(tmp_path)
    write_profile(tmp_path / LOCAL_DIR / "profile", "CPU X")
    rc = RunConfig(method="jacobi", options={"block_size": "3"}, model="tiny-random", prompts=prompts(tmp_path, 5),
                   max_new_tokens=10)
    (p,), profile = plan([rc], "CPU X", str(tuning))
    assert p.tokens_per_step == 2.5 and p.width == 4 and p.requests == 5 and profile.endswith(".csv")
    assert p.decode_s == pytest.approx(5 * 10 * (0.01 * 1.125 + 0.01 * 1.5 / 2.5))
    (p,), _ = plan([rc], "CPU Y", str(tuning))
    assert p.decode_s is None  # no profile of this hardware: no estimate


def test_the_profile_is_chosen_by_hardware_label_never_by_age(tmp_path):
    from harness.orchestration.tune import choose_profile

    ours = write_profile(tmp_path / "p", "CPU A")
    newer = write_profile(tmp_path / "p", "CPU B")
    os.utime(ours, (1, 1))  # ours is the oldest file
    assert Path(choose_profile(str(tmp_path / "p"), "CPU A", "tiny-random")) == ours != newer
    with pytest.raises(harness.HarnessError, match="no profile of tiny-random on this hardware"):
        choose_profile(str(tmp_path / "p"), "CPU C", "tiny-random")
    notes = []
    assert choose_profile(str(newer), "CPU A", "tiny-random", echo=notes.append) == str(newer)
    assert notes == [f"warning: --profile {newer} was measured on CPU B, not on this hardware (CPU A)"]


def test_default_outputs_are_ignored_by_git():
    for path in (RUNS_DIR + "/x", LOCAL_DIR + "/leaderboard.csv", LOCAL_DIR + "/profile/x.csv", LOCAL_DIR + "/tuning.json"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path
    for path in ("results/leaderboard.csv", "results/profile/x.csv", "results/tuning.json", "results/headline.md"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 1, path


def test_a_run_then_report_with_defaults_changes_no_committed_file(tmp_path):
    """`make demo` then `harness report` in a copy of the checkout (as a fresh clone): git status stays clean."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True)
    if files.returncode:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    for name in filter(None, files.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_bytes((ROOT / name).read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=clone, check=True)
    subprocess.run([*git, "add", "-A"], cwd=clone, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=clone, check=True)
    env = {**os.environ, "PYTHONPATH": str(clone)}
    harness_cli = [sys.executable, "-m", "harness.cli"]
    subprocess.run([*harness_cli, "run", "--method", "jacobi", "--model", "tiny-random", "--prompts", prompts(tmp_path),
                    "--max-new-tokens", "8"], cwd=clone, env=env, check=True, capture_output=True)
    report = subprocess.run([*harness_cli, "report", "--no-plots", "--bootstrap", "0"], cwd=clone, env=env,
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert (clone / LOCAL_DIR / "leaderboard.csv").exists() and any((clone / RUNS_DIR).iterdir())
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert status == "", status
