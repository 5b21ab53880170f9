"""The paired-timing runner behind `harness run`.

    run_dir = run(RunConfig(method="jacobi", task="humaneval", limit=5))
For each request it runs the method and the AR baseline back to back (alternating which goes first),
after an untimed warm-up, and appends one samples row per request per method as it goes.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

from harness import HarnessError
from harness.analysis.summary import BASELINE, format_table, summarize
from harness.engine.models import LoadedModel, load_model
from harness.engine.records import (MANIFEST, SAMPLES, SCORES, SUMMARY, check_writable_dir, git_commit, hardware,
                                    make_dir, new_run_id, read_manifest, read_samples, versions, write_json_atomic)
from harness.engine.session import RunConfig, Session
from harness.evaluation.sandbox import isolation_report, require_isolation
from harness.evaluation.tasks import get_task
from methods import available_methods, get_method

log = logging.getLogger(__name__)
SPEEDUP_DEFINITION = ("(sum method new_tokens / sum method wall_time_s) / (sum ar new_tokens / sum ar wall_time_s) "
                      "over paired requests (same doc_id and turn, both finished with at least one token); "
                      "speedup_geomean: geometric mean of the per-request throughput ratios; "
                      "length_ratio: sum method new_tokens / sum ar new_tokens over the same pairs")


def manifest(cfg: RunConfig, run_id: str, lm: LoadedModel, task, method_options: dict,
             second_models: list[dict] = ()) -> dict:
    spec = available_methods()[cfg.method]
    return {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": dataclasses.asdict(cfg), "versions": versions(), "git": git_commit(),
            "hardware": hardware(lm.device), "model": lm.describe(), "task": task.describe(),
            "method": {"name": cfg.method, "origin": spec.origin, "target": spec.target, "options": method_options,
                       "models": list(second_models)},
            "baseline": BASELINE, "limit": cfg.limit, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens,
            "sandbox": isolation_report()}


def write_summary(run_dir: Path, info: dict, task=None) -> dict:
    scores = read_samples(run_dir / SCORES) if (run_dir / SCORES).exists() else []
    metric = task.metric if task else info["task"].get("metric")
    extra = tuple(getattr(task, "extra_metrics", ()))
    summary = {"model": info["model"]["name"], "task": info["task"]["name"], "hardware": info["hardware"]["label"],
               "speedup_definition": SPEEDUP_DEFINITION,
               "metric": metric, "skipped": info["task"].get("skipped") or {},
               "methods": summarize(read_samples(run_dir / SAMPLES), scores=scores, metric=metric, extra_metrics=extra)}
    write_json_atomic(run_dir / SUMMARY, summary)
    return summary


def run(cfg: RunConfig, resume: str | None = None, echo=print, lm: LoadedModel | None = None) -> Path:
    """One run folder; `lm`, when given, is cfg.model already loaded (a sweep loads it once)."""
    # 1. Cheap checks first: method, task and its data, before the model loads.
    get_method(cfg.method)
    if cfg.require_sandbox:
        require_isolation()
    task = get_task(cfg.task, cfg.prompts)
    task.load(cfg)
    out_dir = Path(cfg.output_dir)
    check_writable_dir(out_dir, "--output-dir")
    run_id = resume or new_run_id()
    run_dir = out_dir / run_id
    if resume and not (run_dir / MANIFEST).exists():
        raise HarnessError(f"no run {resume!r} under {out_dir} to resume (looked for {run_dir / MANIFEST})")
    info = read_manifest(run_dir / MANIFEST) if resume else None

    lm = lm if lm is not None else load_model(cfg.model, cfg.device, cfg.dtype, seed=cfg.seed)
    session = Session(cfg, lm)

    # 2. The run folder: conditions in run.json, rows appended to samples.jsonl as they are produced.
    if not resume:
        make_dir(run_dir, exist_ok=False)
        info = manifest(cfg, run_id, lm, task, session.decoders(None)[cfg.method][1], session.loaded)
        write_json_atomic(run_dir / MANIFEST, info)
    session.open(run_dir)
    if session.done:
        echo(f"resuming {run_id}: {len(session.done)} rows already recorded")

    # 3. The task drives the session (and scores the outputs, when it has a metric).
    try:
        task.execute(session, run_dir)
    except BaseException:
        session.close()
        if not resume and not read_samples(run_dir / SAMPLES):
            shutil.rmtree(run_dir)  # failed before any sample (e.g. bad data): leave nothing behind
        raise
    finally:
        session.close()
    # what the engine compiled and what warming up cost (outside every timing), in this process
    info["engine"] = {**session.engine.describe(), "warmup_s": round(session.warmup_s, 1)}
    write_json_atomic(run_dir / MANIFEST, info)

    summary = write_summary(run_dir, info, task)
    echo(format_table(summary["methods"]))
    echo(f"run folder: {run_dir}")
    return run_dir
