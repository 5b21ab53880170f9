"""The harness's LM in lm-eval's own registry: built from a model-args string, and lm-eval's CLI (through
`harness lm-eval`) generates exactly what `harness run` records for the same method and settings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import HarnessError
from harness.evaluation.lm_eval_model import LM_EVAL_NAME
from harness.engine.records import SAMPLES, read_samples
from harness.engine.session import RunConfig
from harness.orchestration.run import run

ROWS = [{"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
         "answer": f"{i} + {i + 2} = {2 * i + 2}\n#### {2 * i + 2}"} for i in range(3)]


def test_the_model_is_in_lm_evals_registry_and_built_from_an_argument_string():
    from lm_eval.api.registry import get_model

    cls = get_model(LM_EVAL_NAME)
    lm = cls.create_from_arg_string("model=tiny-random,method=jacobi,block_size=4,init=repeat",
                                    {"device": "cuda", "batch_size": 1})  # lm-eval's default device
    s = lm.session
    assert (s.cfg.method, s.cfg.model, s.cfg.options) == ("jacobi", "tiny-random", {"block_size": "4", "init": "repeat"})
    assert s.names == ["jacobi"] and s.lm.device.type in ("cpu", "cuda")  # the method alone: no AR pairing
    with pytest.raises(HarnessError, match="one request at a time"):
        cls.create_from_arg_string("model=tiny-random", {"batch_size": 8})
    with pytest.raises(HarnessError, match="block_size"):
        cls.create_from_arg_string("model=tiny-random,method=jacobi,block_size=0")


@pytest.mark.slow
def test_lm_eval_cli_generates_what_harness_run_records(tmp_path, write_gsm8k):
    data = write_gsm8k(tmp_path / "data", ROWS)
    settings = {"method": "jacobi", "block_size": 4, "max_new_tokens": 12}
    # 1. lm-eval's CLI, our model and our gsm8k task (it overrides lm-eval's own gsm8k).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "harness.cli", "lm-eval", "--model", LM_EVAL_NAME,
           "--model_args", "model=tiny-random," + ",".join(f"{k}={v}" for k, v in settings.items()),
           "--tasks", "gsm8k", "--limit", "2", "--num_fewshot", "0", "--metadata", f"data_dir={data}",
           "--output_path", str(tmp_path / "lm_eval"), "--log_samples"]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    [samples_file] = (tmp_path / "lm_eval").rglob("samples_gsm8k_*.jsonl")
    lm_eval_out = {}
    for line in samples_file.read_text().splitlines():
        row = json.loads(line)
        lm_eval_out[str(row["doc_id"])] = row["resps"][0][0]
    # 2. harness run with the same method, options and budget.
    run_dir = run(RunConfig(method="jacobi", task="gsm8k", model="tiny-random", limit=2, max_new_tokens=12,
                            num_fewshot=0, options={"block_size": "4"}, data_dir=str(data),
                            output_dir=str(tmp_path / "runs")), echo=lambda *a: None)
    ours = {r["doc_id"]: r["output"] for r in read_samples(run_dir / SAMPLES) if r["method"] == "jacobi"}
    assert len(lm_eval_out) == 2 and lm_eval_out == ours
