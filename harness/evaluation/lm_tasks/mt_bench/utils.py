"""MT-bench for the lm-eval task: DATA_DIR/mt_bench/question.jsonl (+ reference_answer/gpt-4.jsonl and
judge_prompts.jsonl for grading), else the hub's HuggingFaceH4/mt_bench_prompts (pinned in common.HUB). The model answers both
turns (harness.evaluation.lm_eval_model runs the conversation); with a judge each turn gets FastChat's 1-10 grade."""
import json
import os
from functools import lru_cache
from pathlib import Path

from harness import HarnessError
from harness.evaluation.judge import Judge, load_judge_prompts, load_references
from harness.evaluation.lm_tasks.common import dataset_dict, load_hub, local_file, mean_ignoring_nan, read_jsonl  # noqa: F401

NAN = float("nan")


def load(data_dir=None, judge_url=None, judge_model=None, **_):
    questions = local_file(data_dir, "mt_bench/question.jsonl", "mt_bench")
    prompts = ""
    if questions is not None:
        docs = read_jsonl(questions, ("question_id", "category", "turns"))
        ref_path = Path(data_dir).expanduser() / "mt_bench/reference_answer/gpt-4.jsonl"
        refs = load_references(ref_path) if ref_path.exists() else {}
        if judge_url:
            prompts = str(local_file(data_dir, "mt_bench/judge_prompts.jsonl", "mt_bench"))
            load_judge_prompts(prompts)  # malformed: the error now, not after generation
        rows = [_question(d, refs, f"{questions}: question {i}") for i, d in enumerate(docs, 1)]
    else:
        if judge_url:
            raise HarnessError("MT-bench grading needs FastChat's judge_prompts.jsonl: pass --data-dir DIR holding "
                               "mt_bench/judge_prompts.jsonl (README.md#data)")
        hub = load_hub("mt_bench")
        rows = [{"question_id": int(d["prompt_id"]), "category": d["category"], "turns": list(d["prompt"]),
                 "reference": [r for r in (d.get("reference") or []) if r]} for d in hub]
    for r in rows:
        if not isinstance(r["turns"], list) or len(r["turns"]) != 2 or not all(isinstance(t, str) for t in r["turns"]):
            raise HarnessError(f"mt_bench question {r['question_id']}: expected 2 user turns (a list of 2 strings)")
        r.update(judge_url=judge_url or "", judge_model=judge_model or "", judge_prompts=prompts)
    return dataset_dict({"test": rows})


def _question(d: dict, refs: dict, where: str) -> dict:
    try:
        qid = int(d["question_id"])
    except (TypeError, ValueError):
        raise HarnessError(f"{where}: question_id {d['question_id']!r} is not an integer") from None
    return {"question_id": qid, "category": str(d["category"]), "turns": d["turns"],
            "reference": refs.get(qid, d.get("reference") or [])}


@lru_cache(maxsize=4)
def _judge(url: str, model: str, prompts_path: str) -> Judge:
    return Judge(url, model, load_judge_prompts(prompts_path), api_key=os.environ.get("OPENAI_API_KEY"))


def process_results(doc, results):
    answers = json.loads(results[0])
    if not doc["judge_url"]:
        return {"judge_score": NAN, "judge_score_turn1": NAN, "judge_score_turn2": NAN}
    judge = _judge(doc["judge_url"], doc["judge_model"], doc["judge_prompts"])
    scores = [judge.grade(doc, answers, turn, doc["reference"] or None)["score"] for turn in (1, 2)]
    valid = [s for s in scores if s is not None]
    return {"judge_score": sum(valid) / len(valid) if valid else NAN,
            "judge_score_turn1": NAN if scores[0] is None else scores[0],
            "judge_score_turn2": NAN if scores[1] is None else scores[1]}
