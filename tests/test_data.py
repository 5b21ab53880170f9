"""Benchmark data from anywhere: the hub path (through local stand-ins laid out as the hub's datasets, never the
network), the one-line errors without data, and `harness data check` against the shipped checksums."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import pytest
from click.testing import CliRunner

from harness import HarnessError
from harness.cli import main
from harness.evaluation import data_check
from harness.evaluation.lm_tasks import common
from harness.evaluation.lm_tasks.gsm8k import utils as gsm8k
from harness.evaluation.lm_tasks.mt_bench import utils as mt_bench
from harness.evaluation.tasks import TASKS, prompts_for

GSM8K = [{"question": f"Tom has {i} apples and buys {i + 2} more. How many?", "answer": f"{i} + {i + 2}\n#### {2 * i + 2}"}
         for i in range(4)]
MT = [{"question_id": 81 + i, "category": "writing", "turns": [f"Write {i} lines.", "Now shorter."],
       "reference": ["a", "b"] if i == 1 else []} for i in range(3)]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def hub_folder(root, configs: dict[str, dict[str, str]]):
    """A local dataset folder laid out as a hub dataset repo: a README whose YAML header names each config's files."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in splits.items()]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]))
    return root


@pytest.fixture
def online(monkeypatch):
    """The hub reachable, and no offline switch from the environment."""
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HARNESS_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(common, "hub_online", lambda *a, **k: True)


def test_hub_revisions_are_commits_not_branches():
    for task, src in common.HUB.items():
        assert re.fullmatch(r"[0-9a-f]{40}", src.revision), (task, src.revision)
        assert TASKS[task]().hub == src.path


def test_gsm8k_from_the_hub_gives_the_same_prompts_as_the_data_dir(tmp_path, monkeypatch, online):
    local = tmp_path / "data"
    for split in ("train", "test"):
        jsonl(local / "gsm8k" / f"{split}.jsonl", GSM8K)
    hub = tmp_path / "openai-gsm8k"  # the hub repo's layout: config "main", one file per split
    for split in ("train", "test"):
        jsonl(hub / "main" / f"{split}.jsonl", GSM8K)
    hub_folder(hub, {"main": {"train": "main/train.jsonl", "test": "main/test.jsonl"}})
    monkeypatch.setitem(common.HUB, "gsm8k", dataclasses.replace(common.HUB["gsm8k"], path=str(hub)))

    from_hub = gsm8k.load()
    assert {k: len(v) for k, v in from_hub.items()} == {"train": 4, "test": 4}
    for chat in (False, True):
        assert prompts_for("gsm8k", "test", None, chat, 3) == prompts_for("gsm8k", "test", str(local), chat, 3)


def test_mt_bench_from_the_hub_reads_the_hub_fields(tmp_path, monkeypatch, online):
    hub = tmp_path / "mt_bench_prompts"  # HuggingFaceH4/mt_bench_prompts: prompt, prompt_id, category, reference
    jsonl(hub / "raw" / "question.jsonl", [{"prompt": q["turns"], "prompt_id": q["question_id"], "category": q["category"],
                                            "reference": q["reference"]} for q in MT])
    hub_folder(hub, {"default": {"train": "raw/question.jsonl"}})
    monkeypatch.setitem(common.HUB, "mt_bench", dataclasses.replace(common.HUB["mt_bench"], path=str(hub)))
    local = tmp_path / "data"
    jsonl(local / "mt_bench" / "question.jsonl", MT)

    keep = ("question_id", "category", "turns", "reference")
    rows = lambda data: [{k: r[k] for k in keep} for r in data["test"]]  # noqa: E731
    assert rows(mt_bench.load()) == rows(mt_bench.load(data_dir=str(local)))


def test_offline_without_the_dataset_is_one_line_naming_the_option(tmp_path, monkeypatch, online):
    empty = tmp_path / "not-in-the-cache"
    empty.mkdir()
    monkeypatch.setitem(common.HUB, "gsm8k", dataclasses.replace(common.HUB["gsm8k"], path=str(empty)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("run", "--method", "jacobi", "--task", "gsm8k", "--model", "tiny-random")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: task gsm8k: could not load") and "HF_HUB_OFFLINE" in line and "--data-dir" in line


def test_hub_unreachable_fails_before_loading_anything(monkeypatch, online):
    monkeypatch.setattr(common, "hub_online", lambda *a, **k: False)
    with pytest.raises(HarnessError, match="hub is unreachable; pass --data-dir"):
        gsm8k.load()


def test_spider_without_a_data_dir_says_where_the_databases_come_from(monkeypatch, online):
    result = invoke("run", "--method", "jacobi", "--task", "spider", "--model", "tiny-random")
    assert result.exit_code == 2 and "--data-dir" in result.output and "yale-lily.github.io/spider" in result.output


def test_shipped_checksums_cover_every_file_a_task_reads():
    shipped = data_check.expected()
    for name in TASKS:
        for rel in TASKS[name]().files:
            if rel.endswith("database"):  # a folder: its databases are listed one by one
                assert any(k.startswith(rel + "/") and k.endswith(".sqlite") for k in shipped), rel
            else:
                assert rel in shipped, rel
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in shipped.values())


def test_data_check_reports_each_file(tmp_path, monkeypatch):
    files = {"gsm8k/test.jsonl": b"one\n", "gsm8k/train.jsonl": b"two\n", "spider/dev.json": b"[]"}
    sums = tmp_path / "sums.txt"
    sums.write_text("# a comment\n" + "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in files.items()))
    monkeypatch.setattr(data_check, "CHECKSUMS", sums)
    root = tmp_path / "copy"
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)

    result = invoke("data", "check", str(root), "--task", "gsm8k")
    assert result.exit_code == 0 and result.output.split() == ["OK", "gsm8k/test.jsonl", "OK", "gsm8k/train.jsonl",
                                                               "2", "of", "2", "files", "OK"]
    (root / "gsm8k/train.jsonl").write_bytes(b"changed\n")
    (root / "spider/dev.json").unlink()
    result = invoke("data", "check", str(root), "--task", "gsm8k", "--task", "spider")
    lines = result.output.splitlines()
    assert result.exit_code == 1
    assert [line.split() for line in lines[:3]] == [["OK", "gsm8k/test.jsonl"], ["MISMATCH", "gsm8k/train.jsonl"],
                                                    ["MISSING", "spider/dev.json"]]
    assert lines[3] == "1 of 3 files OK; 2 missing or different"


def test_data_check_bad_input_is_one_line(tmp_path):
    result = invoke("data", "check", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and result.output.startswith("error: data directory")
    result = invoke("data", "check", str(tmp_path), "--task", "gsm9k")
    assert result.exit_code == 2 and "unknown data set 'gsm9k'" in result.output
