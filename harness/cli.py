"""The `harness` command line: thin click commands that parse and call the library.

    harness run --method jacobi:block_size=7 --task humaneval --limit 5
    harness methods | harness tasks | harness --version | harness COMMAND -h
Heavy imports (torch, transformers, lm_eval) happen inside the commands, after the checks that need none of them, so
that --help, --version and a mistyped method or task answer at once. One grammar: `--method`/`--methods` take
METHOD[:key=value,...], `--task`/`--tasks` task names, `--model` a model, `--runs-dir` the folder of run folders and
`--out` what a command writes. Default outputs (results/runs, results/local) are ignored by git: only `make results`
writes the committed reference in results/.
"""
from __future__ import annotations

import functools
import logging
import sys

import click
from click.core import ParameterSource

from harness import LOCAL_DIR, RUNS_DIR, HarnessError
from harness.text import positive_ints, text_table
from methods import MethodError, OptionError


def renamed(old: str, new: str, **attrs):
    """Keep option `old` working, hidden, for scripts written before it became `new` (a parameter of the command):
    it sets `new`, with a one-line deprecation note on stderr."""
    dest = "renamed_" + old.lstrip("-").replace("-", "_")
    flag = "--" + new.replace("_", "-")

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            value = kwargs.pop(dest)
            if value is not None:
                click.echo(f"note: {old} is deprecated; use {flag}", err=True)
                if click.get_current_context().get_parameter_source(new) == ParameterSource.COMMANDLINE:
                    raise HarnessError(f"give {flag} or {old}, not both")
                kwargs[new] = value
            return f(*args, **kwargs)
        return click.option(old, dest, hidden=True, default=None, **attrs)(wrapper)
    return decorate


def _check_names(methods=(), tasks=()) -> None:
    """Method and task names against the registries, without importing torch (a typo answers at once)."""
    from harness.evaluation.names import check_task
    from methods import check_method

    for name in methods:
        check_method(name)
    for name in tasks:
        check_task(name)


class Group(click.Group):
    """Turns HarnessError (and the library's own user errors) into one line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (HarnessError, MethodError, OptionError) as e:
            click.echo("error: " + " ".join(str(e).split()), err=True)  # always one line
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; finished samples are saved: rerun with --resume RUN_ID to continue", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.version_option(package_name="parallel-decoding-harness", prog_name="harness", message="%(prog)s %(version)s")
def main(verbose: bool):
    """Benchmark parallel decoding methods against AR decoding on the same hardware.

    \b
    Example:
      harness run --method jacobi --task humaneval --limit 5   # one method, paired with AR
      harness COMMAND -h                                       # a command's options"""
    import os
    from pathlib import Path

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # inductor's on-disk caches (compiled engine) under the harness cache dir; read once, when torch imports it
    cache = Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "harness")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # offline retries: our own error says it once


RUN_OPTIONS = ("method", "task", "prompts", "model", "device", "dtype", "device_map", "limit", "max_new_tokens", "seed",
               "options", "output_dir", "chat_template", "data_dir", "num_fewshot", "judge_url", "judge_model",
               "engine", "batch_size")
ENGINE_HELP = ("eager: HF forwards with a dynamic cache; compiled: a static cache and one torch.compile graph per "
               "forward width (compiled once per machine, minutes; docs/engine.md).")


DRY_RUN_HELP = ("Print the planned runs and their estimated time from this hardware's forward-cost profile, and stop "
                "(no model is loaded).")
RUNS_DIR_HELP = "Folder of run folders (ignored by git)."


@main.command()
@renamed("--output-dir", "runs_dir", type=click.Path(file_okay=False))
@click.option("--method", "-m", metavar="METHOD[:K=V,...]",
              help="Decoding method (see `harness methods`), with options as in bench: jacobi:block_size=7.")
@click.option("--task", "-t", help="Task (see `harness tasks`).")
@click.option("--prompts", type=click.Path(dir_okay=False), help="A JSONL file of {\"id\", \"prompt\"} rows, instead of --task.")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="Alias (smollm2-135m, tiny-random), hub id, local model directory or .gguf file.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16.")
@click.option("--device-map", help="auto: spread a model too big for one device over the GPUs, CPU memory and disk "
              "(accelerate's big-model inference; also balanced, balanced_low_0, sequential).")
@click.option("--limit", type=int, help="Run only the first N prompts.")
@click.option("--max-new-tokens", type=int, help="Token budget per answer (default: the task's; 128 for --prompts).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-O", "options", multiple=True, metavar="KEY=VALUE",
              help="Method option, repeatable (e.g. -O block_size=16); each key once.")
@click.option("--runs-dir", default=RUNS_DIR, show_default=True, type=click.Path(file_okay=False), help=RUNS_DIR_HELP)
@click.option("--chat-template/--no-chat-template", default=True, show_default=True,
              help="Wrap prompts in the model's chat template when it has one.")
@click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False),
              help="Benchmark data laid out as gsm8k/, mt_bench/, spider/ (env HARNESS_DATA_DIR); default: the hub.")
@click.option("--num-fewshot", type=int, help="Few-shot examples (default: the task's).")
@click.option("--judge-url", help="MT-bench: OpenAI-compatible endpoint (e.g. http://host:8000/v1) for 1-10 grading.")
@click.option("--judge-model", help="MT-bench: the judge model's name at --judge-url (API key from OPENAI_API_KEY).")
@click.option("--engine", type=click.Choice(["eager", "compiled"]), default="eager", show_default=True, help=ENGINE_HELP)
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Requests decoded together by the method and by AR, its baseline at the same batch size (docs/batching.md).")
@click.option("--resume", metavar="RUN_ID", help="Continue an interrupted run in --runs-dir, skipping finished requests.")
@click.option("--require-sandbox", is_flag=True, help="Refuse to run model-written code without OS isolation (bubblewrap).")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.pass_context
def run(ctx, resume, dry_run, runs_dir, **kwargs):
    """Run a method and the AR baseline, paired per request, and record the results.

    Under `accelerate launch` or `torchrun` each process runs its share of the requests (docs/scale-out.md).

    \b
    Example:
      harness run --method jacobi:block_size=7 --task gsm8k --limit 20 --engine compiled
      harness run --method speculative -O draft=ngram -O k=4 --prompts my_prompts.jsonl --dry-run"""
    from methods.specs import parse_method, parse_pairs

    # 1. The checks that need no torch: the method spec, its name and the task's.
    options_given = bool(kwargs["options"]) or ":" in (kwargs["method"] or "")
    kwargs["output_dir"] = runs_dir
    if kwargs["method"]:
        kwargs["method"], kwargs["options"] = parse_method(kwargs["method"], kwargs["options"])
        _check_names([kwargs["method"]])
    else:
        kwargs["options"] = parse_pairs(kwargs["options"])
    if not resume:
        from harness.evaluation.names import check_task

        if not kwargs["method"]:
            raise HarnessError("no method: pass --method (see `harness methods`)")
        check_task(kwargs["task"], kwargs["prompts"])
    # 2. The run (or its plan).
    from harness.engine.records import MANIFEST, read_manifest
    from harness.engine.session import RunConfig
    from harness.orchestration.run import run as run_

    if resume:
        path = _resume_dir(kwargs["output_dir"], resume) / MANIFEST
        recorded = read_manifest(path)["config"]
        for key in RUN_OPTIONS:
            source = ctx.get_parameter_source(key)
            given = kwargs[key]
            if key == "options":  # -O k=v, or --method METHOD:k=v
                source = ParameterSource.COMMANDLINE if options_given else ParameterSource.DEFAULT
            if key != "output_dir" and source == ParameterSource.COMMANDLINE and given != recorded.get(key):
                flag = "-O" if key == "options" else "--" + key.replace("_", "-")
                raise HarnessError(f"run {resume} was made with {flag} {recorded.get(key)!r}, not {given!r}; "
                                   "leave the option out when resuming")
        kwargs = {**{k: v for k, v in recorded.items() if k in RUN_OPTIONS}, "output_dir": kwargs["output_dir"],
                  "require_sandbox": kwargs["require_sandbox"]}
        try:
            cfg = RunConfig(**kwargs)
        except (HarnessError, TypeError) as e:  # a wrongly typed or missing setting
            raise HarnessError(f"{path}: its \"config\" cannot be resumed ({e}); the run folder is damaged") from None
    else:
        cfg = RunConfig(**kwargs)
    if dry_run:
        _dry_run([cfg], cfg.device)
        return
    run_(cfg, resume=resume, echo=click.echo)


def _dry_run(configs, device: str, tuning: str | None = None, previous=None) -> None:
    """Print the plan of these runs and their estimate (harness.orchestration.plan); nothing is loaded or run."""
    from harness.engine.models import resolve_device
    from harness.engine.provenance import hardware
    from harness.orchestration.plan import format_plan, plan

    label = hardware(resolve_device(device))["label"]
    planned, profile = plan(configs, label, tuning, previous=previous and (lambda rc: previous(rc, label)))
    click.echo(format_plan(planned, label, profile))


def _check_tuning_hardware(path: str, device: str) -> None:
    """A warning when a tuning file was made on other hardware than this: its settings were chosen for that one."""
    from harness.engine.models import resolve_device
    from harness.engine.provenance import hardware
    from harness.orchestration.tune import tuning_hardware

    label, made_on = hardware(resolve_device(device))["label"], tuning_hardware(path)
    if made_on is not None and made_on != label:
        _warn(f"--tuned {path} was tuned on {made_on}, not on this hardware ({label}): `harness tune` here for this one's")


def _resume_dir(output_dir: str, run_id: str):
    from pathlib import Path

    path = Path(output_dir) / run_id
    if not (path / "run.json").exists():
        raise HarnessError(f"no run {run_id!r} under {output_dir} to resume (pass the same --runs-dir as the run)")
    return path


@main.command()
def methods():
    """List the registered decoding methods.

    \b
    Example:
      harness methods"""
    from methods import available_methods, get_method

    rows = []
    for name, spec in sorted(available_methods().items()):
        try:
            cls = get_method(name)
            desc = cls.description + ("" if cls.lossless else " [lossy]")
        except MethodError as e:
            desc = f"BROKEN: {e}"
        rows.append((name, spec.origin, desc))
    click.echo(text_table(None, rows))


@main.command()
def drafters():
    """List the drafters speculative decoding can use (-O draft=NAME[:ARG], or a model).

    \b
    Example:
      harness drafters
      harness run --method speculative:draft=layerskip:15,k=4 --task gsm8k --limit 5"""
    from methods.drafters import DRAFTERS
    from methods.registry import RegistryError

    rows = []
    for name, spec in sorted(DRAFTERS.available().items()):
        try:  # the docstring's first paragraph, whole
            doc = " ".join((DRAFTERS.get(name).__doc__ or "").strip().split("\n\n")[0].split())
        except RegistryError as e:
            doc = f"BROKEN: {e}"
        rows.append((name, spec.origin, doc))
    rows.append(("MODEL", "builtin", "any causal LM sharing the target's tokenizer (alias, hub id, directory, .gguf)"))
    click.echo(text_table(None, rows))


@main.command()
@click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False),
              help="Check where each task's data is found in this directory (env HARNESS_DATA_DIR).")
def tasks(data_dir):
    """List the tasks: metric, split size and where their data comes from.

    \b
    Example:
      harness tasks --data-dir ../shared/data"""
    from harness.evaluation.tasks import TASKS

    rows = []
    for name, make in TASKS.items():
        task = make()
        rows.append((name, task.metric.split(",")[0], str(task.size), task.locate(data_dir), task.description))
    rows.append(("--prompts", "-", "-", "FILE.jsonl", "any JSONL file of {\"id\", \"prompt\"} rows (speed only)"))
    click.echo(text_table(["task", "metric", "size", "data", "description"], rows))


def _warn(message: str) -> None:
    click.echo("warning: " + message, err=True)


def _warn_line(line: str) -> None:  # a line that already says "warning: ..."
    click.echo(line, err=True)


@main.command()
@click.argument("run_dirs", nargs=-1, type=click.Path())
@click.option("--out", default=LOCAL_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Where leaderboard.csv, report.md, headline.md and plots/ go (ignored by git; the committed "
              "reference in results/ is `make results`'s).")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Bootstrap resamples for the 95% intervals (0: no intervals).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--plots/--no-plots", default=True, show_default=True)
def report(run_dirs, out, n_boot, seed, plots):
    """Leaderboard, plots and report.md from run folders (default: results/runs).

    RUN_DIRS are run folders or folders holding run folders.

    \b
    Example:
      harness report                                  # your runs in results/runs -> results/local/
      harness report results/reference-runs --out /tmp/ref   # the committed sweep, elsewhere"""
    import shlex
    from pathlib import Path

    from harness.analysis.report import report as report_
    from harness.analysis.markdown import format_board

    run_dirs = run_dirs or (RUNS_DIR,)
    command = shlex.join(["harness", "report", *run_dirs, "--out", out])
    board, written = report_(list(run_dirs), Path(out), command=command, warn=_warn, n_boot=n_boot, seed=seed,
                             plots=plots)
    click.echo(format_board(board))
    click.echo("wrote " + ", ".join(str(p) for k, p in written.items() if not k.startswith("plot:"))
               + (f" and {sum(k.startswith('plot:') for k in written)} plots in {Path(out) / 'plots'}" if plots else ""))


@main.command()
@renamed("--output-dir", "runs_dir", type=click.Path(file_okay=False))
@click.option("--tasks", "--task", "-t", multiple=True, required=True, help="Tasks, comma-separated or repeated.")
@click.option("--methods", "--method", "-m", multiple=True, required=True, metavar="METHOD[:K=V,...]",
              help="Methods, comma-separated or repeated, each with options: speculative:draft=ngram,k=4.")
@click.option("--model", default="smollm2-135m", show_default=True, help="One model for the whole sweep.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--device-map", help="auto: spread a model too big for one device over the GPUs, CPU memory and disk.")
@click.option("--limit", "limits", multiple=True, metavar="N|TASK=N", help="First N prompts of every task, or of one task.")
@click.option("--max-new-tokens", type=int, help="Token budget per answer (default: each task's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False),
              help="Benchmark data (env HARNESS_DATA_DIR).")
@click.option("--runs-dir", default=RUNS_DIR, show_default=True, type=click.Path(file_okay=False),
              help=RUNS_DIR_HELP + " Finished runs there are reused, interrupted ones resumed.")
@click.option("--out", default=LOCAL_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Where the report goes (ignored by git; the committed reference in results/ is `make results`'s).")
@click.option("--chat-template/--no-chat-template", default=True, show_default=True)
@click.option("--num-fewshot", type=int)
@click.option("--judge-url", help="MT-bench: OpenAI-compatible endpoint for grading.")
@click.option("--judge-model", help="MT-bench: the judge model's name.")
@click.option("--engine", type=click.Choice(["eager", "compiled"]), default="eager", show_default=True, help=ENGINE_HELP)
@click.option("--batch-size", type=int, help="Requests decoded together by every method and AR (default 1).")
@click.option("--batch-sizes", metavar="B,B,...",
              help="Several batch sizes, e.g. 1,2,4,8: each its own runs against batched AR, plus a plot of speedup vs "
              "batch size (docs/batching.md).")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run every cell R times, the whole sweep once per replicate (methods interleaved, so that drift "
              "hits them all); the report's intervals then resample runs and documents.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=2000, show_default=True)
@click.option("--plots/--no-plots", default=True, show_default=True)
@click.option("--require-sandbox", is_flag=True, help="Refuse to run model-written code without OS isolation (bubblewrap).")
@click.option("--tuned", type=click.Path(dir_okay=False), help="Also run the tuned settings of this `harness tune` file.")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP + " Runs finished in --runs-dir are marked done.")
def bench(tasks, methods, limits, n_boot, plots, batch_size, batch_sizes, tuned, dry_run, runs_dir, **kwargs):
    """Run every method x task on one loaded model (resumable), then the report.

    Under `accelerate launch` or `torchrun` each process runs its share of every run (docs/scale-out.md).

    \b
    Example:
      harness bench --tasks gsm8k,humaneval --limit 20 --engine compiled \\
          --methods jacobi,lookahead,speculative:draft=ngram,k=4 --dry-run"""
    from methods.specs import parse_specs

    # 1. The names, with no torch yet.
    _check_names([name for name, _ in parse_specs(methods)],
                 [t.strip() for value in tasks for t in value.split(",") if t.strip()])
    from harness.orchestration.bench import (BenchConfig, bench as bench_, parse_batch_sizes, parse_limits, parse_list,
                                             parse_methods)

    task_names = parse_list(tasks)
    limit, per_task = parse_limits(limits, task_names)
    if tuned:
        from harness.orchestration.tune import tuned_specs

        methods = (*methods, *tuned_specs(tuned, methods, echo=click.echo))
    if batch_size is not None and batch_sizes is not None:
        raise HarnessError("give --batch-size or --batch-sizes, not both")
    sizes = parse_batch_sizes(batch_sizes if batch_size is None else str(batch_size))
    cfg = BenchConfig(tasks=task_names, methods=parse_methods(methods), limit=limit,
                      limits=tuple(per_task.items()), batch_sizes=sizes, output_dir=runs_dir, **kwargs)
    # 2. The sweep (or its plan).
    if tuned:
        _check_tuning_hardware(tuned, cfg.device)
    if dry_run:
        from harness.orchestration.bench import previous_run

        _dry_run(cfg.run_configs(), cfg.device, tuned, previous=lambda rc, label: previous_run(rc, label))
        return
    from harness.analysis.markdown import format_board

    try:
        done = bench_(cfg, echo=click.echo, warn=_warn, n_boot=n_boot, plots=plots)
    except KeyboardInterrupt:
        click.echo("interrupted; finished samples are saved: rerun the same command to continue", err=True)
        sys.exit(130)
    if done is None:  # a data-parallel run's other processes: rank 0 reports
        return
    board, written = done
    click.echo(format_board(board))
    click.echo(f"wrote {written['leaderboard']} and {written['report']}")


@main.command()
@renamed("--output-dir", "runs_dir", type=click.Path(file_okay=False))
@click.argument("run_a")
@click.argument("run_b")
@click.option("--runs-dir", default=RUNS_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Where run ids are looked up (a path to a run folder works too).")
def compare(run_a, run_b, runs_dir):
    """Print the differences between two runs: conditions, per-method metrics, identical outputs.

    \b
    Example:
      harness compare 20261201-110213-d8b6 20261201-122822-9b5d --runs-dir results/reference-runs"""
    from harness.analysis.compare import compare as compare_, resolve_run

    click.echo(compare_(resolve_run(run_a, runs_dir), resolve_run(run_b, runs_dir), warn=_warn))


@main.command("lm-eval", context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_cli(args):
    """lm-evaluation-harness's own CLI with this harness's model and tasks: every argument goes to lm-eval.

    \b
    Example:
    harness lm-eval --model parallel-decoding --tasks gsm8k --limit 2 \\
        --model_args model=smollm2-135m,method=jacobi,block_size=16 --metadata data_dir=../shared/data
    The model `parallel-decoding` is registered with lm-eval's registry; the tasks' folder is added as
    --include_path unless one is given, and HARNESS_DATA_DIR becomes --metadata data_dir=... unless given."""
    import os

    from harness.evaluation.lm_eval_model import LM_EVAL_NAME  # noqa: F401  (importing it registers the model)
    from harness.evaluation.lm_tasks import TASKS_DIR
    from lm_eval.__main__ import cli_evaluate

    argv = list(args)
    if "--include_path" not in argv:
        argv += ["--include_path", str(TASKS_DIR)]
    if "--metadata" not in argv and os.environ.get("HARNESS_DATA_DIR"):
        argv += ["--metadata", "data_dir=" + os.environ["HARNESS_DATA_DIR"]]
    sys.argv = ["lm-eval", *argv]
    cli_evaluate()


@main.command()
@click.option("--model", default="smollm2-135m", show_default=True, help="Alias, hub id, local model directory or .gguf file.")
@click.option("--context", type=int, default=256, show_default=True, help="Tokens cached before each timed forward.")
@click.option("--widths", default="1,2,4,8,16,32", show_default=True,
              help="Tokens per forward, comma-separated (1 is always added).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16.")
@click.option("--repeats", type=int, default=20, show_default=True, help="Timed forwards per width (after 3 untimed ones).")
@click.option("--out", default=LOCAL_DIR + "/profile", show_default=True, type=click.Path(file_okay=False),
              help="Folder for <hardware>--<model>.csv, .json and .png (ignored by git; results/profile is `make results`'s).")
@click.option("--engines", default="eager", show_default=True,
              help="Engines to measure side by side, comma-separated: eager, compiled (compiling takes minutes).")
def profile(widths, engines, **kwargs):
    """Forward cost of w new tokens after a cached context, relative to one token, on this hardware.

    A parallel method whose forwards are w tokens wide beats AR only if it commits more than t(w)/t(1)
    tokens per step: the break-even column. The files are named after the hardware and the model; tune, bench
    --dry-run and the report pick a profile by the hardware label recorded in its .json.

    \b
    Example:
      harness profile --engines eager,compiled --context 200"""
    from harness.orchestration.profile import ProfileConfig, format_table, parse_widths, run_profile

    cfg = ProfileConfig(widths=parse_widths(widths), engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
                        **kwargs)
    table, conditions, paths = run_profile(cfg, progress=lambda msg: click.echo(f"compiling: {msg}", err=True))
    hw = conditions["hardware"]
    click.echo(f"{cfg.model} ({conditions['dtype']}) on {hw['label']}, {hw['torch_threads']} threads, "
               f"{cfg.context} cached tokens, median of {cfg.repeats} forwards:")
    click.echo(format_table(table))
    click.echo("a method committing fewer tokens per step than break-even is slower than AR here; wrote "
               + ", ".join(str(p) for p in paths.values()))


@main.group()
def cllm():
    """CLLM: collect Jacobi trajectories, then consistency-train a model on them; measure and study checkpoints.

    \b
    Example:
      harness cllm collect --task gsm8k --limit 64 --block-size 4 --out trajectories.jsonl
      harness cllm train --data trajectories.jsonl --out ckpt/"""


@cllm.command()
@click.option("--model", default="smollm2-135m", show_default=True, help="The target model (alias, hub id, dir, .gguf).")
@click.option("--task", default="gsm8k", show_default=True, help="Task whose prompts are used (same prompts as `harness run`).")
@click.option("--split", default="train", show_default=True)
@click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False),
              help="Benchmark data (env HARNESS_DATA_DIR).")
@click.option("--limit", type=int, help="Only the first N prompts.")
@click.option("--block-size", type=int, default=16, show_default=True,
              help="n: tokens per Jacobi block (paper: 16 for GSM8K/Spider, 32 for code/chat).")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts per batched greedy generation.")
@click.option("--augment", type=int, default=0, show_default=True,
              help="Extra states per Jacobi state, with some wrong tokens set to the fixed point's.")
@click.option("--clean/--no-clean", default=True, show_default=True, help="Drop answers with 10+ repeated tokens in a row.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Trajectory file (JSONL); an existing one is resumed.")
def collect(**kwargs):
    """Collect Jacobi trajectories (one record per block) from the target model; resumable.

    \b
    Example:
      harness cllm collect --task gsm8k --limit 64 --block-size 4 --out trajectories.jsonl"""
    from harness.cllm.trajectories import CollectConfig, collect as collect_

    if kwargs["limit"] is not None and kwargs["limit"] < 1:
        raise HarnessError("--limit must be at least 1")
    collect_(CollectConfig(**kwargs), echo=click.echo)


@cllm.command()
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Trajectory file from `harness cllm collect`.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Checkpoint directory (then: --model DIR or -O checkpoint=DIR).")
@click.option("--model", help="Model to train (default: the one the trajectories came from).")
@click.option("--loss", type=click.Choice(["global", "local"]), default="global", show_default=True, help="Consistency loss.")
@click.option("--ar-weight", type=float, default=10.0, show_default=True, help="w in consistency + w * AR.")
@click.option("--states-per-block", type=int, default=1, show_default=True,
              help="Jacobi states per block in each training sequence, drawn anew each epoch (0: every state).")
@click.option("--horizon", type=int, default=0, show_default=True,
              help="Teach only the first H tokens past each state's verified prefix, packing just those (0: whole states).")
@click.option("--lora/--no-lora", default=True, show_default=True, help="LoRA adapter (small checkpoint) or full fine-tuning.")
@click.option("--lora-rank", type=int, default=32, show_default=True)
@click.option("--lora-alpha", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True,
              help="Peak learning rate (cosine schedule, 3% warm-up); the paper's full fine-tuning used 2e-5.")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--max-steps", type=int, default=-1, show_default=True, help="Stop after N optimizer steps (-1: the epochs).")
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--save-steps", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--mixed-precision", type=click.Choice(["auto", "bf16", "no"]), default="auto", show_default=True,
              help="bf16 autocast over fp32 weights (auto: on CUDA with bf16, or on a CPU with AMX).")
@click.option("--resume", is_flag=True, help="Continue from the last Trainer checkpoint in OUT/trainer.")
@click.option("--snapshots", default="", help="A data-scaling run, e.g. 128,256,512,1024: one epoch over the first "
              "1024 samples at a constant rate, writing OUT/nN after N samples (each equals a training on N alone).")
@click.option("--samples", type=int, default=0, show_default=True,
              help="Train on the file's first N samples only (0: all), so a recipe stays the same when its file grows.")
def train(snapshots, **kwargs):
    """Consistency-train a model on trajectories (transformers Trainer; `accelerate launch` for several GPUs).

    \b
    Example:
      harness cllm train --data trajectories.jsonl --out ckpt/ --lora --lr 1e-3 --epochs 1
      harness run --method cllm:checkpoint=ckpt/ --task gsm8k --limit 10"""
    from harness.cllm.train import TrainConfig, train as train_

    sizes = positive_ints(snapshots, "--snapshots", "128,256,512,1024") if snapshots else ()
    train_(TrainConfig(snapshots=sizes, **kwargs), echo=click.echo)


@main.command()
@click.option("--model", default="smollm2-135m", show_default=True)
@click.option("--engine", type=click.Choice(["eager", "compiled"]), default="eager", show_default=True,
              help="The engine whose forward costs decide (the one the sweep will run on).")
@click.option("--limit", type=int, default=5, show_default=True, help="Pilot: the first N GSM8K *train* questions.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False),
              help="Benchmark data (env HARNESS_DATA_DIR).")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", default=LOCAL_DIR + "/tuning.json", show_default=True, type=click.Path(dir_okay=False),
              help="The tuning file (ignored by git; results/tuning.json is `make results`'s).")
@click.option("--profile", type=click.Path(),
              help="Read forward costs (the --engine rows) from this `harness profile` CSV, or from the profile of this "
              "hardware in this folder, instead of measuring.")
def tune(**kwargs):
    """Choose Jacobi, lookahead and n-gram speculative sizes for this machine (profile costs x pilot tokens/step).

    \b
    Example:
      harness tune --engine compiled --profile results/local/profile --data-dir ../shared/data
      harness bench --tasks gsm8k --methods jacobi --tuned results/local/tuning.json --dry-run"""
    from harness.orchestration.tune import TuneConfig, tune as tune_

    result = tune_(TuneConfig(**kwargs), echo=click.echo)
    click.echo(f"wrote {kwargs['out']}: tuned {', '.join(result['tuned'])}  (use: harness bench --tuned {kwargs['out']})")


@cllm.command()
@click.option("--checkpoint", default="smollm2-135m-cllm", show_default=True, help="CLLM checkpoint (alias or directory).")
@click.option("--model", default="smollm2-135m", show_default=True, help="The checkpoint's base model.")
@click.option("--block-sizes", default="4,8,16", show_default=True, help="Jacobi block sizes to measure, comma-separated.")
@click.option("--task", default="gsm8k", show_default=True)
@click.option("--split", default="test", show_default=True, help="Held-out questions: not the training split.")
@click.option("--limit", type=int, default=40, show_default=True, help="The first N questions of the split.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False),
              help="Benchmark data (env HARNESS_DATA_DIR).")
@click.option("--engine", type=click.Choice(["eager", "compiled"]), default="eager", show_default=True, help=ENGINE_HELP)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Rows (JSONL); an existing file is resumed.")
@click.option("--write-card", is_flag=True, help="Record tokens/step per block size in the checkpoint's cllm.json "
              "(what -O block_size=auto reads).")
def measure(block_sizes, **kwargs):
    """Tokens per step of a CLLM checkpoint per block size on held-out questions (untimed; resumable).

    \b
    Example:
      harness cllm measure --checkpoint smollm2-135m-cllm --block-sizes 4,8 --limit 10 --out measure.jsonl"""
    from harness.cllm.measure import MeasureConfig, measure as measure_

    result = measure_(MeasureConfig(block_sizes=positive_ints(block_sizes, "--block-sizes", "4,8,16"), **kwargs), echo=click.echo)
    click.echo(result.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@cllm.command()
@renamed("--out-dir", "out", type=click.Path(file_okay=False))
@renamed("--base", "model")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              help="CLLM checkpoint (alias or directory), repeatable; each at the block size its cllm.json records.")
@click.option("--model", default="smollm2-135m", show_default=True, help="The checkpoints' base model (the zero-data point).")
@click.option("--task", default="gsm8k", show_default=True)
@click.option("--limit", type=int, default=40, show_default=True, help="The first N *test* questions.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--data-dir", envvar="HARNESS_DATA_DIR", type=click.Path(file_okay=False),
              help="Benchmark data (env HARNESS_DATA_DIR).")
@click.option("--engine", type=click.Choice(["eager", "compiled"]), default="eager", show_default=True,
              help="Engine the tokens/step are counted on (untimed).")
@click.option("--profile", type=click.Path(),
              help="`harness profile` CSV, or a folder holding this hardware's: break-even and expected speedup.")
@click.option("--profile-engine", type=click.Choice(["eager", "compiled"]), default="compiled", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False),
              help="study.csv/.md/.png and the resumable measurements behind them (required).")
def study(checkpoints, model, out, **kwargs):
    """Block size and training data against tokens/step and hit rates, per checkpoint (untimed; resumable).

    \b
    Example:
      harness cllm study --checkpoint smollm2-135m-cllm --limit 10 --profile results/profile --out study/"""
    from harness.cllm.study import StudyConfig, study as study_

    if out is None:
        raise HarnessError("no --out: pass the folder for study.csv, e.g. --out results/cllm-study")
    if kwargs["profile"]:
        from harness.engine.models import resolve_device
        from harness.engine.provenance import hardware
        from harness.orchestration.tune import choose_profile

        label = hardware(resolve_device(kwargs["device"]))["label"]
        kwargs["profile"] = choose_profile(kwargs["profile"], label, model, echo=_warn_line)
    table = study_(StudyConfig(checkpoints=checkpoints, base=model, out_dir=out, **kwargs), echo=click.echo)
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    click.echo(f"wrote {out}/study.csv, study.md, study.png")


@main.group()
def data():
    """Benchmark data: check a local copy (README.md#data)."""


@data.command("check")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--task", "tasks", multiple=True, help="Check only this task's files (gsm8k, humaneval, mt_bench, spider, "
              "spec_bench); repeatable. Default: every file.")
def data_check(data_dir, tasks):
    """One line per file against the checksums this project ships: OK, MISSING or MISMATCH; exit 1 on any problem.

    Example: harness data check ../shared/data --task gsm8k"""
    from pathlib import Path

    from harness.evaluation.data_check import check

    rows = check(Path(data_dir).expanduser(), tuple(tasks))
    for state, name in rows:
        click.echo(f"{state:<9}{name}")
    bad = sum(state != "OK" for state, _ in rows)
    click.echo(f"{len(rows) - bad} of {len(rows)} files OK" + (f"; {bad} missing or different" if bad else ""))
    if bad:
        sys.exit(1)


if __name__ == "__main__":  # python -m harness.cli (runs this checkout's code, not an installed copy)
    main()
