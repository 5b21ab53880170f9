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
from harness.analysis.leaderboard import settings
from harness.analysis.reference import differences, engine_label, reference_note
from harness.analysis.summary import BASELINE, format_categories, format_table, summarize
from harness.engine.models import LoadedModel, load_model
from harness.engine.parallel import Process, start
from harness.engine.provenance import git_commit, hardware, versions
from harness.engine.records import (MANIFEST, SAMPLES, SCORES, SUMMARY, check_writable_dir, make_dir, merge_parts,
                                    new_run_id, read_manifest, read_samples, write_json_atomic)
from harness.engine.session import RunConfig, Session
from harness.orchestration.auto import resolve as resolve_auto, resumed
from harness.evaluation.sandbox import isolation_report, require_isolation
from harness.evaluation.tasks import get_task
from methods import OptionError, available_methods, get_method

log = logging.getLogger(__name__)
SPEEDUP_DEFINITION = ("(sum method new_tokens / sum method wall_time_s) / (sum ar new_tokens / sum ar wall_time_s) "
                      "over paired requests (same doc_id and turn, both finished with at least one token); "
                      "speedup_geomean: geometric mean of the per-request throughput ratios; "
                      "length_ratio: sum method new_tokens / sum ar new_tokens over the same pairs; "
                      "with --batch-size B > 1 both run B requests at a time and each row's wall_time_s is its share "
                      "of its batch's wall time (batch_wall_time_s / batch_size), so the sums are over batches")


def manifest(cfg: RunConfig, run_id: str, lm: LoadedModel, task, method_options: dict,
             second_models: list[dict] = (), proc: Process | None = None) -> dict:
    spec = available_methods()[cfg.method]
    return {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": dataclasses.asdict(cfg), "versions": versions(), "git": git_commit(),
            "hardware": hardware(lm.device), "model": lm.describe(), "task": task.describe(),
            "method": {"name": cfg.method, "origin": spec.origin, "target": spec.target, "options": method_options,
                       "models": list(second_models)},
            "baseline": BASELINE, "pair_order": "alternates per conversation (a single-turn request is one)",
            "limit": cfg.limit, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens,
            "sandbox": isolation_report(), **(proc or Process()).describe()}


def check_batch_size(cfg: RunConfig, task, proc: Process, echo=print) -> RunConfig:
    """--batch-size against what the run can batch: a one-line error where it cannot (a data-parallel launch,
    a multi-turn task); a batch larger than the task's requests is clamped to them, with a note."""
    if cfg.batch_size == 1:
        return cfg
    if proc.distributed:
        raise HarnessError("--batch-size > 1 does not combine with a data-parallel launch (docs/batching.md); "
                           "launch one process")
    if getattr(task, "multi_turn", False):
        raise HarnessError(f"--batch-size > 1 runs single-turn tasks only; run {task.name} with --batch-size 1")
    n = task.count()
    if n is not None and cfg.batch_size > n:
        echo(f"note: --batch-size {cfg.batch_size} is larger than the {n} requests of this run; using {n}")
        cfg = dataclasses.replace(cfg, batch_size=n)
    return cfg


def run_warnings(info: dict) -> list[str]:
    """What a reader of the run's figures must know: processes that shared a device (a CPU)."""
    if info.get("shared_device"):
        return [f"{info.get('world_size')} processes shared one {info['hardware'].get('device', 'device')} "
                "(data-parallel run): their timings are not comparable with a single-process run's"]
    return []


def write_summary(run_dir: Path, info: dict, task=None) -> dict:
    scores = read_samples(run_dir / SCORES) if (run_dir / SCORES).exists() else []
    metric = task.metric if task else info["task"].get("metric")
    extra = tuple(getattr(task, "extra_metrics", ()))
    summary = {"model": info["model"]["name"], "task": info["task"]["name"], "hardware": info["hardware"]["label"],
               "speedup_definition": SPEEDUP_DEFINITION, "batch_size": (info.get("config") or {}).get("batch_size", 1),
               "metric": metric, "skipped": info["task"].get("skipped") or {},
               "methods": summarize(read_samples(run_dir / SAMPLES), scores=scores, metric=metric, extra_metrics=extra)}
    warnings = run_warnings(info)
    if warnings:
        summary["warnings"] = warnings
    write_json_atomic(run_dir / SUMMARY, summary)
    return summary


def write_manifest(run_dir: Path, info: dict | None, make, auto: dict | None, proc: Process) -> dict:
    """run.json: a new run's conditions (`make()`, with its `auto` choices), or a resumed run's, updated when more
    processes resume it than started it. Returns the manifest."""
    if info is None:
        make_dir(run_dir, exist_ok=False)
        info = make()
        if auto:
            info["auto"] = auto
        write_json_atomic(run_dir / MANIFEST, info)
    elif proc.distributed and info.get("world_size", 1) < proc.world_size:
        info.update(proc.describe())  # resumed by more processes than it was started with
        write_json_atomic(run_dir / MANIFEST, info)
    return info


def run(cfg: RunConfig, resume: str | None = None, echo=print, lm: LoadedModel | None = None) -> Path:
    """One run folder; `lm`, when given, is cfg.model already loaded (a sweep loads it once).

    Under a launcher (accelerate launch, torchrun) every process runs this: each runs its share of the
    requests into its own part file, then rank 0 merges them, scores and summarizes (harness.engine.parallel)."""
    # 1. Cheap checks first: method and its options, task and its data, before the model loads.
    try:
        get_method(cfg.method).parse_options(cfg.options)
    except OptionError as e:
        raise HarnessError(f"method {cfg.method}: {e}") from None
    if cfg.require_sandbox:
        require_isolation()
    proc = start(cfg.device)
    proc.check_device_map(cfg.device_map)
    task = get_task(cfg.task, cfg.prompts)
    task.load(cfg)
    cfg = check_batch_size(cfg, task, proc, echo if proc.main else (lambda *a, **k: None))
    out_dir = Path(cfg.output_dir)
    check_writable_dir(out_dir, "--runs-dir")
    run_id = resume or proc.share(new_run_id())
    run_dir = out_dir / run_id
    if resume and not (run_dir / MANIFEST).exists():
        raise HarnessError(f"no run {resume!r} under {out_dir} to resume (looked for {run_dir / MANIFEST})")
    info = read_manifest(run_dir / MANIFEST) if resume else None

    lm = lm if lm is not None else load_model(cfg.model, proc.device, cfg.dtype, seed=cfg.seed, device_map=cfg.device_map)
    cfg = resumed(cfg, info) if info else cfg  # a resumed run keeps the options its start chose
    cfg, auto = resolve_auto(cfg, lm.model, echo if proc.main else lambda _: None)
    session = Session(cfg, lm, proc=proc)

    # 2. The run folder: conditions in run.json (rank 0), rows appended to samples.jsonl (or, in a
    #    data-parallel run, to each rank's part file) as they are produced.
    if proc.main:
        info = write_manifest(run_dir, info, lambda: manifest(cfg, run_id, lm, task, session.decoders(None)[cfg.method][1],
                                                               session.loaded, proc), auto, proc)
    proc.barrier()  # the folder exists
    session.open(run_dir)
    proc.barrier()  # every rank has read what is done before any writes
    if session.done and proc.main:
        echo(f"resuming {run_id}: {len(session.done)} rows already recorded")

    # 3. The task drives the session (and scores the outputs, when it has a metric).
    try:
        task.execute(session, run_dir)
    except BaseException:
        session.close()
        if not resume and not proc.distributed and not read_samples(run_dir / SAMPLES):
            shutil.rmtree(run_dir)  # failed before any sample (e.g. bad data): leave nothing behind
        raise
    finally:
        session.close()
    if proc.main:  # what the engine compiled and what warming up cost (outside every timing), in this process
        info["engine"] = {**session.engine.describe(), "warmup_s": round(session.warmup_s, 1)}
        info["engines"] = session.engines()  # per method: the target's engine and any draft model's or checkpoint's
        write_json_atomic(run_dir / MANIFEST, info)

    # 4. Data-parallel: once every rank is done, rank 0 merges the parts and scores the merged outputs.
    #    (A single process resuming a data-parallel run merges what the ranks left, too.)
    proc.barrier()
    if not proc.main:
        return run_dir
    merge_parts(run_dir)
    if proc.distributed:
        task.score(session, run_dir)
    show_summary(write_summary(run_dir, info, task), info, run_dir, echo)
    return run_dir


def show_summary(summary: dict, info: dict, run_dir: Path, echo=print) -> None:
    """The run's table (per category too, for a task with categories), its engine, how its settings differ from the
    committed sweep's, its warnings and its folder."""
    echo(format_table(summary["methods"]))
    by_category = format_categories(summary["methods"])
    if by_category:
        echo("per category (speedup: ours, the ratio of throughputs; spec-bench: its mean of per-sample tok/s, "
             "docs/measurement.md#spec-bench-figures):")
        echo(by_category)
    run_settings = settings(info)
    echo(f"engine: {engine_label(run_settings['engine'])}")
    note = reference_note({"this run": differences(run_settings)})
    if note:
        echo(note)
    for warning in summary.get("warnings", []):
        echo(f"warning: {warning}")
    echo(f"run folder: {run_dir}")
