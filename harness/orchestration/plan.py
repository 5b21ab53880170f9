"""`--dry-run` of `harness run` and `harness bench`: the runs they would make, and an estimate of their time from this
hardware's forward-cost profile (`harness profile`), without loading a model or reading a task's data.

    print(dry_run(cfg.run_configs(), tuning="results/tuning.json", echo=print))
A request is decoded twice, by AR and by the method. AR commits one token per one-token forward; a method commits
tokens/step tokens per forward of its width w. So a run costs about
    requests × budget × (t(1) + t(w) / tokens_per_step)
where budget is --max-new-tokens (or the task's): answers that stop early cost less; tokens/step comes
from a tuning file's pilot (`harness tune`) or a CLLM checkpoint's card, else 1 (stated as assumed); t(w) is the
profile's median for the run's engine. The profile times forwards alone; where the runs folder holds earlier runs on
this hardware and engine, the estimate is also given scaled by what an AR token cost there against t(1), and a compiled
run adds their mean warm-up (compiling). A drafter's own forwards (layer-skip, a draft model) are not costed: those
rows say so.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from harness import LOCAL_DIR, HarnessError
from harness.engine.records import MANIFEST, SUMMARY, read_manifest
from harness.engine.session import RunConfig
from harness.text import text_table
from methods.specs import format_options, spec_text

PROFILE_DIRS = (LOCAL_DIR + "/profile", "results/profile")  # one's own first, then the committed reference's
TASKS_DIR = Path(__file__).resolve().parents[1] / "evaluation" / "lm_tasks"


@dataclasses.dataclass(frozen=True)
class Planned:
    run: RunConfig
    requests: int
    budget: int  # new tokens per request at most
    tokens_per_step: float
    source: str  # where tokens_per_step comes from
    width: int | None  # the method's widest forward; None: not known in advance
    decode_s: float | None  # None: no profile
    t1_s: float | None  # the profile's one-token forward on the run's engine
    history: History  # earlier runs on this hardware and engine in the runs folder
    status: str  # new, resume <run id>, done <run id>
    note: str = ""


def task_budget(task: str, prompts: str | None) -> int:
    """The task's default new-token budget (its lm-eval config's max_gen_toks; 128 for a prompts file)."""
    if prompts:
        return 128
    from harness.evaluation.names import split_task

    found = [int(m) for f in sorted((TASKS_DIR / split_task(task)[0]).glob("*.yaml"))
             for m in re.findall(r"max_gen_toks:\s*(\d+)", f.read_text())]
    return max(found) if found else 256


def request_count(rc: RunConfig) -> int:
    """Generations the run makes: the limit or the task's size (documents × turns), or the prompts file's lines."""
    if rc.prompts:
        try:
            n = sum(1 for line in Path(rc.prompts).read_text().splitlines() if line.strip())
        except OSError as e:
            raise HarnessError(f"cannot read prompts file {rc.prompts}: {e.strerror}") from None
        return min(n, rc.limit or n)
    from harness.evaluation.tasks import get_task

    return get_task(rc.task).generations(rc.limit)


def costs(label: str, model: str, engine: str, folders=PROFILE_DIRS) -> tuple[dict[int, float], str] | None:
    """{width: t(w) in seconds} from this hardware's profile of `model` on `engine`, and the CSV's path; None if none."""
    import pandas as pd

    from harness.orchestration.profile import profile_for

    for folder in folders:
        path = profile_for(folder, label, model)
        if path is None:
            continue
        table = pd.read_csv(path)
        rows = table[table["engine"] == engine] if "engine" in table else table
        if len(rows):
            return dict(zip(rows["width"].astype(int), rows["ms_median"].astype(float) / 1000)), str(path)
    return None


def t_of(known: dict[int, float], w: int) -> float:
    """t(w), linear between measured widths (beyond the widest: proportional to w, an overestimate)."""
    ws = sorted(known)
    if w > ws[-1]:
        return known[ws[-1]] * w / ws[-1]
    return float(np.interp(w, ws, [known[m] for m in ws]))


def pilot_tokens_per_step(name: str, options: dict, tuning: str | None) -> tuple[float, str] | None:
    """Tokens/step of (method, options) measured by `harness tune`'s pilot, or what the method expects from its
    checkpoint's card (Decoder.planned: a CLLM checkpoint records tokens/step per block)."""
    from methods import get_method

    opts = dataclasses.asdict(get_method(name).parse_options(options))
    if tuning and Path(tuning).is_file():
        try:
            rows = json.loads(Path(tuning).read_text())["candidates"]
        except (ValueError, KeyError, TypeError):
            rows = []
        for r in rows:
            if r.get("method") != name:
                continue
            theirs = dataclasses.asdict(get_method(name).parse_options(dict(
                p.split("=", 1) for p in re.split(r",(?=[A-Za-z_]\w*=)", r["options"]) if p)))
            if theirs == opts:
                return float(r["tokens_per_step"]), f"pilot ({tuning})"
    _, tps = get_method(name).planned(get_method(name).parse_options(options), cllm_card)
    return (float(tps), "checkpoint card") if tps else None


def cllm_card(checkpoint: str) -> dict:
    """A CLLM checkpoint's cllm.json (block size, tokens/step per block), {} where there is none."""
    from harness.engine.models import cllm_card as card

    return card(checkpoint) or {}


def widest(name: str, options: dict) -> int | None:
    from methods import get_method

    cls = get_method(name)
    widths, _ = cls.planned(cls.parse_options(options), cllm_card)
    return max(widths) if widths else None


@dataclasses.dataclass(frozen=True)
class History:
    """What earlier runs on this hardware with this engine measured (in one runs folder)."""
    runs: int
    warmup_s: float | None  # mean warm-up (compiling) per run
    ar_s_per_token: float | None  # Σ AR wall time / Σ AR new tokens


def history(runs_dir: str, label: str, engine: str) -> History:
    warmups, wall, tokens, n = [], 0.0, 0, 0
    root = Path(runs_dir)
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        try:
            info = read_manifest(folder / MANIFEST) if (folder / MANIFEST).exists() else {}
            ar = json.loads((folder / SUMMARY).read_text())["methods"]["ar"] if (folder / SUMMARY).exists() else {}
        except (HarnessError, ValueError, KeyError, TypeError):
            continue
        ran = info.get("engine") or {}
        if ran.get("engine") != engine or (info.get("hardware") or {}).get("label") != label:
            continue
        n += 1
        warmups.append(float(ran.get("warmup_s") or 0))
        if isinstance(ar.get("wall_time_s"), (int, float)) and ar.get("new_tokens"):
            wall, tokens = wall + ar["wall_time_s"], tokens + ar["new_tokens"]
    return History(n, sum(warmups) / n if n else None, wall / tokens if tokens else None)


def plan(runs: list[RunConfig], label: str, tuning: str | None = None, previous=None) -> tuple[list[Planned], str | None]:
    """Every run with its estimate; the profile used (None: this hardware has none). `previous(rc)` -> (folder, done)
    says which runs a rerun would skip or resume (bench)."""
    out, used = [], None
    past = {}
    for rc in runs:
        found = costs(label, rc.model, rc.engine)
        n, budget = request_count(rc), rc.max_new_tokens or task_budget(rc.task, rc.prompts)
        pilot = pilot_tokens_per_step(rc.method, rc.options, tuning) if rc.method != "ar" else (1.0, "AR")
        tps, source = pilot or (1.0, "assumed")
        w = widest(rc.method, rc.options)
        decode = note = t1 = None
        if found:
            t, used = found
            step, t1 = (t_of(t, w) if w else t[1]), t[1]
            decode = n * budget * (t[1] + (step / tps if rc.method != "ar" else 0))
            if w is None:
                note = "width unknown: costed as one-token forwards"
        draft = str(rc.options.get("draft", "ngram" if rc.method == "speculative" else ""))
        if draft and not draft.startswith("ngram"):
            note = "the drafter's own forwards are not costed"
        if (rc.output_dir, rc.engine) not in past:
            past[rc.output_dir, rc.engine] = history(rc.output_dir, label, rc.engine)
        folder, done = previous(rc) if previous else (None, False)
        status = f"done {folder.name}" if done else f"resume {folder.name}" if folder else "new"
        out.append(Planned(rc, n, budget, tps, source, w, decode, t1, past[rc.output_dir, rc.engine], status, note or ""))
    return out, used


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def format_plan(planned: list[Planned], label: str, profile: str | None) -> str:
    """The plan as a table and the totals, for the terminal."""
    rows = []
    for i, p in enumerate(planned, 1):
        rc = p.run
        rows.append([str(i), rc.task or f"prompts:{Path(rc.prompts).name}", spec_text((rc.method, tuple(rc.options.items()))),
                     rc.engine + (f" b{rc.batch_size}" if rc.batch_size > 1 else ""), str(p.requests), str(p.budget),
                     f"{p.tokens_per_step:.2f}" + ("" if p.source in ("AR",) else f" ({p.source.split(' ')[0]})"),
                     str(p.width or "?"), hours(p.decode_s) if p.decode_s is not None else "-", p.status, p.note])
    head = ["#", "task", "method", "engine", "requests", "budget", "tok/step", "width", "decode", "status", "note"]
    lines = [text_table(head, rows, right={0, 4, 5, 8})]
    settings = sorted({format_options({k: v for k, v in dataclasses.asdict(p.run).items()
                                       if k in ("model", "limit", "max_new_tokens", "seed", "batch_size", "data_dir")})
                       for p in planned})
    lines.append("settings: " + "; ".join(settings))
    if profile is None:
        lines.append(f"no forward-cost profile of this model on this hardware ({label}) in {' or '.join(PROFILE_DIRS)}: "
                     f"no estimate. Measure one: harness profile --engines eager,compiled")
        return "\n".join(lines)
    todo = [p for p in planned if not p.status.startswith("done")]
    decode = sum(p.decode_s for p in planned)
    left = sum(p.decode_s for p in todo)
    lines.append(f"estimate on {label} from {profile} (forwards alone, every answer at its full budget): decoding "
                 f"{hours(decode)} for all {len(planned)} runs"
                 + ("; every one is finished in the runs folder: a rerun reuses them" if not todo else
                    f"; {hours(left)} for the {len(todo)} not finished in the runs folder" if len(todo) < len(planned) else ""))
    scaled = [p for p in planned if p.history.ar_s_per_token and p.t1_s]
    if scaled:  # a run's step also pays what the profile leaves out: longer contexts, a full static cache, the stopper
        ratio = sum(p.history.ar_s_per_token / p.t1_s for p in scaled) / len(scaled)
        lines.append(f"scaled by earlier runs here (an AR token took {ratio:.2f}× the profile's one-token forward): "
                     f"decoding {hours(sum(p.decode_s * p.history.ar_s_per_token / p.t1_s for p in scaled))} for the "
                     f"{len(scaled)} runs with such a history")
    compiled = [p for p in planned if p.run.engine == "compiled"]
    warm = [p.history.warmup_s for p in compiled if p.history.warmup_s is not None]
    if compiled and len(warm) == len(compiled):
        lines.append(f"compiling: + {hours(sum(warm))} ({len(compiled)} compiled runs × {sum(warm) / len(warm) / 60:.1f} min, "
                     "the mean warm-up of earlier compiled runs on this hardware)")
    elif compiled:
        lines.append(f"compiling: not in the estimate ({len(compiled)} compiled runs; no earlier compiled run on this "
                     "hardware to take the time from: each forward width compiles in minutes on a CPU)")
    return "\n".join(lines)
