"""Data parallelism: `harness run` and `harness cllm train` launched as two CPU processes (gloo) by
`accelerate launch`, checked against one process; a rank killed mid-run and resumed; the merge of part
files; the lm-eval scoring of a sharded run (in-process); big-model loading with --device-map.

The launches use `--multi_gpu`: on a machine without CUDA it starts N CPU processes (torchrun), whereas
`accelerate launch --cpu` starts one process whatever --num_processes says (accelerate 1.x).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from click.testing import CliRunner

from harness.analysis.summary import INTERVALS
from harness.cli import main
from harness.engine.models import load_model, tiny_random
from harness.engine.parallel import Process
from harness.engine.records import merge_parts, part_path, read_samples
from harness.engine.session import RunConfig, Session
from harness.evaluation.tasks import get_task
from harness.orchestration.run import run

ROOT = Path(__file__).resolve().parent.parent
TIMED = {"tokens_per_s", "wall_time_s", "speedup", "speedup_geomean", "speedup_per_answer", "speedup_clean", "turns",
         *INTERVALS}  # what differs between two runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "harness.cli", *args]


ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}  # CPU processes, this checkout's code


def launch(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(launch_cmd(*args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def write_prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}: abc abc"}) + "\n" for i in range(n)))
    return path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def kill_rank(launcher: subprocess.Popen, rank: int, part: Path, deadline_s: float = 240) -> int:
    """Once `rank` has written its first row, stop it at once (SIGSTOP), count its rows, then SIGKILL it."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and launcher.poll() is None:
        if part.exists() and part.read_text().count("\n") >= 1:
            for child in psutil.Process(launcher.pid).children(recursive=True):
                try:
                    if child.environ().get("RANK") == str(rank) and "harness.cli" in " ".join(child.cmdline()):
                        child.send_signal(signal.SIGSTOP)
                        written = part.read_text().count("\n")
                        child.kill()
                        return written
                except psutil.NoSuchProcess:
                    continue
        time.sleep(0.002)
    raise AssertionError(f"rank {rank} wrote no row in time, or the launch ended: {launcher.poll()}")


def test_two_processes_killed_and_resumed_hold_every_request_once_and_summarize_as_one(tmp_path):
    prompts, runs = write_prompts(tmp_path / "p.jsonl", 8), tmp_path / "runs"
    args = ["run", "--method", "jacobi", "--model", "tiny-random", "--prompts", str(prompts), "--max-new-tokens", "16",
            "--runs-dir", str(runs)]
    # 1. Two processes; rank 1 killed after its first row (the launcher then ends rank 0 too).
    launcher = subprocess.Popen(launch_cmd(*args), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    try:
        (run_dir,) = _wait_for(lambda: list(runs.iterdir()) if runs.exists() else [])
        written = kill_rank(launcher, 1, part_path(run_dir, 1))
        out = launcher.communicate(timeout=120)[0]
    finally:
        launcher.kill()
    assert launcher.returncode != 0 and 1 <= written < 8, out  # rank 1 owns p1, p3, p5, p7: 8 rows
    assert not (run_dir / "samples.jsonl").exists()  # nothing merged: the ranks never all finished
    before = {(r["method"], r["doc_id"]): r for p in (0, 1) for r in read_samples(part_path(run_dir, p))}
    assert len(before) < 16

    # 2. Resumed by two processes: what was written stays, the rest is run, rank 0 merges.
    result = launch("run", "--resume", run_dir.name, "--runs-dir", str(runs))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json", "samples.jsonl", "summary.json"]
    rows = rows_of(run_dir / "samples.jsonl")
    keys = [(r["method"], r["doc_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == 16  # every request of both methods exactly once
    assert all(r == before[(r["method"], r["doc_id"])] for r in rows if (r["method"], r["doc_id"]) in before)
    assert all(r["rank"] == int(r["doc_id"][1:]) % 2 and r["error"] is None for r in rows)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["shared_device"] is True and info["hardware"]["torch_threads"] >= 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "not comparable with a single-process run" in summary["warnings"][0]
    assert "not comparable with a single-process run" in result.stdout

    # 3. One process on the same prompts: the same rows in the same order, the same summary but for timings.
    invoke(*args[:-1], str(tmp_path / "single"))
    (single_dir,) = (tmp_path / "single").iterdir()
    single = rows_of(single_dir / "samples.jsonl")
    strip = lambda r: {k: v for k, v in r.items() if k not in ("wall_time_s", "tokens_per_s", "ttft_s", "rank")}  # noqa: E731
    assert [strip(r) for r in rows] == [strip(r) for r in single]
    single_summary = json.loads((single_dir / "summary.json").read_text())
    assert "warnings" not in single_summary and "world_size" not in json.loads((single_dir / "run.json").read_text())
    for method, stats in single_summary["methods"].items():
        assert {k: v for k, v in summary["methods"][method].items() if k not in TIMED} == \
               {k: v for k, v in stats.items() if k not in TIMED}


def _wait_for(found, deadline_s: float = 240):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if value := found():
            return value
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_merge_keeps_each_request_once_in_request_order(tmp_path):
    row = lambda m, i, **kw: {"method": m, "doc_id": f"p{i}", "seed": i, "order": int(m == "ar"), "new_tokens": 1,  # noqa: E731
                              "steps": 1, "wall_time_s": 0.1, "error": None, **kw}
    (tmp_path / "samples.jsonl").write_text(json.dumps(row("jacobi", 2, note="kept")) + "\n")
    part_path(tmp_path, 0).write_text("".join(json.dumps(row(m, i, rank=0)) + "\n" for i in (0, 2) for m in ("jacobi", "ar")))
    part_path(tmp_path, 1).write_text(json.dumps(row("ar", 1, rank=1)) + "\n" + '{"method": "jacobi", "doc_')  # torn
    assert merge_parts(tmp_path) == 4
    rows = rows_of(tmp_path / "samples.jsonl")
    assert [(r["method"], r["doc_id"]) for r in rows] == [("jacobi", "p0"), ("ar", "p0"), ("ar", "p1"),
                                                          ("jacobi", "p2"), ("ar", "p2")]
    assert rows[3]["note"] == "kept" and not list(tmp_path.glob("samples.rank*"))
    assert merge_parts(tmp_path) == 0 and len(rows_of(tmp_path / "samples.jsonl")) == 5  # no parts: untouched


def test_sharded_lm_eval_run_scores_the_merged_outputs_as_one_process(tmp_path, write_gsm8k):
    """Two ranks' shares of a gsm8k run (sequentially, in this process), merged and scored once by rank 0,
    give the scores and summary that one process gives."""
    data = write_gsm8k(tmp_path / "data", [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(3)])
    cfg = RunConfig(method="jacobi", task="gsm8k", model="tiny-random", data_dir=str(data), max_new_tokens=6,
                    num_fewshot=0, output_dir=str(tmp_path / "runs"))
    single = run(cfg, echo=lambda *a: None)
    lm = load_model("tiny-random")
    task = get_task("gsm8k")
    task.load(cfg)
    shared = tmp_path / "shared"
    shared.mkdir()
    sessions = [Session(cfg, lm, proc=Process(rank=r, world_size=2)) for r in (1, 0)]
    for s in sessions:
        s.open(shared)
        task.execute(s, shared)
        s.close()
    assert not (shared / "scores.jsonl").exists()  # a rank only generates
    assert merge_parts(shared) == 6
    task.score(sessions[1], shared)
    scores = lambda d: sorted(map(json.dumps, rows_of(d / "scores.jsonl")))  # noqa: E731
    assert scores(shared) == scores(single) and len(scores(shared)) == 6
    strip = lambda r: {k: v for k, v in r.items() if k not in ("wall_time_s", "tokens_per_s", "ttft_s", "rank")}  # noqa: E731
    assert [strip(r) for r in rows_of(shared / "samples.jsonl")] == [strip(r) for r in rows_of(single / "samples.jsonl")]


def test_a_single_process_resumes_a_data_parallel_run(tmp_path):
    """Rank 1's part file cut short (a torn line): plain `harness run --resume` finishes and merges it."""
    prompts = write_prompts(tmp_path / "p.jsonl", 4)
    args = ["run", "--method", "jacobi", "--model", "tiny-random", "--prompts", str(prompts), "--max-new-tokens", "8",
            "--runs-dir", str(tmp_path / "runs")]
    invoke(*args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = rows_of(run_dir / "samples.jsonl")
    (run_dir / "samples.jsonl").unlink()
    for rank in (0, 1):  # what two ranks would have left: rank 0 done, rank 1 killed after one row
        mine = [{**r, "rank": rank} for r in rows if int(r["doc_id"][1:]) % 2 == rank]
        part_path(run_dir, rank).write_text("".join(json.dumps(r) + "\n" for r in (mine if rank == 0 else mine[:1]))
                                            + ('{"method": "ar", "doc' if rank else ""))
    kept = read_samples(part_path(run_dir, 0)) + read_samples(part_path(run_dir, 1))
    result = invoke("run", "--resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"))
    assert "5 rows already recorded" in result.output
    after = rows_of(run_dir / "samples.jsonl")
    assert len({(r["method"], r["doc_id"]) for r in after}) == len(after) == 8
    assert all(r in after for r in kept) and not list(run_dir.glob("samples.rank*"))


def test_device_map_is_refused_in_a_data_parallel_launch():
    with pytest.raises(Exception, match="does not combine with a data-parallel launch"):
        Process(rank=0, world_size=2).check_device_map("auto")


def test_device_map_auto_loads_a_model_directory_and_is_recorded(tmp_path):
    model, tok = tiny_random(seed=0)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    prompts = write_prompts(tmp_path / "p.jsonl", 2)
    base = ["run", "--method", "jacobi", "--model", str(tmp_path / "m"), "--prompts", str(prompts),
            "--max-new-tokens", "6", "--device", "cpu"]
    invoke(*base, "--device-map", "auto", "--runs-dir", str(tmp_path / "mapped"))
    invoke(*base, "--runs-dir", str(tmp_path / "plain"))
    (mapped,), (plain,) = (tmp_path / "mapped").iterdir(), (tmp_path / "plain").iterdir()
    info = json.loads((mapped / "run.json").read_text())
    assert info["config"]["device_map"] == "auto" and info["model"]["device_map"] == {"": "cpu"}
    assert "device_map" not in json.loads((plain / "run.json").read_text())["model"]
    sha = lambda d: [r["output_sha1"] for r in rows_of(d / "samples.jsonl")]  # noqa: E731
    assert sha(mapped) == sha(plain)  # the same weights, the same greedy tokens
    result = CliRunner().invoke(main, ["run", "--method", "ar", "--model", "tiny-random", "--prompts", str(prompts),
                                       "--device-map", "auto", "--runs-dir", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--device-map applies to models read from files" in result.output
    result = CliRunner().invoke(main, [*base, "--device-map", "everywhere", "--runs-dir", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown --device-map 'everywhere'" in result.output


def write_trajectories(path: Path, vocab: int, n: int = 4) -> Path:
    """A small trajectory file by hand: n samples of two 4-token blocks (enough to train on)."""
    g = torch.Generator().manual_seed(0)
    ids = lambda k: torch.randint(3, vocab - 3, (k,), generator=g).tolist()  # noqa: E731
    lines = [{"format": "harness-cllm-trajectories", "version": 1, "model": "tiny-random", "vocab_size": vocab,
              "block_size": 4, "max_new_tokens": 8, "task": "gsm8k", "split": "train", "chat": False}]
    for s in range(n):
        prompt, answer = ids(6), ids(8)
        for b in range(2):
            lines.append({"sample_id": f"s{s}", "block": b, "n_blocks": 2, "prompt_ids": prompt,
                          "prefix_ids": answer[:4 * b], "states": [ids(4), ids(4)], "fixed_point": answer[4 * b:4 * b + 4],
                          "n_jacobi": 2})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_two_process_training_agrees_on_the_weights_and_the_checkpoint_runs(tmp_path):
    base = load_model("tiny-random")
    data = write_trajectories(tmp_path / "t.jsonl", base.model.config.vocab_size)
    result = launch("cllm", "train", "--data", str(data), "--out", str(tmp_path / "ck"), "--max-steps", "2",
                    "--lr", "1e-2", "--save-steps", "1000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("checkpoint:") == 1 and "2 processes" in result.stdout  # rank 0 alone saves
    card = json.loads((tmp_path / "ck" / "cllm.json").read_text())
    procs = card["recipe"]["processes"]
    assert procs["world_size"] == 2 and procs["distributed_type"] == "MULTI_CPU" and card["recipe"]["steps"] == 2
    assert len(procs["weights_sha256"]) == 2 and len(set(procs["weights_sha256"])) == 1  # DDP kept the ranks equal
    trained = load_model(str(tmp_path / "ck"))
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(trained.model(x).logits, base.model(x).logits)  # the adapter learned something
    prompts = write_prompts(tmp_path / "p.jsonl", 2)
    invoke("run", "--method", "jacobi", "--model", str(tmp_path / "ck"), "--prompts", str(prompts),
           "--max-new-tokens", "4", "--runs-dir", str(tmp_path / "runs"))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["model"]["source"] == "cllm"
