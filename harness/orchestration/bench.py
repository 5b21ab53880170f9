"""`harness bench`: every method × task on one loaded model (one `harness run` folder per pair), then the report.

    cfg = BenchConfig(tasks=("gsm8k",), methods=parse_methods(["jacobi,speculative:draft=ngram,k=4"]), limit=20)
    bench(cfg)      # results/runs/<run_id>/ per (task, method), then results/local/leaderboard.csv, report.md, plots/
With batch_sizes=(1, 2, 4, 8) every (task, method) runs once per batch size, each against batched AR at that size,
and the report adds a plot of speedup against batch size (docs/batching.md).
Rerunning the same command resumes: a run folder in --runs-dir made with the same settings on the same
hardware is reused when finished and resumed when interrupted, so only missing work is done.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from harness import LOCAL_DIR, RUNS_DIR, HarnessError
from harness.engine.models import local_sha256
from harness.engine.records import MANIFEST, SUMMARY, check_writable_dir, read_manifest
from harness.engine.session import RunConfig
from harness.evaluation.sandbox import require_isolation
from methods.base import OptionError
from methods.specs import MethodSpec, parse_specs, spec_text

FLAGS = {"output_dir": "--runs-dir"}  # settings whose option is not named after them


def parse_methods(values: list[str] | tuple[str, ...]) -> tuple[MethodSpec, ...]:
    """--methods values as specs (methods.specs.parse_specs); at least one method."""
    try:
        specs = parse_specs(values)
    except OptionError as e:
        raise HarnessError(str(e)) from None
    if not specs:
        raise HarnessError("no methods: pass --methods, e.g. --methods jacobi,lookahead,speculative:draft=ngram")
    return specs


def parse_list(values) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for value in values for v in value.split(",") if v.strip()))


def parse_limits(values, tasks: tuple[str, ...]) -> tuple[int | None, dict[str, int]]:
    """`--limit N` for every task and/or `--limit TASK=N` for one (repeatable, comma lists allowed)."""
    default, per_task = None, {}
    for item in parse_list(values):
        task, eq, number = item.rpartition("=") if "=" in item else ("", "", item)
        if not re.fullmatch(r"-?\d+", number.strip()):
            raise HarnessError(f"--limit {item!r}: expected N or TASK=N, e.g. --limit 20 or --limit gsm8k=20")
        n = int(number)
        if n < 1:
            raise HarnessError(f"--limit must be at least 1 (got {item!r}); leave it out to run every prompt")
        if eq and task.strip() not in tasks:
            raise HarnessError(f"--limit {item!r}: {task.strip()!r} is not one of --tasks ({', '.join(tasks)})")
        if eq:
            per_task[task.strip()] = n
        else:
            default = n
    return default, per_task


@dataclass(frozen=True)
class BenchConfig:
    tasks: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    model: str = "smollm2-135m"
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    limit: int | None = None
    limits: tuple[tuple[str, int], ...] = ()  # per-task limits, overriding `limit`
    max_new_tokens: int | None = None
    seed: int = 0
    data_dir: str | None = None
    output_dir: str = RUNS_DIR
    out: str = LOCAL_DIR  # the report; the committed one in results/ is `make results`'s
    chat_template: bool = True
    num_fewshot: int | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    require_sandbox: bool = False
    engine: str = "eager"
    batch_sizes: tuple[int, ...] = (1,)  # each batch size is its own set of runs, with its own batched AR
    repeats: int = 1  # every cell R times, the whole sweep once per replicate, so that drift hits every method

    def __post_init__(self):
        if self.repeats < 1:
            raise HarnessError(f"--repeats must be at least 1 (got {self.repeats})")
        bad = [b for b in self.batch_sizes if b < 1]
        if bad or not self.batch_sizes:
            raise HarnessError(f"--batch-sizes must be numbers of at least 1 (got {bad[0] if bad else 'none'})")

    def run_configs(self) -> list[RunConfig]:
        """Replicate by replicate (the whole sweep once each, so that a slow hour of the machine hits every method
        alike), then task by task and batch size by batch size, every method on the same prompts (same limit and
        seed). The judge goes to the judged tasks only (a task's `judged` trait: MT-bench)."""
        from harness.evaluation.tasks import get_task

        limits = dict(self.limits)
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(RunConfig)
                  if f.name not in ("method", "task", "options", "limit", "prompts") and hasattr(self, f.name)}
        judged = {task: get_task(task).judged for task in self.tasks}
        judge = lambda task: {} if judged[task] else {"judge_url": None, "judge_model": None}  # noqa: E731
        return [RunConfig(**{**shared, **judge(task)}, method=name, task=task, options=dict(opts),
                          limit=limits.get(task, self.limit), batch_size=b, replicate=r)
                for r in range(1, self.repeats + 1) for task in self.tasks for b in self.batch_sizes
                for name, opts in self.methods]

    def command(self) -> str:
        """The `harness bench` command line that reproduces this sweep."""
        args = ["harness", "bench", "--tasks", ",".join(self.tasks),
                "--methods", ",".join(spec_text(s) for s in self.methods), "--model", self.model]
        defaults = BenchConfig(tasks=(), methods=())
        for f in ("device", "dtype", "device_map", "limit", "max_new_tokens", "seed", "data_dir", "output_dir", "out",
                  "num_fewshot", "judge_url", "judge_model", "engine"):
            if getattr(self, f) != getattr(defaults, f):
                args += [FLAGS.get(f, "--" + f.replace("_", "-")), str(getattr(self, f))]
        args += [a for task, n in self.limits for a in ("--limit", f"{task}={n}")]
        if self.batch_sizes != (1,):
            args += ["--batch-sizes", ",".join(map(str, self.batch_sizes))]
        if self.repeats != 1:
            args += ["--repeats", str(self.repeats)]
        if not self.chat_template:
            args.append("--no-chat-template")
        if self.require_sandbox:
            args.append("--require-sandbox")
        return shlex.join(args)


def _settings(config: dict) -> str:
    """A run's settings, comparable across runs (the output folder may have moved). A setting left at None
    is left out: a run.json written before the setting existed does not record it; runs from before the engine
    option were eager, those from before --batch-size decoded one request at a time, and those from before
    --repeats were the first replicate."""
    config = {"engine": "eager", "batch_size": 1, "replicate": 1, **config}
    return json.dumps({k: v for k, v in config.items() if k not in ("output_dir", "require_sandbox") and v is not None},
                      sort_keys=True, default=str)


def changed_weights(info: dict) -> str | None:
    """The first model a run loaded (the model, a method's checkpoint or draft model, a checkpoint's base) whose files
    now hash differently from what the run recorded, by name; None when every one it can check is unchanged."""
    todo = [info.get("model") or {}, *((info.get("method") or {}).get("models") or [])]
    while todo:
        m = todo.pop(0)
        todo += [m["base"]] if isinstance(m.get("base"), dict) else []
        now = local_sha256(m["name"]) if m.get("sha256") and isinstance(m.get("name"), str) else None
        if now is not None and now != m["sha256"]:
            return m["name"]
    return None


def previous_run(cfg: RunConfig, hardware_label: str, echo=None) -> tuple[Path | None, bool]:
    """The run folder in cfg.output_dir made with these settings on this hardware from the same weights (a finished
    one first, then the latest), and whether it is finished (its summary was written). A run whose model or
    checkpoint files have changed since (a retrained checkpoint under the same name) is not reused."""
    want = _settings(dataclasses.asdict(cfg))
    found = []
    root = Path(cfg.output_dir)
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        try:
            info = read_manifest(folder / MANIFEST) if (folder / MANIFEST).exists() else None
        except HarnessError:
            continue  # a damaged folder is not resumed
        if info and _settings(info.get("config") or {}) == want and (info.get("hardware") or {}).get("label") == hardware_label:
            changed = changed_weights(info)
            if changed:
                if echo:
                    echo(f"{folder.name}: same settings, but {changed} has changed since it ran; not reused")
                continue
            found.append(((folder / SUMMARY).exists(), info.get("created") or "", folder))
    if not found:
        return None, False
    done, _, folder = max(found)
    return folder, done


def parse_batch_sizes(values: str | None) -> tuple[int, ...]:
    """--batch-sizes 1,2,4,8 as numbers (one line of error for anything else)."""
    if values is None:
        return (1,)
    items = parse_list([values])
    if not items or not all(re.fullmatch(r"-?\d+", v) for v in items):
        raise HarnessError(f"--batch-sizes {values!r}: expected numbers, e.g. --batch-sizes 1,2,4,8")
    sizes = tuple(int(v) for v in items)
    if min(sizes) < 1:
        raise HarnessError(f"--batch-sizes must be at least 1 (got {min(sizes)})")
    return sizes


def check(cfg: BenchConfig) -> dict[str, int | None]:
    """Every method, option and task (with its data) before any model loads; returns each task's request count."""
    from harness.evaluation.tasks import get_task
    from methods import get_method
    from methods.base import OptionError

    if not cfg.tasks:
        raise HarnessError("no tasks: pass --tasks, e.g. --tasks gsm8k,humaneval")
    if cfg.require_sandbox:
        require_isolation()
    for name, opts in cfg.methods:
        try:
            get_method(name).parse_options(dict(opts))
        except (OptionError, ValueError) as e:
            raise HarnessError(f"method {name}: {e}") from None
    configs = {c.task: c for c in cfg.run_configs()}
    counts = {}
    for task in cfg.tasks:
        t = get_task(task)
        t.load(configs[task])
        counts[task] = t.count()
    check_writable_dir(cfg.output_dir, "--runs-dir")
    check_writable_dir(cfg.out, "--out")
    return counts


def clamp_batches(plan: list[RunConfig], counts: dict[str, int | None], echo=print) -> list[RunConfig]:
    """Batch sizes larger than a task's requests become its request count (with a note); duplicates go."""
    out, noted = [], set()
    for rc in plan:
        n = counts.get(rc.task)
        if n is not None and rc.batch_size > n:
            if (rc.task, rc.batch_size) not in noted:
                echo(f"note: batch size {rc.batch_size} is larger than the {n} requests of {rc.task}; using {n}")
                noted.add((rc.task, rc.batch_size))
            rc = dataclasses.replace(rc, batch_size=n)
        if rc not in out:
            out.append(rc)
    return out


def bench(cfg: BenchConfig, echo=print, warn=None, n_boot: int = 2000, plots: bool = True):
    """Run the sweep (skipping finished runs, resuming interrupted ones), then write the report over its runs.
    Returns the leaderboard and the paths written (see report.report); under a launcher every process runs
    its share of each run (harness.orchestration.run) and only rank 0 reports (the others return None)."""
    from harness.engine.models import load_model, resolve_device
    from harness.engine.parallel import start
    from harness.engine.provenance import hardware
    from harness.analysis.report import report
    from harness.orchestration.run import run

    # 1. Cheap checks first, so that a typo in the last task does not stop the sweep hours in.
    counts = check(cfg)
    proc = start(cfg.device)
    proc.check_device_map(cfg.device_map)
    echo = echo if proc.main else (lambda *a, **k: None)
    plan = clamp_batches(cfg.run_configs(), counts, echo)
    label = hardware(resolve_device(proc.device))["label"]
    echo(f"bench: {len(cfg.tasks)} task(s) × {len(cfg.methods)} method(s)"
         + (f" × {cfg.repeats} replicates" if cfg.repeats > 1 else "") + f" = {len(plan)} runs on {cfg.model} ({label})")
    # 2. One model load for every run still to do.
    lm, run_dirs = None, []
    for i, rc in enumerate(plan, 1):
        head = (f"[{i}/{len(plan)}] {rc.task} × {spec_text((rc.method, tuple(rc.options.items())))}"
                + (f" × batch {rc.batch_size}" if len(cfg.batch_sizes) > 1 or rc.batch_size > 1 else "")
                + (f" (replicate {rc.replicate}/{cfg.repeats})" if cfg.repeats > 1 else ""))
        folder, done = proc.share(previous_run(rc, label, echo))  # rank 0 decides: every rank works on one folder
        if done:
            echo(f"{head}: finished earlier in {folder}; skipped")
            run_dirs.append(folder)
            continue
        echo(f"{head}: " + (f"resuming {folder.name}" if folder else "running"))
        if lm is None:
            lm = load_model(cfg.model, proc.device, cfg.dtype, seed=cfg.seed, device_map=cfg.device_map)
        run_dirs.append(run(rc, resume=folder.name if folder else None, echo=echo, lm=lm))
    # 3. The report over exactly this sweep's runs.
    if not proc.main:
        return None
    return report(run_dirs, Path(cfg.out), command=cfg.command(), warn=warn, n_boot=n_boot, plots=plots)
