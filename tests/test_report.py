"""The report: leaderboard rows on hand-built tables with hand-checked speedups (ratios of throughputs) and
intervals (by document, none below MIN_DOCS), the bootstrap's statistical behaviour, the leaderboard key and AR
pooling, provenance columns, run folders with damaged lines, plots from a synthetic table, atomic writes, and
`harness report` / `harness compare` on hand-made run folders."""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import threading
import time
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from harness import HarnessError
from harness.cli import main
from harness.engine.records import write_atomic
from harness.analysis.leaderboard import (COLUMNS, Runs, bootstrap_speedups, labels, leaderboard,
                                          load_runs, make_runs, run_record, settings, tag_samples, write_csv)
from harness.analysis.report import report, report_lock, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def sample(method, doc, wall, new=10, steps=10, sha="x", error=None, drafted=0, accepted=0, step_tokens=None, turn=1):
    if error:
        return {"method": method, "doc_id": doc, "turn": turn, "new_tokens": None, "steps": None, "wall_time_s": None,
                "output_sha1": None, "error": error, "step_tokens": None}
    return {"method": method, "doc_id": doc, "turn": turn, "new_tokens": new, "steps": steps, "wall_time_s": wall,
            "output_sha1": sha, "error": None, "drafted_tokens": drafted, "accepted_tokens": accepted,
            "draft_forwards": 0, "step_tokens": step_tokens if step_tokens is not None else [new // steps] * steps}


def manifest(run_id, method, options=None, model="m", task="t", hardware="hw", metric=None, created="2026-01-01T00:00",
             max_new_tokens=8, dtype="float32", dirty=False, torch="2.13.0"):
    return {"run_id": run_id, "created": created, "model": {"name": model, "dtype": dtype, "device": "cpu",
                                                            "chat_template": False},
            "task": {"name": task, "metric": metric}, "hardware": {"label": hardware},
            "method": {"name": method, "options": options or {}}, "git": {"commit": "abc123", "dirty": dirty},
            "versions": {"torch": torch, "transformers": "5.0", "lm_eval": "0.4.13"},
            "config": {"method": method, "max_new_tokens": max_new_tokens, "chat_template": True}}


def hand_runs(*runs) -> Runs:
    """Runs built by hand, as load_runs would build them: each run is (manifest, samples rows, scores rows)."""
    table, samples, scores = [], [], []
    for info, rows, sc in runs:
        table.append(run_record(info))
        samples += tag_samples(table[-1], rows)
        scores += [{**s, "run_id": info["run_id"]} for s in sc]
    return make_runs(table, samples, scores)


def by_method(board):
    return {r["method"]: r for r in board.to_dict("records")}


METRIC = "acc,none"
RUN1 = (manifest("r1", "m", {"k": 4}, metric=METRIC),
        [sample("ar", "a", 2.0, 10, 10, "x"), sample("m", "a", 1.0, 10, 4, "x", drafted=4, accepted=1),
         sample("ar", "b", 6.0, 20, 20, "y"), sample("m", "b", 1.0, 20, 5, "z", drafted=4, accepted=1),
         sample("ar", "c", 1.0, 5, 5, "w"), sample("m", "c", None, error="Boom: x")],
        [{"method": "m", "doc_id": "a", "scores": {METRIC: 1.0}}, {"method": "m", "doc_id": "b", "scores": {METRIC: 0.0}},
         {"method": "m", "doc_id": "c", "scores": {METRIC: 0.0}},
         *[{"method": "ar", "doc_id": d, "scores": {METRIC: 1.0}} for d in "abc"]])


def test_leaderboard_row_checked_by_hand():
    board = leaderboard(hand_runs(RUN1), n_boot=4000)
    assert list(board.columns) == COLUMNS and list(board["method"]) == ["ar", "m"]  # AR first
    m, ar = by_method(board)["m"], by_method(board)["ar"]
    assert (m["n"], m["n_errors"], m["n_paired"], m["n_docs"]) == (2, 1, 2, 2)
    assert m["tokens_per_step"] == pytest.approx(30 / 9) and m["tokens_per_s"] == pytest.approx(15.0)
    # equal lengths: the ratio of throughputs is the ratio of total times, (30 / 2) / (30 / 8)
    assert m["speedup"] == pytest.approx(8 / 2) and m["length_ratio"] == pytest.approx(1.0)
    assert m["speedup_geomean"] == pytest.approx(math.sqrt(2 * 6))
    # two documents: too few to resample, so no interval, and the row says why
    assert all(m[k] is None or pd.isna(m[k]) for k in ("speedup_lo", "speedup_hi", "speedup_geomean_lo",
                                                        "speedup_geomean_hi"))
    assert m["interval_note"] == "2 documents, fewer than 10: too few to resample, no interval"
    assert m["acceptance_rate"] == pytest.approx(2 / 8) and m["lossless_rate"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["metric"] == METRIC
    assert m["accuracy_delta"] == pytest.approx(1 / 3 - 1.0)
    assert m["options"] == "k=4" and m["run_id"] == "r1" and m["hardware"] == "hw"
    assert (m["dtype"], m["max_new_tokens"], m["chat_template"], m["device"]) == ("float32", "8", "false", "cpu")
    assert m["dirty"] is False and m["versions"] == "torch 2.13.0, transformers 5.0, lm_eval 0.4.13"
    assert ar["n"] == 3 and ar["n_docs"] == 3 and ar["speedup"] == 1.0 and ar["length_ratio"] == 1.0
    assert pd.isna(ar["speedup_lo"]) and pd.isna(ar["interval_note"])  # the reference has no interval
    assert ar["tokens_per_s"] == pytest.approx(35 / 9) and ar["accuracy"] == 1.0 and ar["accuracy_delta"] == 0.0
    assert pd.isna(ar["acceptance_rate"]) and ar["options"] == "temperature=0.0"


def test_speedup_is_the_ratio_of_throughputs_when_lengths_differ():
    # doc a: the method stops after 8 tokens (4 tok/s) where AR writes 128 (10 tok/s): 6.4x less time, but slower;
    # doc b: the method writes 128 tokens in AR's time for 40 (32 vs 10 tok/s)
    rows = [sample("ar", "a", 12.8, new=128, steps=128), sample("m", "a", 2.0, new=8, steps=4),
            sample("ar", "b", 4.0, new=40, steps=40), sample("m", "b", 4.0, new=128, steps=16)]
    m = by_method(leaderboard(hand_runs((manifest("r", "m"), rows, [])), n_boot=100))["m"]
    time_ratio = (12.8 + 4.0) / (2.0 + 4.0)
    assert m["speedup"] == pytest.approx((136 / 6.0) / (168 / 16.8))  # 2.27, where the time ratio is 2.8
    assert m["speedup"] != pytest.approx(time_ratio) and m["length_ratio"] == pytest.approx(136 / 168)
    assert m["speedup"] == pytest.approx(time_ratio * m["length_ratio"])  # the identity that links the three
    assert m["speedup_geomean"] == pytest.approx(math.sqrt(0.4 * 3.2))  # per-request throughput ratios 0.4, 3.2


def test_methods_pair_with_the_ar_rows_of_their_own_run():
    fast_ar = (manifest("r1", "jacobi"), [sample("ar", d, 2.0) for d in "ab"] + [sample("jacobi", d, 1.0) for d in "ab"], [])
    slow_ar = (manifest("r2", "lookahead", created="2026-01-02"),
               [sample("ar", d, 9.0) for d in "ab"] + [sample("lookahead", d, 3.0) for d in "ab"], [])
    rows = by_method(leaderboard(hand_runs(fast_ar, slow_ar), n_boot=100))
    assert rows["jacobi"]["speedup"] == pytest.approx(2.0) and rows["lookahead"]["speedup"] == pytest.approx(3.0)
    assert rows["ar"]["n"] == 4 and rows["ar"]["run_id"] == "r1;r2"  # same settings: AR pools both runs' AR rows


def test_ar_pools_only_runs_with_identical_settings_and_no_setting_supersedes_another():
    def run(run_id, method, created, **kw):
        rows = [sample("ar", d, 2.0) for d in "ab"] + [sample(method, d, 1.0) for d in "ab"]
        return manifest(run_id, method, created=created, **kw), rows, []

    warnings = []
    board = leaderboard(hand_runs(run("short", "jacobi", "2026-01-01", max_new_tokens=8),
                                  run("long", "lookahead", "2026-01-02", max_new_tokens=16),
                                  run("fp32", "spec", "2026-01-03"),
                                  run("bf16", "spec", "2026-01-04", dtype="bfloat16")),
                        n_boot=10, warn=warnings.append)
    ar = board[board["method"] == "ar"]
    # different max_new_tokens: two AR rows, not one pooled row; fp32 and bf16 AR rows stay apart too
    assert sorted(zip(ar["max_new_tokens"], ar["dtype"], ar["run_id"])) == [
        ("16", "float32", "long"), ("8", "bfloat16", "bf16"), ("8", "float32", "short;fp32")]
    spec = board[board["method"] == "spec"]
    assert sorted(spec["run_id"]) == ["bf16", "fp32"] and not any("superseded" in w for w in warnings)
    assert sorted(labels(board)[board["method"] == "spec"]) == ["spec dtype=bfloat16", "spec dtype=float32"]


def test_settings_of_old_run_files_use_what_they_record():
    old = {"config": {"dtype": "auto", "max_new_tokens": None, "chat_template": True}, "hardware": {"device": "cpu"},
           "model": {"name": "m", "dtype": "float32", "chat_template": True}}
    assert settings(old) == {"dtype": "float32", "max_new_tokens": "default", "num_fewshot": "default",
                             "chat_template": "true", "device": "cpu", "engine": "eager",  # before --engine: eager
                             "batch_size": "1"}  # before --batch-size: one request at a time
    assert settings({"config": {"dtype": "bf16", "chat_template": False, "engine": "compiled"}, "model": {}}) == {
        "dtype": "bf16", "max_new_tokens": "default", "num_fewshot": "default", "chat_template": "false",
        "device": "unknown", "engine": "compiled", "batch_size": "1"}


def test_provenance_flags_dirty_rows_and_pooled_runs_with_other_library_versions():
    def run(run_id, method, **kw):
        rows = [sample("ar", "a", 2.0), sample(method, "a", 1.0)]
        return manifest(run_id, method, created=run_id, **kw), rows, []

    warnings = []
    board = leaderboard(hand_runs(run("1", "jacobi", dirty=True), run("2", "lookahead", torch="2.14.0")),
                        n_boot=10, warn=warnings.append)
    rows = by_method(board)
    assert rows["jacobi"]["dirty"] is True and rows["lookahead"]["dirty"] is False
    assert rows["ar"]["dirty"] is True  # it pools a dirty run
    assert rows["ar"]["versions"] == ("torch 2.13.0, transformers 5.0, lm_eval 0.4.13 | "
                                      "torch 2.14.0, transformers 5.0, lm_eval 0.4.13")
    assert any(w.startswith("ar on t") and "different library versions" in w for w in warnings)
    assert any(w.startswith("2 of 3 rows come from runs made in a git tree with uncommitted changes") for w in warnings)


def test_different_models_or_hardware_are_never_paired_and_a_run_without_ar_warns():
    alone = (manifest("r1", "jacobi", model="m1", hardware="cpu"), [sample("jacobi", d, 1.0) for d in "ab"], [])
    other_hw = (manifest("r2", "ar", model="m1", hardware="gpu"), [sample("ar", d, 5.0) for d in "ab"], [])
    other_model = (manifest("r3", "ar", model="m2", hardware="cpu"), [sample("ar", d, 5.0) for d in "ab"], [])
    warnings = []
    board = leaderboard(hand_runs(alone, other_hw, other_model), n_boot=100, warn=warnings.append)
    jac = by_method(board)["jacobi"]
    assert jac["n"] == 2 and jac["n_paired"] == 0 and jac["tokens_per_step"] == 1.0
    assert all(pd.isna(jac[k]) for k in ("speedup", "speedup_lo", "speedup_geomean", "lossless_rate", "accuracy_delta"))
    assert any("r1" in w and "no AR rows" in w for w in warnings)
    ar = board[board["method"] == "ar"]
    assert sorted(zip(ar["model"], ar["hardware"])) == [("m1", "gpu"), ("m2", "cpu")]


def test_latest_run_wins_and_options_make_separate_rows():
    def spec(run_id, draft, created, wall):
        rows = [sample("ar", "a", 2.0), sample("speculative", "a", wall)]
        return (manifest(run_id, "speculative", {"draft": draft, "k": 4}, created=created), rows, [])

    warnings = []
    runs = hand_runs(spec("old", "ngram", "2026-01-01", 4.0), spec("new", "ngram", "2026-01-03", 1.0),
                     spec("ls", "layerskip:1", "2026-01-02", 2.0))
    board = leaderboard(runs, n_boot=10, warn=warnings.append)
    spec_rows = board[board["method"] == "speculative"]
    assert dict(zip(spec_rows["options"], spec_rows["run_id"])) == {"draft=layerskip:1,k=4": "ls", "draft=ngram,k=4": "new"}
    assert dict(zip(spec_rows["run_id"], spec_rows["speedup"])) == {"ls": 1.0, "new": 2.0}
    assert any("old" in w and "superseded" in w for w in warnings) and any("superseded" in w for w in runs.warnings)
    assert sorted(labels(board)) == ["ar", "speculative draft=layerskip:1", "speculative draft=ngram"]


def pairs_table(docs, m_tok, m_s, a_tok, a_s) -> pd.DataFrame:
    """Paired requests as harness.analysis.summary.pair gives them (the method's columns, then AR's with `_ar`)."""
    return pd.DataFrame({"doc_id": list(docs), "new_tokens": m_tok, "wall_time_s": m_s, "new_tokens_ar": a_tok,
                         "wall_time_s_ar": a_s})


def test_bootstrap_exact_cases():
    docs = [str(i) for i in range(12)]
    s = bootstrap_speedups(pairs_table(docs, 10, np.linspace(1, 2, 12), 10, 3 * np.linspace(1, 2, 12)), n_boot=500)
    assert all(s[k] == pytest.approx(3.0) for k in ("speedup", "speedup_lo", "speedup_hi", "speedup_geomean",
                                                    "speedup_geomean_lo", "speedup_geomean_hi"))  # every ratio is 3
    assert s["n_docs"] == 12 and s["interval_note"] is None
    empty = bootstrap_speedups(pairs_table([], [], [], [], []), n_boot=50)
    assert empty["speedup"] is None and empty["speedup_lo"] is None and empty["n_docs"] == 0
    s = bootstrap_speedups(pairs_table(docs[:2], [10, 10], [1.0, 1.0], [10, 10], [1.0, 4.0]), n_boot=0)
    assert s["speedup"] == 2.5 and s["speedup_geomean"] == 2.0 and s["speedup_lo"] is None


def test_no_interval_below_the_minimum_number_of_documents():
    rng = np.random.default_rng(0)
    ratios = rng.lognormal(0.3, 0.4, 10)
    nine = bootstrap_speedups(pairs_table([str(i) for i in range(9)], 10, 1.0, 10, ratios[:9]), n_boot=200)
    assert nine["speedup"] == pytest.approx(ratios[:9].sum() / 9)
    assert nine["speedup_lo"] is None and nine["speedup_geomean_hi"] is None
    assert nine["interval_note"] == "9 documents, fewer than 10: too few to resample, no interval"
    ten = bootstrap_speedups(pairs_table([str(i) for i in range(10)], 10, 1.0, 10, ratios), n_boot=200)
    assert ten["interval_note"] is None and ten["speedup_lo"] < ten["speedup"] < ten["speedup_hi"]
    # many turns of few documents do not make enough documents: 9 conversations of 3 turns each
    turns = bootstrap_speedups(pairs_table([str(i // 3) for i in range(27)], 10, 1.0, 10, 2.0), n_boot=200)
    assert turns["n_docs"] == 9 and turns["speedup_lo"] is None and "9 documents" in turns["interval_note"]


def test_bootstrap_resamples_documents_with_all_their_turns():
    # each conversation: turn 1 four times faster than AR, turn 2 four times slower, same tokens and time in total,
    # so every document's ratio is exactly 1 and so is every resample of whole documents. Resampling the turns
    # independently (each turn its own unit) would mix them and spread the estimates far from 1.
    n = 20
    scale = np.repeat(np.linspace(1.0, 3.0, n), 2)  # documents differ in length; the turns of one share it
    m_tok, a_tok = np.tile([40, 10], n) * scale, np.tile([10, 40], n) * scale
    by_doc = bootstrap_speedups(pairs_table(np.repeat(np.arange(n), 2).astype(str), m_tok, scale, a_tok, scale),
                                n_boot=1000)
    assert by_doc["n_docs"] == n and by_doc["speedup"] == pytest.approx(1.0)
    for k in ("speedup_lo", "speedup_hi", "speedup_geomean_lo", "speedup_geomean_hi"):
        assert by_doc[k] == pytest.approx(1.0)
    by_turn = bootstrap_speedups(pairs_table(np.arange(2 * n).astype(str), m_tok, scale, a_tok, scale), n_boot=1000)
    assert by_turn["speedup_lo"] < 0.8 and by_turn["speedup_hi"] > 1.25 and by_turn["speedup_geomean_lo"] < 0.8


def test_bootstrap_is_seeded_and_its_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    docs = [str(i) for i in range(40)]
    table = pairs_table(docs, 10, rng.lognormal(0, 0.3, 40), 10, rng.lognormal(0, 0.3, 40))
    assert bootstrap_speedups(table, 300, seed=7) == bootstrap_speedups(table, 300, seed=7)
    assert bootstrap_speedups(table, 300, seed=7) != bootstrap_speedups(table, 300, seed=8)
    true_geomean, hits, widths = math.exp(0.4), 0, {}
    for trial in range(300):  # per-request log ratios ~ N(0.4, 0.5): the true geometric mean is e^0.4
        method = rng.lognormal(0, 0.2, 50)
        ar = method * np.exp(rng.normal(0.4, 0.5, 50))
        s = bootstrap_speedups(pairs_table(map(str, range(50)), 10, method, 10, ar), n_boot=1000, seed=trial)
        hits += s["speedup_geomean_lo"] <= true_geomean <= s["speedup_geomean_hi"]
        assert s["speedup_geomean_lo"] <= s["speedup_geomean"] <= s["speedup_geomean_hi"]
    assert 0.89 <= hits / 300 <= 0.99
    for n in (25, 400):  # the interval narrows like 1/sqrt(n): 16x the documents, about a quarter of the width
        method = rng.lognormal(0, 0.2, n)
        ar = method * np.exp(rng.normal(0.4, 0.5, n))
        s = bootstrap_speedups(pairs_table(map(str, range(n)), 10, method, 10, ar), n_boot=1000)
        widths[n] = s["speedup_geomean_hi"] - s["speedup_geomean_lo"]
    assert 0.15 < widths[400] / widths[25] < 0.4


def write_run(root: Path, info: dict, rows: list, scores=(), raw_lines=()) -> Path:
    folder = root / info["run_id"]
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(info))
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(raw_lines))
    if scores:
        (folder / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
    return folder


def test_load_runs_skips_damaged_lines_and_empty_runs_with_warnings(tmp_path):
    info, rows, scores = RUN1
    good = write_run(tmp_path / "runs", info, rows[:3], scores,
                     raw_lines=["\n", '{"method": "m", "doc_id": "b", "wall', "\n", '{"method": "ar"}\n', "[1, 2]\n"])
    empty = write_run(tmp_path / "runs", manifest("r2", "jacobi"), [])
    warnings = []
    runs = load_runs([tmp_path / "runs"], warn=warnings.append)
    assert list(runs.runs["run_id"]) == ["r1"] and len(runs.samples) == 3
    samples = good / "samples.jsonl"
    for line in (4, 5, 6, 7):  # an empty line, a torn row, a row without doc_id, a row that is not an object
        assert any(w.startswith(f"{samples}:{line}: skipping") for w in warnings), (line, warnings)
    assert any(str(empty / "samples.jsonl") in w and "no samples" in w for w in warnings)
    assert runs.warnings == warnings
    assert set(runs.scores["method"]) == {"m", "ar"}
    assert by_method(leaderboard(runs, n_boot=10))["m"]["speedup"] == pytest.approx(2.0)


def test_load_runs_bad_paths_are_errors(tmp_path):
    with pytest.raises(HarnessError, match="is not a folder"):
        load_runs([tmp_path / "nope"])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(HarnessError, match="no run folders in"):
        load_runs([tmp_path / "nothing"])
    write_run(tmp_path / "runs", manifest("r1", "m"), [])
    with pytest.raises(HarnessError, match="no readable runs"):
        load_runs([tmp_path / "runs"], warn=lambda _: None)
    (tmp_path / "runs" / "r1" / "run.json").write_text("{not json")
    with pytest.raises(HarnessError, match="no readable runs"):
        load_runs([tmp_path / "runs"], warn=lambda _: None)


def synthetic_runs() -> Runs:
    """Two tasks, three method variants, 12 documents each; per-step counts in every row."""
    rng = np.random.default_rng(0)
    runs = []
    for t, task in enumerate(("gsm8k", "humaneval")):
        for i, (method, opts, tps) in enumerate((("jacobi", {"block_size": 16}, 1.1), ("lookahead", {}, 1.6),
                                                 ("speculative", {"draft": "ngram"}, 1.8))):
            rows, scores = [], []
            for d in range(12):  # enough documents for intervals
                steps = [int(x) for x in rng.integers(1, 2 * tps, 20)] + [17]
                ar_wall = rng.uniform(1.0, 2.0)
                rows += [sample("ar", str(d), ar_wall, sum(steps), sum(steps), sha=str(d)),
                         sample(method, str(d), ar_wall / tps * rng.uniform(0.8, 1.2), sum(steps), len(steps),
                                sha=str(d), step_tokens=steps, drafted=30, accepted=sum(steps) - len(steps))]
                scores += [{"method": n, "doc_id": str(d), "scores": {"acc,none": float(rng.integers(0, 2))}}
                           for n in (method, "ar")]
            info = manifest(f"r{t}{i}", method, opts, task=task, metric="acc,none", hardware="2-core CPU")
            runs.append((info, rows, scores))
    return hand_runs(*runs)


def is_png(path: Path) -> bool:
    image = matplotlib.image.imread(path)
    return path.read_bytes()[:8] == PNG and image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_report_writes_csv_plots_and_markdown(tmp_path):
    runs = synthetic_runs()
    board = leaderboard(runs, n_boot=200)
    written = write_report(runs, board, tmp_path / "out", command="harness report x")
    csv = pd.read_csv(written["leaderboard"])
    assert list(csv.columns) == COLUMNS and len(csv) == 8  # 2 tasks x (3 methods + AR)
    assert np.allclose(csv["speedup"], board["speedup"]) and set(csv["hardware"]) == {"2-core CPU"}
    plots = sorted(p.name for k, p in written.items() if k.startswith("plot:"))
    assert plots == ["acceptance_by_position.png", "accuracy_vs_speedup.png", "speedup.png", "speedup_matrix.png",
                     "speedup_vs_tokens_per_step.png", "step_tokens.png"]
    assert all(is_png(p) for k, p in written.items() if k.startswith("plot:"))
    md = written["report"].read_text()
    assert "harness report x" in md and "### gsm8k (accuracy: `acc,none`)" in md and "## Runs" in md
    # per task: its leaderboard row and its acceptance row
    assert md.count("| `speculative` |") == 4 and "](plots/speedup.png)" in md and "| method | τ | 1 | 2 |" in md
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_plots_per_model_and_the_step_distribution(tmp_path):
    from harness.analysis import plots

    runs = synthetic_runs()
    other = runs.runs.assign(model="m2", run_id=runs.runs["run_id"] + "b")
    runs = Runs(pd.concat([runs.runs, other]), pd.concat([runs.samples, runs.samples.assign(
        model="m2", run_id=runs.samples["run_id"] + "b")]), runs.scores)
    figures = plots.make_plots(leaderboard(runs, n_boot=50), runs.samples, tmp_path)
    assert set(figures) == {("m", "2-core CPU"), ("m2", "2-core CPU")}
    assert figures[("m2", "2-core CPU")]["speedup"].name == "m2-speedup.png"
    assert len(list(tmp_path.glob("*.png"))) == 12 and all(is_png(p) for p in tmp_path.glob("*.png"))

    # the distribution, checked by hand: steps committing 1, 1, 3 and 1, 2 tokens: 60%, 20%, 20%
    rows = [sample("ar", "a", 1.0), sample("jacobi", "a", 1.0, 5, 3, step_tokens=[1, 1, 3]),
            sample("ar", "b", 1.0), sample("jacobi", "b", 1.0, 3, 2, step_tokens=[1, 2])]
    small = hand_runs((manifest("r", "jacobi"), rows, []))
    board = leaderboard(small, n_boot=10).assign(label=lambda b: labels(b))
    fig = plots.step_tokens(board, small.samples, "m", "hw", plots.colours(board["label"]))
    (line,) = fig.axes[0].lines
    assert np.allclose(line.get_ydata(), [60, 20, 20])  # bins up to the widest step seen, no empty ones after
    assert fig.axes[0].get_xlim() == (0.5, 3.5) and "last bin" not in fig.axes[0].get_xlabel()
    assert "m on hw" in fig._suptitle.get_text()
    # rows without per-step counts: per-request means, and the title says so
    fig = plots.step_tokens(board, small.samples.assign(step_tokens=None), "m", "hw", plots.colours(board["label"]))
    assert "per-request means" in fig._suptitle.get_text()


def test_plots_draw_break_even_name_metrics_in_words_and_leave_out_tasks_without_accuracy():
    from harness.analysis import plots

    runs = synthetic_runs()
    board = leaderboard(runs, n_boot=20)
    board.loc[board["task"] == "humaneval", "accuracy"] = np.nan  # as MT-bench without a judge
    board.loc[board["task"] == "gsm8k", "metric"] = "exact_match,flexible-extract"
    board = board.assign(label=labels(board))
    colour = plots.colours(board["label"])

    fig = plots.accuracy_vs_speedup(board, "m", "2-core CPU", colour)
    (ax,) = fig.axes  # one panel: the task with an accuracy
    assert ax.get_title() == "gsm8k" and ax.get_ylabel().startswith("GSM8K accuracy (exact match)")
    assert "no accuracy: humaneval" in fig._suptitle.get_text()

    fig = plots.speedup_vs_tokens_per_step(board, "m", "2-core CPU", colour)
    ax = fig.axes[0]
    rays = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert len(rays) == len(plots.BREAK_EVEN)
    for ray, c in zip(rays, plots.BREAK_EVEN):  # speedup = tokens/step ÷ c
        assert np.allclose(ray.get_ydata(), ray.get_xdata() / c)
    points = board[board["method"] != "ar"]
    assert ax.get_ylim()[1] >= points["speedup"].max() and ax.get_xlim()[1] >= points["tokens_per_step"].max()
    assert "break-even" in plots.speedup_matrix(board, "m", "2-core CPU").axes[0].get_xlabel()
    plt.close("all")


def test_metric_names_are_words():
    from harness.analysis.plots import metric_name

    assert metric_name("pass@1,none") == "HumanEval pass@1 (unit tests pass)"
    assert metric_name("bleu,none", "wmt") == "wmt bleu" and metric_name("f1,strict-match") == "f1 (strict match)"
    assert metric_name(None) == "no metric"


def test_concurrent_writers_never_leave_a_torn_csv(tmp_path):
    boards = [leaderboard(hand_runs(RUN1), n_boot=10), leaderboard(synthetic_runs(), n_boot=10)]
    path = tmp_path / "leaderboard.csv"
    write_csv(boards[0], path)
    texts = {b.to_csv(index=False, float_format="%.6g") for b in boards}
    stop, seen = threading.Event(), []

    def writer(board):
        while not stop.is_set():
            write_csv(board, path)

    threads = [threading.Thread(target=writer, args=(b,)) for b in boards]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            seen.append(path.read_text())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(seen) <= texts  # every read is one complete version
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.csv"]


def test_write_atomic_cleans_up_when_the_write_fails(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "x.csv", 123)  # not str or bytes
    assert list(tmp_path.iterdir()) == []


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_report_and_its_warnings(tmp_path):
    write_run(tmp_path / "runs", *RUN1, raw_lines=["{torn\n"])
    write_run(tmp_path / "runs", manifest("r2", "jacobi", created="2026-01-02"),
              [sample("jacobi", "a", 1.0)])  # no AR rows
    result = invoke("report", str(tmp_path / "runs"), "--out", str(tmp_path / "res"), "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "samples.jsonl:7: skipping" in result.output
    assert "no AR rows" in result.output and "4.00" in result.output and "4.00 [" not in result.output
    csv = pd.read_csv(tmp_path / "res" / "leaderboard.csv")
    assert list(csv["method"]) == ["ar", "jacobi", "m"] and pd.isna(csv.loc[1, "speedup"])
    assert pd.isna(csv.loc[2, "speedup_lo"]) and csv.loc[2, "n_docs"] == 2
    assert (tmp_path / "res" / "plots" / "speedup.png").exists()
    md = (tmp_path / "res" / "report.md").read_text()
    assert "no AR rows" in md  # warnings are in the report too
    # the empty interval is explained under its table, and the definition is written in the report
    assert "Note: no interval for `m`: 2 documents, fewer than 10: too few to resample, no interval." in md
    assert "defined once, in docs/measurement.md" in md  # the report points to the one definition


@pytest.mark.parametrize("args,message", [
    (["report", "/nonexistent/runs"], "/nonexistent/runs is not a folder"),
    (["compare", "nope-a", "nope-b"], "no run 'nope-a'"),
    (["report", "/nonexistent/runs", "--seed", "-1"], "--seed must be 0 or more"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    result = invoke(*args, *(["--runs-dir", str(tmp_path)] if args[0] == "compare" else ["--out", str(tmp_path)]))
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")


def test_cli_compare_shows_conditions_metrics_and_identical_outputs(tmp_path):
    info, rows, scores = RUN1
    write_run(tmp_path / "runs", info, rows, scores)
    faster = [dict(r, wall_time_s=r["wall_time_s"] / 2) if r["method"] == "m" and r["wall_time_s"] else r for r in rows]
    faster[3] = dict(faster[3], output_sha1="y")  # doc b now matches AR
    info_b = dict(manifest("r2", "m", {"k": 8}, metric=METRIC), config={"method": "m", "max_new_tokens": 16})
    write_run(tmp_path / "runs", info_b, faster, scores)
    result = invoke("compare", "r1", str(tmp_path / "runs" / "r2"), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "config.max_new_tokens: 8 -> 16" in out and "method.options.k: 4 -> 8" in out and "run_id" not in out
    speedup = next(line for line in out.splitlines() if line.split()[:1] == ["speedup"])
    assert speedup.split() == ["speedup", "4.000", "8.000", "+4.000", "2.000"]
    lossless = next(line for line in out.splitlines() if line.split()[:1] == ["lossless_rate"])
    assert lossless.split()[1:3] == ["0.500", "1.000"]
    assert "identical outputs (requests completed in both runs): m 1/2, ar 3/3" in out


def test_cli_report_skips_wrongly_typed_rows_with_a_warning_naming_the_line(tmp_path):
    info, rows, scores = RUN1
    bad = [{**rows[0], "wall_time_s": "abc"}, {**rows[0], "doc_id": "d", "steps": None},
           {**rows[0], "doc_id": {"a": 1}}, {**rows[0], "doc_id": "e", "turn": "x"},
           {**rows[0], "doc_id": "f", "new_tokens": "10"}, {**rows[0], "doc_id": "g", "step_tokens": "abc"}]
    folder = write_run(tmp_path / "runs", info, rows, scores, raw_lines=[json.dumps(r) + "\n" for r in bad])
    result = invoke("report", str(tmp_path / "runs"), "--out", str(tmp_path / "res"), "--bootstrap", "10", "--no-plots")
    assert result.exit_code == 0, result.output
    samples = folder / "samples.jsonl"
    for line, reason in zip(range(7, 13), ("wall_time_s is 'abc', not a number", "steps is missing in a row without an error",
                                           "doc_id is {'a': 1}, not a string or integer", "turn is 'x', not an integer",
                                           "new_tokens is '10', not a number", "step_tokens is 'abc', not a list of numbers")):
        assert f"warning: {samples}:{line}: skipping a malformed row ({reason})" in result.output
    csv = pd.read_csv(tmp_path / "res" / "leaderboard.csv")
    assert list(csv["n"]) == [3, 2]  # the good rows, as if the bad ones were not there


@pytest.mark.parametrize("manifest_text,message", [("[1, 2]", "holds a JSON list, not an object"),
                                                   ('{"config": 5}', '"config" is 5, not an object')])
def test_cli_compare_and_report_of_a_wrongly_shaped_run_json(tmp_path, manifest_text, message):
    good = write_run(tmp_path / "runs", *RUN1)
    bad = write_run(tmp_path / "runs", manifest("r2", "m"), RUN1[1])
    (bad / "run.json").write_text(manifest_text)
    result = invoke("compare", str(good), str(bad))
    assert result.exit_code == 2 and f"error: {bad / 'run.json'}" in result.output and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = invoke("report", str(tmp_path / "runs"), "--out", str(tmp_path / "res"), "--no-plots", "--bootstrap", "0")
    assert result.exit_code == 0 and f"warning: {bad / 'run.json'}" in result.output and message in result.output


def test_cli_report_to_a_folder_below_a_file_is_one_line(tmp_path):
    write_run(tmp_path / "runs", *RUN1)
    (tmp_path / "somefile").write_text("x")
    result = invoke("report", str(tmp_path / "runs"), "--out", str(tmp_path / "somefile" / "sub"))
    assert result.exit_code == 2 and "cannot create the folder" in result.output and "Not a directory" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _report_writer(runs_dir, out, times):
    for _ in range(times):
        report([runs_dir], Path(out), command=f"harness report {runs_dir}", warn=lambda _: None, n_boot=20)


def _writers_named(text: str) -> set[str]:
    return set(re.findall(r"\bw(\d)m\d", text))


def test_concurrent_reports_on_one_out_leave_one_writers_complete_set(tmp_path):
    # three writers, each with its own runs (two models, so plot names carry the writer: w1m0-speedup.png)
    out = tmp_path / "res"
    out.mkdir()
    for w in range(3):
        for m in range(2):
            write_run(tmp_path / f"runs{w}", manifest(f"w{w}m{m}", "m", {"k": 4}, model=f"w{w}m{m}"), RUN1[1])
    writers = [multiprocessing.get_context("fork").Process(target=_report_writer, args=(tmp_path / f"runs{w}", out, 2))
               for w in range(3)]
    for p in writers:
        p.start()

    def snapshot():
        with report_lock(out, shared=True):
            return ((out / "leaderboard.csv").read_text(), (out / "report.md").read_text() + (out / "headline.md").read_text(),
                    " ".join(sorted(os.listdir(out / "plots"))))

    seen = []
    while any(p.is_alive() for p in writers):
        if (out / "report.md").exists():
            seen.append(snapshot())
        time.sleep(0.05)
    for p in writers:
        p.join()
        assert p.exitcode == 0
    seen.append(snapshot())
    for csv, md, plots in seen:  # whichever writer came last, the three agree on it
        (writer,) = _writers_named(csv)
        assert _writers_named(md) == _writers_named(plots) == {writer}
        assert plots.count(".png") == 12 and md.count("](plots/") == 12
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging folders left
