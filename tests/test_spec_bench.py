"""Spec-Bench as a task: the stratified slice and category filter, GSM8K scoring of math_reasoning, every lossless method
token-identical to AR through the task, per-category leaderboard rows with replicates, and our Spec-Bench-style figures
against a direct re-implementation of Spec-Bench's evaluation/speed.py, on a hand-built data directory and tiny-random.
"""
from __future__ import annotations

import collections
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from harness import HarnessError
from harness.analysis.leaderboard import leaderboard, load_runs, make_runs, tag_samples
from harness.analysis.specbench import TOLERANCE, disagreement
from harness.analysis.specbench_tables import beside_published, category_tables
from harness.cli import main
from harness.engine.session import RunConfig
from harness.evaluation.lm_eval_model import build_task_dict, load_task, make_replay_lm, per_sample_scores
from harness.evaluation.lm_tasks.spec_bench import utils as sb
from harness.evaluation.names import check_task
from harness.evaluation.tasks import get_task
from methods import available_methods, get_method

LOSSLESS = sorted(n for n in available_methods() if n != "ar" and get_method(n).lossless)
SINGLE = [c for c in sb.GROUPS if c not in sb.MT_BENCH]


def question(qid: int, category: str, i: int) -> dict:
    """A short question of the category (two turns for MT-bench's), math_reasoning with a GSM8K solution."""
    if category in sb.MT_BENCH:
        return {"question_id": qid, "category": category, "turns": [f"Tell me about {category} {i}.", "Shorter."]}
    row = {"question_id": qid, "category": category, "turns": [f"{category} {i}: the cat sat on the mat."]}
    if category == "math_reasoning":
        row["reference"] = [f"{i} + 4 = <<{i}+4={i + 4}>>{i + 4}\n#### {i + 4}"]
    elif category == "rag":
        row["reference"] = [["a mat"]]  # as in Spec-Bench's file: lists of answers, no metric here
    return row


def write_questions(root, per_category: dict[str, int]):
    """A data directory whose spec_bench/question.jsonl holds per_category[c] questions of c, grouped by category
    (as Spec-Bench's file is)."""
    rows, qid = [], 81
    for category, n in per_category.items():
        for i in range(n):
            rows.append(question(qid, category, i))
            qid += 1
    path = root / "spec_bench" / "question.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture
def data_dir(tmp_path):
    return write_questions(tmp_path / "data", {c: 2 for c in sb.GROUPS})  # 13 categories, 2 each


def docs_of(task_name: str, data_dir, limit=None) -> list[dict]:
    cfg = RunConfig(method="ar", task=task_name, data_dir=str(data_dir), limit=limit)
    task = get_task(task_name)
    load_task(task, cfg)
    (lm_task,) = build_task_dict(task, cfg, chat=False)["tasks"].values()
    return list(lm_task.test_docs())[:limit]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ---- the task: stratified slice, category filter, scoring ----

def test_limit_takes_a_stratified_slice_of_every_category(data_dir):
    first = docs_of("spec_bench", data_dir, limit=13)
    assert sorted(d["subcategory"] for d in first) == sorted(sb.GROUPS)  # one of each of the 13
    both = docs_of("spec_bench", data_dir, limit=26)
    assert collections.Counter(d["subcategory"] for d in both) == {c: 2 for c in sb.GROUPS}
    assert {d["category"] for d in both} == set(sb.REPORTED)  # the reporting category, MT-bench's eight pooled
    assert all(len(d["turns"]) == (2 if d["subcategory"] in sb.MT_BENCH else 1) for d in both)


def test_the_planned_turns_are_those_of_the_loaded_documents(tmp_path):
    """--dry-run plans from the published file's shape; a file of that shape loads in the same order."""
    root = write_questions(tmp_path / "data", {c: n for c, (n, _) in sb.SIZES.items()})
    for subset, limit in [(None, 26), (None, 150), (None, None), ("mt_bench+rag", 25), ("translation", None)]:
        name = "spec_bench" + (f":{subset}" if subset else "")
        docs = docs_of(name, root, limit)
        assert sb.planned_turns(subset, limit) == [len(d["turns"]) for d in docs]
        assert get_task(name).generations(limit) == sum(len(d["turns"]) for d in docs)
    assert get_task("spec_bench").generations(None) == 80 * 2 + 400  # 480 questions, MT-bench's 80 with 2 turns


def test_a_category_filter_keeps_only_its_categories(data_dir):
    docs = docs_of("spec_bench:translation+rag", data_dir)
    assert [d["subcategory"] for d in docs] == ["translation", "rag", "translation", "rag"]
    assert {d["subcategory"] for d in docs_of("spec_bench:mt_bench", data_dir)} == set(sb.MT_BENCH)
    assert {d["subcategory"] for d in docs_of("spec_bench:writing+qa", data_dir)} == {"writing", "qa"}
    assert get_task("spec_bench:translation+rag").name == "spec_bench:translation+rag"


@pytest.mark.parametrize("name,message", [
    ("spec_bench:translaton", "no category 'translaton'; did you mean 'translation'?"),
    ("spec_bench:", "nothing after ':'"),
    ("gsm8k:rag", "task gsm8k has no parts to select"),
    ("spec_bnch:rag", "did you mean 'spec_bench'"),
])
def test_a_bad_filter_is_one_clear_error(name, message):
    with pytest.raises(HarnessError, match=message):
        check_task(name)
        get_task(name)


def test_math_reasoning_is_scored_as_gsm8k_and_the_other_categories_have_no_metric(data_dir, write_gsm8k, tmp_path):
    docs = docs_of("spec_bench", data_dir)
    math = [d for d in docs if d["subcategory"] == "math_reasoning"]
    answers = ["4 + 0 = 4. The answer is 4.", "So she pays $1,000."]  # right for i=0, wrong for i=1 (5)
    # lm-eval's own gsm8k task scores the same answers to the same questions identically
    gsm_root = write_gsm8k(tmp_path / "gsm", [{"question": d["turns"][0], "answer": d["answer"]} for d in math])
    cfg = RunConfig(method="ar", task="gsm8k", data_dir=str(gsm_root), num_fewshot=0)
    gsm = get_task("gsm8k")
    load_task(gsm, cfg)
    from lm_eval.evaluator import evaluate

    results = evaluate(make_replay_lm({(str(i), 1): a for i, a in enumerate(answers)}),
                       build_task_dict(gsm, cfg, chat=False), log_samples=True, bootstrap_iters=0)
    theirs = [per_sample_scores(results)[str(i)]["exact_match,flexible-extract"] for i in range(2)]
    ours = [sb.process_results(d, [json.dumps([a])])["gsm8k_exact_match"] for d, a in zip(math, answers)]
    assert ours == theirs == [1.0, 0.0]
    others = [d for d in docs if d["subcategory"] != "math_reasoning"]
    assert all(np.isnan(sb.process_results(d, [json.dumps(["4"] * len(d["turns"]))])["gsm8k_exact_match"])
               for d in others)


# ---- runs on tiny-random ----

def test_run_records_categories_and_reports_per_category(data_dir, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--method", "speculative", "-O", "draft=ngram", "--task", "spec_bench", "--limit", "13",
                    "--model", "tiny-random", "--max-new-tokens", "6", "--data-dir", str(data_dir), "--runs-dir", str(out))
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * (8 * 2 + 5)  # both sides; MT-bench's eight with 2 turns, the five others with 1
    assert collections.Counter(r["category"] for r in rows if r["method"] == "ar") == {
        "mt_bench": 16, **{c: 1 for c in SINGLE}}
    assert {r["turn"] for r in rows if r["category"] == "mt_bench"} == {1, 2}
    assert {r["max_new_tokens"] for r in rows} == {6}
    summary = json.loads((run_dir / "summary.json").read_text())
    cats = summary["methods"]["speculative"]["categories"]
    assert set(cats) == set(sb.REPORTED) and all(c["lossless_rate"] == 1.0 for c in cats.values())
    assert cats["math_reasoning"]["accuracy"] is not None
    assert all(cats[c]["accuracy"] is None for c in cats if c != "math_reasoning")  # no metric, not 0
    assert "per category" in result.output and "no metric" in result.output


def test_the_default_budget_is_spec_bench_s_1024_per_turn(data_dir):
    cfg = RunConfig(method="ar", task="spec_bench", data_dir=str(data_dir))
    task = get_task("spec_bench")
    load_task(task, cfg)
    (lm_task,) = build_task_dict(task, cfg, chat=True)["tasks"].values()
    kwargs = lm_task.config.generation_kwargs
    assert kwargs["max_gen_toks"] == 1024 and kwargs["multi_turn"] and not kwargs["do_sample"]


@pytest.mark.parametrize("method", LOSSLESS)
def test_every_lossless_method_is_token_identical_to_ar_on_spec_bench(method, data_dir, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--method", method, "--task", "spec_bench", "--limit", "13", "--model", "tiny-random",
                    "--max-new-tokens", "12", "--data-dir", str(data_dir), "--runs-dir", str(out))
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    sha = {(r["method"], r["doc_id"], r["turn"]): r["output_sha1"] for r in rows}
    keys = {(d, t) for m, d, t in sha if m == "ar"}
    assert len(keys) == 21 and all(sha[(method, d, t)] == sha[("ar", d, t)] for d, t in keys)


def test_bench_with_repeats_gives_per_category_rows_with_a_spread(data_dir, tmp_path):
    result = invoke("bench", "--tasks", "spec_bench:writing+translation+math_reasoning", "--methods", "jacobi:block_size=2",
                    "--model", "tiny-random", "--limit", "6", "--max-new-tokens", "4", "--repeats", "2",
                    "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "res"),
                    "--bootstrap", "50", "--no-plots")
    assert result.exit_code == 0, result.output
    board = pd.read_csv(tmp_path / "res" / "leaderboard.csv")
    jacobi = board[(board["method"] == "jacobi") & (board["turn"] == "all")].set_index("category")
    assert set(jacobi.index) == {"all", "mt_bench", "translation", "math_reasoning"}
    assert (jacobi["n_runs"] == 2).all() and jacobi["specbench_speedup_sd"].notna().all()
    assert jacobi.loc["mt_bench", "n"] == 2 * 2 * 2  # 2 writing questions x 2 turns x 2 runs
    assert jacobi.loc["all", "n"] == jacobi.drop("all")["n"].sum()
    acc = jacobi["accuracy"]
    assert acc.notna()["math_reasoning"] and acc.isna()["mt_bench"] and acc.isna()["translation"]
    report = (tmp_path / "res" / "report.md").read_text()
    assert "#### mt_bench" in report and "speedup, Spec-Bench's" in report and "no metric" in report
    assert "Leaderboard.md at fd2c1cd7" in (tmp_path / "res" / "headline.md").read_text()


# ---- Spec-Bench's figures against its evaluation/speed.py ----

class Tokenized:
    def __init__(self, ids):
        self.input_ids = ids


MT_BENCH = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


def speed_py(answers, base_answers, tokenizer, task=None):
    """Spec-Bench's evaluation/speed.py formulas (hemingkx/Spec-Bench at fd2c1cd7), written afresh for this test from
    its definitions: per answer, tokens / wall time summed over its turns; speedup = the mean of the method's
    per-answer tok/s over the mean of the baseline's; the baseline's tokens are re-counted from its text (its
    tokenizer's length minus the BOS); accept lengths pooled over every step. `task`: a category, "mt_bench" (its
    eight categories) or "overall". Returns (method tok/s, baseline tok/s, speedup, accept lengths)."""
    def chosen(rows):
        if task == "overall":
            return rows
        return [r for r in rows if (r["category"] in MT_BENCH if task == "mt_bench" else r["category"] == task)]

    mine = [r["choices"][0] for r in chosen(answers)]
    base = [r["choices"][0] for r in chosen(base_answers)]
    tps = np.mean([sum(c["new_tokens"]) / sum(c["wall_time"]) for c in mine])
    tps0 = np.mean([sum(len(tokenizer(t).input_ids) - 1 for t in c["turns"]) / sum(c["wall_time"]) for c in base])
    return tps, tps0, tps / tps0, [n for c in mine for n in c["accept_lengths"]]


def mean_report(runs: list[tuple[list, list]], tokenizer, task):
    """speed.py's `get_mean_speedup` for one task: means over runs, speedup's standard deviation (ddof 1)."""
    tps, tps0, ratios, accept = [], [], [], []
    for method_file, base_file in runs:
        a, b, r, lengths = speed_py(method_file, base_file, tokenizer, task=task)
        tps.append(a)
        tps0.append(b)
        ratios.append(r)
        accept.extend(lengths)
    return {"specbench_mean_accepted": np.mean(accept), "specbench_tokens_per_s": np.mean(tps),
            "specbench_ar_tokens_per_s": np.mean(tps0), "specbench_speedup": np.mean(ratios),
            "specbench_speedup_sd": np.std(ratios, ddof=1)}


def hand_built(seed: int = 0):
    """Two replicate runs of speculative vs AR on 9 questions (MT-bench's with 2 turns): our samples rows, and the same
    answers as Spec-Bench's answer files ({"category", "choices": [{"turns", "new_tokens", "wall_time",
    "accept_lengths"}]}). Answer lengths and speeds vary widely, so the two definitions of speedup differ."""
    rng = np.random.default_rng(seed)
    questions = [("writing", 2), ("math", 2), ("coding", 2), ("translation", 1), ("translation", 1), ("qa", 1),
                 ("rag", 1), ("math_reasoning", 1), ("summarization", 1)]
    runs, samples, answer_files = [], [], []
    for run_id in ("r1", "r2"):
        run = {"run_id": run_id, "model": "m", "task": "spec_bench", "hardware": "hw", "method": "speculative",
               "method_options": {"draft": "ngram"}, "metric": None, "created": run_id, "commit": "c", "dirty": False,
               "versions": "v", "dtype": "float32", "max_new_tokens": "default", "num_fewshot": "default",
               "chat_template": "true", "device": "cpu", "engine": "eager", "batch_size": "1", "path": run_id,
               "replicate": int(run_id[1])}
        runs.append(run)
        rows, files = [], {"speculative": [], "ar": []}
        for doc, (category, turns) in enumerate(questions):
            n = [int(rng.integers(3, 200)) for _ in range(turns)]  # both lossless: the same lengths
            for method in ("speculative", "ar"):
                choice = {"turns": [], "new_tokens": [], "wall_time": [], "accept_lengths": []}
                for turn in range(1, turns + 1):
                    steps = [1] * n[turn - 1] if method == "ar" else split(n[turn - 1], rng)
                    wall = float(0.05 + n[turn - 1] * rng.uniform(0.01, 0.03) / (2.0 if method != "ar" else 1.0))
                    rows.append({"method": method, "doc_id": str(doc), "turn": turn, "category": sb.GROUPS[category],
                                 "new_tokens": n[turn - 1], "steps": len(steps), "step_tokens": steps,
                                 "wall_time_s": wall, "error": None, "output_sha1": f"{doc}-{turn}",
                                 "stop_reason": "eos"})
                    choice["turns"].append(list(range(n[turn - 1])))  # the answer as token ids
                    choice["new_tokens"].append(n[turn - 1])
                    choice["wall_time"].append(wall)
                    choice["accept_lengths"].extend(steps)
                files[method].append({"category": category, "choices": [choice]})
        samples += tag_samples(run, rows)
        answer_files.append((files["speculative"], files["ar"]))
    return make_runs(runs, samples, []), answer_files


def split(n: int, rng) -> list[int]:
    """n tokens as steps committing 1 to 4 tokens each."""
    out = []
    while n > 0:
        out.append(min(n, int(rng.integers(1, 5))))
        n -= out[-1]
    return out


def test_our_spec_bench_figures_equal_speed_py_on_hand_built_rows():
    runs, answer_files = hand_built()
    board = leaderboard(runs, n_boot=0)
    mine = board[(board["method"] == "speculative") & (board["turn"] == "all")].set_index("category")
    tokenizer = lambda ids: Tokenized([0, *ids])  # noqa: E731  (BOS + the answer's tokens, as speed.py counts them)
    for category in [*sb.REPORTED, "all"]:
        theirs = mean_report(answer_files, tokenizer, "overall" if category == "all" else category)
        for name, value in theirs.items():
            assert mine.loc[category, name] == pytest.approx(value, rel=1e-12), (category, name)
        assert mine.loc[category, "specbench_mean_accepted"] == pytest.approx(mine.loc[category, "tokens_per_step"])
    ar = board[(board["method"] == "ar") & (board["turn"] == "all")].set_index("category")
    assert (ar["specbench_speedup"] == 1.0).all() and (ar["specbench_mean_accepted"] == 1.0).all()
    # the two definitions differ on these rows, and the report says so where it is more than 5%
    differ = mine[(mine["specbench_speedup"] / mine["speedup"] - 1).abs() > TOLERANCE]
    assert len(differ) and all(disagreement(r) for _, r in differ.iterrows())
    table = "\n".join(category_tables(board[board["turn"] == "all"].assign(label=board["method"])))
    assert all(f"`speculative`, {c}: Spec-Bench's speedup" in table for c in differ.index)
    agree = mine[(mine["specbench_speedup"] / mine["speedup"] - 1).abs() <= TOLERANCE]
    assert all(disagreement(r) is None for _, r in agree.iterrows())
    assert all(f"`speculative`, {c}:" not in table for c in agree.index)


def test_published_figures_are_set_beside_our_nearest_rows():
    runs, _ = hand_built()
    board = leaderboard(runs, n_boot=0)
    rows = board[board["turn"] == "all"].assign(label="speculative draft=ngram")
    text = "\n".join(beside_published(rows, "m", "hw"))
    pld = [line for line in text.splitlines() if line.startswith("| PLD")]
    assert len(pld) == 3 and "A100" in pld[0] and "3090" in pld[1] and "`speculative draft=ngram`" in pld[2]
    assert "| 1.60× | 1.06× | 2.66× | 1.19× | 1.62× | 1.86× | 1.66× | 1.75 |" in pld[0]  # Leaderboard.md, A100
    assert "SpS ≈ `speculative` with a draft model" in text and "not run" in text  # no draft-model row here
    assert "EAGLE" in text and "Medusa" in text


def test_a_task_without_categories_gets_no_category_rows(tmp_path, write_gsm8k):
    root = write_gsm8k(tmp_path / "data", [{"question": f"{i} + 1?", "answer": f"#### {i + 1}"} for i in range(2)])
    out = tmp_path / "runs"
    result = invoke("run", "--method", "jacobi", "--task", "gsm8k", "--model", "tiny-random", "--num-fewshot", "0",
                    "--max-new-tokens", "4", "--data-dir", str(root), "--runs-dir", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in next(out.iterdir()).joinpath("samples.jsonl").read_text().splitlines()]
    assert all("category" not in r for r in rows) and "per category" not in result.output
    board = leaderboard(load_runs([out]), n_boot=0)
    assert set(board["category"]) == {"all"} and board["specbench_speedup"].notna().all()
