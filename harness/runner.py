"""The paired-timing runner behind `harness run`.

    run_dir = run(RunConfig(method="jacobi", task="humaneval", limit=5))
For each request it runs the method and the AR baseline back to back (alternating which goes first),
after an untimed warm-up, and appends one samples row per request per method as it goes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness import HarnessError
from harness.generate import Stopper, generate
from harness.models import LoadedModel, load_model
from harness.records import (MANIFEST, SAMPLES, SUMMARY, SampleWriter, git_commit, hardware, new_run_id,
                             read_json, read_samples, versions, write_json_atomic)
from harness.summary import BASELINE, format_table, summarize
from harness.tasks import Request, get_task
from methods import available_methods, get_method
from methods.base import Decoder, OptionError

log = logging.getLogger(__name__)
WARMUP_TOKENS = 16


@dataclass(frozen=True)
class RunConfig:
    method: str
    task: str | None = None
    prompts: str | None = None
    model: str = "smollm2-135m"
    device: str = "auto"
    dtype: str = "auto"
    limit: int | None = None
    max_new_tokens: int = 128
    seed: int = 0
    options: dict = field(default_factory=dict)  # the method's -O key=value strings
    output_dir: str = "results/runs"
    chat_template: bool = True  # apply the model's chat template when it has one

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise HarnessError(f"--limit must be at least 1 (got {self.limit}); leave it out to run every prompt")
        if self.max_new_tokens < 1:
            raise HarnessError(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens})")


@dataclass
class Prepared:
    request: Request
    input_ids: torch.Tensor  # (1, T)
    max_new_tokens: int
    stopper: Stopper


def build_decoder(name: str, options: dict[str, str], model) -> tuple[Decoder, dict]:
    cls = get_method(name)
    try:
        opts = cls.parse_options(options)
        return cls(model, opts), dataclasses.asdict(opts)
    except (OptionError, ValueError) as e:  # bad options, or ones the decoder rejects when it sets up
        raise HarnessError(f"method {name}: {e}") from None


def eos_ids(lm: LoadedModel) -> frozenset[int]:
    ids = set()
    for src in (lm.tokenizer.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(src)
    return frozenset(ids)


def prepare(lm: LoadedModel, requests: list[Request], cfg: RunConfig) -> list[Prepared]:
    """Tokenize every prompt up front, so that a prompt too long for the model fails before any work."""
    chat = lm.chat and cfg.chat_template
    eos = eos_ids(lm)
    out = []
    for req in requests:
        if chat:
            msgs = [{"role": "user", "content": req.chat_prompt or req.prompt}]
            text = lm.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = lm.tokenizer(req.prompt)["input_ids"]
        if not ids:
            raise HarnessError(f"request {req.doc_id}: the prompt is empty")
        room = lm.context_length - len(ids)
        if room < 1:
            raise HarnessError(f"request {req.doc_id}: the prompt has {len(ids)} tokens but the model's context "
                               f"is {lm.context_length}; shorten the prompt or use a model with a longer context")
        stopper = Stopper(eos, req.chat_stop if chat else req.stop, lm.tokenizer)
        input_ids = torch.tensor([ids], device=lm.device)
        out.append(Prepared(req, input_ids, min(cfg.max_new_tokens, room), stopper))
    return out


def run_one(decoder: Decoder, name: str, p: Prepared, cfg: RunConfig, seed: int, order: int) -> dict:
    row = {"method": name, "task": cfg.task or cfg.prompts, "doc_id": p.request.doc_id, "order": order,
           "prompt_tokens": int(p.input_ids.shape[1]), "max_new_tokens": p.max_new_tokens, "seed": seed,
           "new_tokens": None, "steps": None, "tokens_per_step": None, "wall_time_s": None, "tokens_per_s": None,
           "ttft_s": None, "stop_reason": None, "drafted_tokens": None, "accepted_tokens": None,
           "draft_forwards": None, "step_tokens": None, "step_drafted": None, "step_accepted": None,
           "step_draft_forwards": None, "output_sha1": None, "output": None, "error": None}
    torch.manual_seed(seed)
    try:
        g = generate(decoder, p.input_ids, p.max_new_tokens, p.stopper)
    except Exception as e:  # one request failing must not end the run: the row records it
        log.warning("%s on %s failed: %s: %s", name, p.request.doc_id, type(e).__name__, e)
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    new = len(g.tokens)
    row.update(new_tokens=new, steps=len(g.step_tokens), tokens_per_step=new / len(g.step_tokens),
               wall_time_s=g.wall_time_s, tokens_per_s=new / g.wall_time_s, ttft_s=g.ttft_s,
               stop_reason=g.stop_reason, drafted_tokens=g.drafted, accepted_tokens=g.accepted,
               draft_forwards=g.draft_forwards, step_tokens=g.step_tokens, step_drafted=g.step_drafted,
               step_accepted=g.step_accepted, step_draft_forwards=g.step_draft_forwards,
               output_sha1=hashlib.sha1(",".join(map(str, g.tokens)).encode()).hexdigest(),
               output=p.stopper.text(g.tokens))
    return row


def manifest(cfg: RunConfig, run_id: str, lm: LoadedModel, task, method_options: dict) -> dict:
    spec = available_methods()[cfg.method]
    return {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": dataclasses.asdict(cfg), "versions": versions(), "git": git_commit(),
            "hardware": hardware(lm.device), "model": lm.describe(), "task": task.describe(),
            "method": {"name": cfg.method, "origin": spec.origin, "target": spec.target, "options": method_options},
            "baseline": BASELINE, "limit": cfg.limit, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens}


def write_summary(run_dir: Path, info: dict) -> dict:
    summary = {"model": info["model"]["name"], "task": info["task"]["name"], "hardware": info["hardware"]["label"],
               "speedup_definition": "sum(ar wall_time_s) / sum(method wall_time_s) over paired requests",
               "methods": summarize(read_samples(run_dir / SAMPLES))}
    write_json_atomic(run_dir / SUMMARY, summary)
    return summary


def run(cfg: RunConfig, resume: str | None = None, echo=print) -> Path:
    # 1. Cheap checks first: method, options, task and prompts, before the model loads.
    get_method(cfg.method)
    task = get_task(cfg.task, cfg.prompts)
    requests = task.requests(cfg.limit)
    out_dir = Path(cfg.output_dir)
    run_id = resume or new_run_id()
    run_dir = out_dir / run_id
    if resume and not (run_dir / MANIFEST).exists():
        raise HarnessError(f"no run {resume!r} under {out_dir} to resume (looked for {run_dir / MANIFEST})")

    lm = load_model(cfg.model, cfg.device, cfg.dtype, seed=cfg.seed)
    decoders = {cfg.method: build_decoder(cfg.method, cfg.options, lm.model)}
    if cfg.method != BASELINE:
        # a sampling method is paired with AR sampling at the same temperature
        base_options = {"temperature": cfg.options["temperature"]} if "temperature" in cfg.options else {}
        decoders[BASELINE] = build_decoder(BASELINE, base_options, lm.model)
    prepared = prepare(lm, requests, cfg)

    # 2. The run folder: conditions in run.json, rows appended to samples.jsonl.
    if resume:
        info = read_json(run_dir / MANIFEST)
    else:
        run_dir.mkdir(parents=True, exist_ok=False)
        info = manifest(cfg, run_id, lm, task, decoders[cfg.method][1])
        write_json_atomic(run_dir / MANIFEST, info)
    done = {(r["method"], r["doc_id"]) for r in read_samples(run_dir / SAMPLES, repair=True)}
    todo = [(i, p) for i, p in enumerate(prepared) if any((m, p.request.doc_id) not in done for m in decoders)]
    if done:
        echo(f"resuming {run_id}: {len(prepared) - len(todo)} of {len(prepared)} requests already done")

    # 3. Warm-up (untimed, unrecorded): first-call allocations and kernel selection out of the timings.
    if todo:
        first = todo[0][1]
        for decoder, _ in decoders.values():
            generate(decoder, first.input_ids, min(WARMUP_TOKENS, first.max_new_tokens), first.stopper)

    # 4. Paired requests, alternating which method goes first.
    writer = SampleWriter(run_dir / SAMPLES)
    names = list(decoders)
    try:
        bar = tqdm(todo, desc=f"{cfg.method} vs {BASELINE}" if len(names) > 1 else cfg.method, unit="req")
        wall = dict.fromkeys(names, 0.0)  # this session's paired wall times, for the live speedup
        for index, p in bar:
            order = names if index % 2 == 0 else names[::-1]
            rows = {}
            for position, name in enumerate(order):
                if (name, p.request.doc_id) in done:
                    continue
                rows[name] = run_one(decoders[name][0], name, p, cfg, cfg.seed + index, position)
                writer.write(rows[name])
            if len(names) > 1 and all(rows.get(n) and rows[n]["wall_time_s"] for n in names):
                for n in names:
                    wall[n] += rows[n]["wall_time_s"]
                bar.set_postfix(speedup=f"{wall[BASELINE] / wall[cfg.method]:.2f}")
    finally:
        writer.close()

    summary = write_summary(run_dir, info)
    echo(format_table(summary["methods"]))
    echo(f"run folder: {run_dir}")
    return run_dir
