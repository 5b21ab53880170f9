"""lm-evaluation-harness glue: our decoders behind lm-eval's `LM` interface, the shipped task configs
(harness/evaluation/lm_tasks), and per-sample scores for the method and its AR baseline.

    evaluate_task(task, session, run_dir)   # generate (paired with AR), score both, write scores.jsonl
lm-eval builds the prompts and applies its filters and metrics; `HarnessLM.generate_until` runs one
request at a time through the runner's session. AR's outputs are scored by replaying them (`ReplayLM`).
"""
from __future__ import annotations

import importlib
import itertools
import json
import logging
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness import HarnessError
from harness.engine.generate import Stopper
from harness.evaluation.lm_tasks import TASKS_DIR
from harness.evaluation.names import split_task
from harness.engine.records import SAMPLES, SCORES, read_samples, row_problem, write_jsonl_atomic
from harness.engine.session import Request
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

log = logging.getLogger(__name__)
LM_EVAL_NAME = "parallel-decoding"  # `lm_eval --model parallel-decoding` once this module is imported
MULTI_TURN = "multi_turn"  # a generation_kwargs flag: the doc's "turns" are a conversation (MT-bench)
BY_CATEGORY = "by_category"  # a generation_kwargs flag: the doc's "category" goes on its samples rows (Spec-Bench)


def _quiet_lm_eval() -> None:
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in ("lm_eval", "lm-eval", "datasets"):
            logging.getLogger(name).setLevel(logging.ERROR)


def dataset_kwargs(cfg) -> dict:
    """What the task's loader is given: the data settings, and the part of the task selected (`TASK:SUBSET`)."""
    subset = split_task(cfg.task)[1] if cfg.task else None
    return {"data_dir": cfg.data_dir, "judge_url": cfg.judge_url, "judge_model": cfg.judge_model, "subset": subset}


def load_task(task, cfg) -> None:
    """Read and check the task's data now, so that missing or malformed files fail before the model loads."""
    utils = importlib.import_module(f"harness.evaluation.lm_tasks.{task.module}.utils")
    data = utils.load(**dataset_kwargs(cfg))
    if task.split not in data or len(data[task.split]) == 0:
        raise HarnessError(f"task {task.name}: its {task.split} split holds no examples ({task.locate(cfg.data_dir)})")
    task.skipped = utils.skipped(**dataset_kwargs(cfg)) if hasattr(utils, "skipped") else {}
    task.n_docs = min(len(data[task.split]), cfg.limit or len(data[task.split]))
    if bool(cfg.judge_url) != bool(cfg.judge_model):
        raise HarnessError("give --judge-url and --judge-model together (an OpenAI-compatible endpoint and its model)")


def build_task_dict(task, cfg, chat: bool) -> dict:
    """lm-eval's task dict for the raw or chat variant; the data settings reach the task's loader
    (`custom_dataset`) as TaskManager metadata."""
    from lm_eval.tasks import TaskManager

    _quiet_lm_eval()
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=dataset_kwargs(cfg))
    task_dict = manager.load([task.lm_eval_name(chat)])
    for t in task_dict["tasks"].values():
        if cfg.num_fewshot is not None:
            t.set_config(key="num_fewshot", value=cfg.num_fewshot)
        t.set_fewshot_seed(cfg.seed)
        shots = t.config.num_fewshot or 0
        pool = len(t.fewshot_docs() or ()) if shots else 0
        if pool < shots:
            raise HarnessError(f"task {task.name}: {shots} few-shot examples asked for, but its "
                               f"{t.config.fewshot_split or 'few-shot'} split holds {pool}; pass --num-fewshot {pool} or fewer")
    return task_dict


def _generative_only(*_):
    raise HarnessError("the harness's lm-eval model runs generative tasks only (generate_until); "
                       "loglikelihood tasks need lm-eval's own hf model")


def _temperature(gen_kwargs: dict) -> float | None:
    t = float(gen_kwargs.get("temperature") or 0.0)
    return t if t > 0 and gen_kwargs.get("do_sample", True) else None


RUN_ARGS = ("model", "method", "device", "dtype", "seed", "chat_template", "max_new_tokens")


def standalone_session(batch_size=None, max_batch_size=None, **model_args):
    """The session behind `lm_eval --model parallel-decoding --model_args model=...,method=...,KEY=VALUE`: the
    method alone (no AR pairing) on a freshly loaded model, nothing written to disk. Keys other than RUN_ARGS
    are the method's options (block_size=16, draft=ngram, ...)."""
    from harness.engine.models import load_model
    from harness.engine.session import RunConfig, Session

    if str(batch_size or 1) not in ("1", "auto") or str(max_batch_size or 1) != "1":
        raise HarnessError(f"model {LM_EVAL_NAME} decodes one request at a time; leave out --batch_size {batch_size}")
    text = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
    run = {k: v for k, v in model_args.items() if k in RUN_ARGS}
    options = {k: text(v) for k, v in model_args.items() if k not in RUN_ARGS}
    cfg = RunConfig(method=run.get("method", "ar"), model=run.get("model", "smollm2-135m"),
                    device=run.get("device", "auto"), dtype=run.get("dtype", "auto"), seed=int(run.get("seed", 0)),
                    chat_template=text(run.get("chat_template", True)) in ("true", "1", "yes"),
                    max_new_tokens=int(run["max_new_tokens"]) if run.get("max_new_tokens") else None,
                    options=options)
    return Session(cfg, load_model(cfg.model, cfg.device, cfg.dtype, seed=cfg.seed), paired=False)


@register_model(LM_EVAL_NAME)
class HarnessLM(LM):
    """lm-eval model: each request runs the method (and, in a harness run, AR) through a session, one
    request at a time in order, and returns the method's text.

    In `harness run` the session is the run's (paired with AR, recorded); from lm-eval's own front ends the
    model is built from its arguments, `--model_args model=smollm2-135m,method=jacobi,block_size=16`
    (see `standalone_session`)."""

    loglikelihood = loglikelihood_rolling = _generative_only

    def __init__(self, session=None, **model_args):
        super().__init__()
        self.session = session if session is not None else standalone_session(**model_args)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> HarnessLM:
        """lm-eval's constructor from `--model_args`; its own --device/--batch_size arrive in additional_config.
        A device in model_args wins; lm-eval's default device (cuda) is used only where CUDA exists."""
        args = dict(arg_dict)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if "device" in extra and "device" not in args and (not str(extra["device"]).startswith("cuda")
                                                           or torch.cuda.is_available()):
            args["device"] = extra["device"]
        return cls(**args, batch_size=extra.get("batch_size"), max_batch_size=extra.get("max_batch_size"))

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> HarnessLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string or ""), additional_config)

    def _prepare(self, doc_id: str, messages: list[dict], gen_kwargs: dict, doc: dict | None = None):
        from harness.engine.session import Prepared, check_room, encode

        s = self.session
        ids = encode(s.lm, messages, s.chat)
        room = check_room(s.lm, ids, doc_id)
        budget = s.cfg.max_new_tokens or int(gen_kwargs.get("max_gen_toks", 256))
        until = gen_kwargs.get("until") or ()
        until = (until,) if isinstance(until, str) else tuple(until)
        if not s.chat and gen_kwargs.get(MULTI_TURN):
            until += ("\nUser:",)  # the plain-text conversation format's next turn
        stopper = Stopper(s.eos, until, s.lm.tokenizer)
        category = str(doc["category"]) if gen_kwargs.get(BY_CATEGORY) and doc else None
        return Prepared(Request(doc_id, messages[-1]["content"], category=category),
                        torch.tensor([ids], device=s.lm.device), min(budget, room), stopper)

    def _later_turns(self, request, first) -> int:
        """The positions a conversation's later turns may add to its first prompt: every later question with its
        markup, and each earlier answer at the full token budget (0 for a single-turn request)."""
        from harness.engine.session import encode

        questions = request.doc["turns"] if request.args[1].get(MULTI_TURN) else []
        if len(questions) < 2:
            return 0
        messages = []
        for q in questions:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": ""}]
        whole = len(encode(self.session.lm, messages[:-1], self.session.chat))
        return whole - first.input_ids.shape[1] + (len(questions) - 1) * first.max_new_tokens

    def generate_until(self, requests, disable_tqdm: bool = False):
        s, method = self.session, self.session.cfg.method
        # 1. Every first-turn prompt is encoded and checked before any generation.
        firsts = [self._prepare(str(r.doc_id), [{"role": "user", "content": r.args[0]}], r.args[1], r.doc)
                  for r in requests]
        # Each (request, turn) has a fixed index in the task, which seeds it and sets who goes first.
        turns = [len(r.doc["turns"]) if r.args[1].get(MULTI_TURN) else 1 for r in requests]
        s.fit_cache(firsts, [self._later_turns(r, first) for r, first in zip(requests, firsts)])
        starts = [0, *itertools.accumulate(turns)][:-1]
        bar = tqdm(total=len(requests), desc=" vs ".join(s.names), unit="req", disable=disable_tqdm)
        if s.cfg.batch_size > 1:
            return self._generate_batches(requests, firsts, starts, bar)
        out = []
        for position, (r, first, start) in enumerate(zip(requests, firsts, starts)):
            gen_kwargs, doc_id = r.args[1], str(r.doc_id)
            if not s.owns(position):  # another process's request (a data-parallel run): not generated here
                out.append("")
                continue
            temperature = _temperature(gen_kwargs)
            if not gen_kwargs.get(MULTI_TURN):
                out.append(s.run_pair(first, start, 1, temperature, bar)[method]["output"] or "")
                bar.update()
                continue
            # 2. A conversation: each later turn is conditioned on the method's own earlier answers.
            messages, answers = [], []
            for turn, question in enumerate(r.doc["turns"], 1):
                messages.append({"role": "user", "content": question})
                p = first if turn == 1 else self._prepare(doc_id, messages, gen_kwargs, r.doc)
                # who goes first alternates per conversation, not per turn: turn 2 copies turn 1, and an order
                # tied to the turn would credit that to whichever side went first on it
                answer = s.run_pair(p, start + turn - 1, turn, temperature, bar, first=position)[method]["output"] or ""
                answers.append(answer)
                messages.append({"role": "assistant", "content": answer})
            out.append(json.dumps(answers))
            bar.update()
        bar.close()
        return out


    def _generate_batches(self, requests, firsts, starts, bar) -> list[str]:
        """--batch-size B: consecutive requests B at a time (a batch also ends where the temperature changes),
        batch k holding the requests k*B ... in the task's order, so that a resumed run forms the same batches."""
        s, B = self.session, self.session.cfg.batch_size
        out = [""] * len(requests)
        for b, i in enumerate(range(0, len(requests), B)):
            ix = list(range(i, min(i + B, len(requests))))
            if any(requests[j].args[1].get(MULTI_TURN) for j in ix):
                raise HarnessError("--batch-size > 1 runs single-turn tasks only; run mt_bench with --batch-size 1")
            for temperature in dict.fromkeys(_temperature(requests[j].args[1]) for j in ix):
                group = [j for j in ix if _temperature(requests[j].args[1]) == temperature]
                rows = s.run_batch([firsts[j] for j in group], [starts[j] for j in group], b, 1, temperature, bar)
                for j, row in zip(group, rows):
                    out[j] = row[s.cfg.method]["output"] or ""
            bar.update(len(ix))
        bar.close()
        return out


def make_replay_lm(outputs: dict[tuple[str, int], str]):
    class ReplayLM(LM):
        """lm-eval model that returns recorded outputs (AR's), so that they are scored exactly as the method's."""

        loglikelihood = loglikelihood_rolling = _generative_only

        def generate_until(self, requests, disable_tqdm: bool = False):
            out = []
            for r in requests:
                doc_id = str(r.doc_id)
                if r.args[1].get(MULTI_TURN):
                    out.append(json.dumps([outputs.get((doc_id, t)) or "" for t in range(1, len(r.doc["turns"]) + 1)]))
                else:
                    out.append(outputs.get((doc_id, 1)) or "")
            return out

    return ReplayLM()


def per_sample_scores(results: dict) -> dict[str, dict[str, float]]:
    """{doc_id: {"metric,filter": value}} from lm-eval's logged samples."""
    out: dict[str, dict[str, float]] = {}
    for samples in (results.get("samples") or {}).values():
        for sample in samples:
            scores = out.setdefault(str(sample["doc_id"]), {})
            for metric in sample["metrics"]:
                value = sample[metric]
                scores[f"{metric},{sample['filter']}"] = None if value is None or (
                    isinstance(value, float) and math.isnan(value)) else float(value)
    return out


def _scorer(task, session):
    from lm_eval.evaluator import evaluate

    cfg = session.cfg

    def score(lm) -> dict:
        results = evaluate(lm, build_task_dict(task, cfg, session.chat), limit=cfg.limit, log_samples=True,
                           bootstrap_iters=0, confirm_run_unsafe_code=True)  # humaneval runs in harness.evaluation.sandbox
        return per_sample_scores(results)
    return score


def evaluate_task(task, session, run_dir: Path) -> None:
    """Generate (the method and AR, paired) and score both into scores.jsonl; in a data-parallel run,
    generate this process's share only: rank 0 scores the merged outputs afterwards (`score_recorded`)."""
    if session.proc.distributed:
        return generate_only(task, session)
    score, cfg = _scorer(task, session), session.cfg
    # 1. Generation (the method and AR, paired), scoring the method's outputs.
    rows = [{"method": cfg.method, "doc_id": d, "scores": v} for d, v in score(HarnessLM(session)).items()]
    # 2. The other methods' (AR's) recorded outputs, through the same prompts, filters and metrics.
    for name in session.names[1:]:
        outputs = {(doc_id, turn): row["output"] for (m, doc_id, turn), row in session.done.items() if m == name}
        rows += [{"method": name, "doc_id": d, "scores": v} for d, v in score(make_replay_lm(outputs)).items()]
    write_jsonl_atomic(run_dir / SCORES, rows)


def generate_only(task, session) -> None:
    """The requests lm-eval's `evaluate` would send, in the same order, through the session (which runs the
    ones its process owns), without scoring."""
    from lm_eval.evaluator_utils import get_sample_size

    instances = []
    for t in build_task_dict(task, session.cfg, session.chat)["tasks"].values():
        t.build_all_requests(limit=get_sample_size(t, session.cfg.limit))
        instances += [r for r in t.instances for _ in range(r.repeats)]
    HarnessLM(session).generate_until(instances)


def score_recorded(task, session, run_dir: Path) -> None:
    """scores.jsonl from the outputs in run_dir's samples.jsonl, every method replayed through lm-eval's
    prompts, filters and metrics (what `evaluate_task` gives when it generates in one process)."""
    score = _scorer(task, session)
    outputs: dict[str, dict] = {name: {} for name in session.names}
    for r in read_samples(run_dir / SAMPLES, check=row_problem):
        if r["method"] in outputs:
            outputs[r["method"]][(str(r["doc_id"]), r.get("turn") or 1)] = r["output"]
    rows = [{"method": name, "doc_id": d, "scores": v}
            for name in session.names for d, v in score(make_replay_lm(outputs[name])).items()]
    write_jsonl_atomic(run_dir / SCORES, rows)
