"""Smoke test: every script in benchmarks/ runs on tiny-random at a tiny size and prints its table, so that
none of them rots. Timings are printed, never checked. A new script is covered as soon as it exists: it must
have `main(argv) -> exit status` and accept `--model`, `--limit` and `--max-new-tokens`; GSM8K comes from
$HARNESS_DATA_DIR, a two-question copy made here."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
TINY = ["--model", "tiny-random", "--limit", "1", "--max-new-tokens", "8"]
EXTRA = {"ar_vs_generate.py": ["--no-gate", "--repeats", "1"],  # timing gates make no sense on a smoke run
         "gpu_check.py": ["--device", "cpu", "--engines", "eager"],
         "cache_size.py": ["--no-autotune", "--sizes", "64,128", "--context", "20", "--widths", "1,3",
                           "--rounds", "2", "--repeats", "2"]}  # tests/test_engine.py covers compiling
EXPECT = {  # a line of each script's table
    "sandbox_overhead.py": "per program (median of",
    "ar_vs_generate.py": "ar / generate tokens/s ratio",
    "compare_methods.py": "tok/step",
    "speculative_vs_transformers.py": "draft model (first 1 of the target's 2 layers",
    "cllm_distance_accuracy.py": "tiny-random: 1 samples",
    "gpu_check.py": "gpu_check: lossless OK",
    "cache_size.py": "| 3 tokens |",
}
QUESTIONS = [{"question": "Tom has 3 apples and buys 2 more. How many apples does he have?", "answer": "3 + 2 = 5\n#### 5"},
             {"question": "What is 6 times 7?", "answer": "6 * 7 = 42\n#### 42"}]


def test_every_script_has_an_expected_line():
    assert SCRIPTS and set(EXPECT) <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_on_tiny_random(script, tmp_path, monkeypatch, capsys, write_gsm8k):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(write_gsm8k(tmp_path / "data", QUESTIONS)))
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # scripts import their siblings, as `python benchmarks/x.py` allows
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main([*TINY, *EXTRA.get(script, [])])
    out = capsys.readouterr().out
    assert status == 0, out
    assert EXPECT.get(script, "") in out and "tiny-random" in out


def test_ar_vs_generate_gate_fails_when_ar_is_slower(capsys):
    """The gate's arithmetic: a tolerance no measurement can meet (AR at 10x generate's speed) fails it."""
    spec = importlib.util.spec_from_file_location("benchmark_gate", BENCHMARKS / "ar_vs_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main([*TINY, "--repeats", "1", "--block-size", "0", "--tolerance", "-9"])
    captured = capsys.readouterr()
    assert status == 1 and "FAIL: our AR runs at" in captured.err
