"""The leaderboard: pure pandas over run folders' samples rows, then leaderboard.csv, plots and report.md.

    runs = load_runs(["results/runs"])        # every run folder found, as tidy tables
    board = leaderboard(runs)                 # one row per (model, task, hardware, method, options)
    write_report(runs, board, Path("results"), command="harness report results/runs")
Each method's rows are paired with the AR rows of the same run (same model, task, request and hardware,
timed back to back); `speedup` is the ratio of total times, with 95% bootstrap intervals over requests.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import HarnessError
from harness.records import (MANIFEST, SAMPLES, SCORES, make_dir, read_manifest, read_samples, row_problem,
                             write_atomic)
from harness.summary import BASELINE, accuracy_stats, method_stats, pair

log = logging.getLogger(__name__)

KEY = ["model", "task", "hardware", "method", "options"]
COLUMNS = ["model", "task", "method", "options", "n", "n_errors", "n_paired", "tokens_per_step", "tokens_per_s",
           "speedup", "speedup_lo", "speedup_hi", "speedup_geomean", "speedup_geomean_lo", "speedup_geomean_hi",
           "acceptance_rate", "draft_forwards_per_step", "accuracy", "metric", "accuracy_delta", "lossless_rate",
           "hardware", "run_id"]
SPEEDUPS = ("speedup", "speedup_lo", "speedup_hi", "speedup_geomean", "speedup_geomean_lo", "speedup_geomean_hi")
REQUIRED = ("method", "doc_id")  # a samples row without these cannot be paired: skipped as corrupt


@dataclass
class Runs:
    """Run folders as tables: `runs` one row per run (its manifest), `samples` one row per samples row
    (with the run's model, task, hardware and options), `scores` one row per scored document."""

    runs: pd.DataFrame
    samples: pd.DataFrame
    scores: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def format_options(options: dict) -> str:
    """Canonical option text, `k=v` sorted by key and comma-joined (the bench's METHOD:k=v,... syntax)."""
    return ",".join(f"{k}={v}" for k, v in sorted(options.items()))


def baseline_options(method_options: dict) -> dict:
    """The options of the AR run paired with a method: AR samples at the method's temperature."""
    return {"temperature": float(method_options.get("temperature", 0.0))}


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run folders (holding run.json or samples.jsonl) named directly or found one level below."""
    out = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise HarnessError(f"{p} is not a folder: pass run folders or folders holding run folders")
        if (p / MANIFEST).exists() or (p / SAMPLES).exists():
            out.append(p)
            continue
        found = sorted(c for c in p.iterdir() if c.is_dir() and ((c / MANIFEST).exists() or (c / SAMPLES).exists()))
        if not found:
            raise HarnessError(f"no run folders in {p} (a run folder holds run.json and samples.jsonl)")
        out += found
    return list(dict.fromkeys(out))


def load_runs(paths: list[str | Path], warn=None) -> Runs:
    """Read every run folder under `paths`. Damaged folders and rows are skipped with a warning; the
    warnings are kept in Runs.warnings (for report.md) and passed to `warn` (default: the log)."""
    warnings: list[str] = []

    def note(msg: str) -> None:
        warnings.append(msg)
        (warn or log.warning)(msg)

    runs, samples, scores = [], [], []
    for folder in find_run_dirs(paths):
        if not (folder / MANIFEST).exists():
            note(f"{folder}: no {MANIFEST}, so its model and hardware are unknown; skipped")
            continue
        try:
            info = read_manifest(folder / MANIFEST)
            run = {"run_id": str(info.get("run_id") or folder.name), "model": info["model"]["name"],
                   "task": info["task"]["name"], "hardware": info["hardware"]["label"],
                   "method": info["method"]["name"], "method_options": info["method"].get("options") or {},
                   "metric": info["task"].get("metric"), "created": str(info.get("created") or ""),
                   "commit": (info.get("git") or {}).get("commit"), "path": str(folder)}
        except (HarnessError, KeyError, TypeError, AttributeError) as e:
            note(f"{folder / MANIFEST}: unreadable manifest ({e}); skipped")
            continue
        try:
            rows = read_samples(folder / SAMPLES, warn=note, required=REQUIRED, check=row_problem)
        except HarnessError as e:
            note(f"{e}; run {run['run_id']} skipped")
            continue
        if not rows:
            note(f"{folder / SAMPLES}: no samples; run {run['run_id']} skipped")
            continue
        options = {run["method"]: format_options(run["method_options"]),
                   BASELINE: format_options(baseline_options(run["method_options"]))}
        for r in rows:
            samples.append({**r, "run_id": run["run_id"], "model": run["model"], "task": run["task"],
                            "hardware": run["hardware"], "options": options.get(r["method"], "")})
        if (folder / SCORES).exists():
            for s in read_samples(folder / SCORES, warn=note, required=("method", "doc_id", "scores")):
                if isinstance(s["scores"], dict):
                    scores.append({**s, "run_id": run["run_id"]})
                else:
                    note(f"{folder / SCORES}: a row for {s['method']} on {s['doc_id']} has no metric values; skipped")
        runs.append(run)
    if not runs:
        raise HarnessError("no readable runs to report: " + (warnings[-1] if warnings else "nothing found"))
    samples_df = pd.DataFrame(samples)
    for col in ("error", "turn", "wall_time_s", "output_sha1", "steps", "new_tokens", "step_tokens"):
        if col not in samples_df:
            samples_df[col] = None
    samples_df["turn"] = samples_df["turn"].fillna(1).astype(int)
    samples_df["doc_id"] = samples_df["doc_id"].astype(str)
    scores_df = pd.DataFrame(scores, columns=["run_id", "method", "doc_id", "scores"])
    return Runs(pd.DataFrame(runs), samples_df, scores_df, warnings)


def bootstrap_speedups(ar_s, method_s, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap over requests (pairs resampled with replacement, seeded) for the ratio of
    total times and the geometric mean of per-request ratios. Returns the two estimates and their intervals."""
    a, m = np.asarray(ar_s, dtype=float), np.asarray(method_s, dtype=float)
    if a.size == 0:
        return dict.fromkeys(SPEEDUPS)
    out = {"speedup": float(a.sum() / m.sum()), "speedup_geomean": float(np.exp(np.log(a / m).mean()))}
    if n_boot < 1:
        return {**dict.fromkeys(SPEEDUPS), **out}
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))  # (B, n) resampled requests
    total = a[idx].sum(axis=1) / m[idx].sum(axis=1)
    geo = np.exp(np.log(a / m)[idx].mean(axis=1))
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    (out["speedup_lo"], out["speedup_hi"]), (out["speedup_geomean_lo"], out["speedup_geomean_hi"]) = (
        map(float, np.percentile(total, q)), map(float, np.percentile(geo, q)))
    return out


def latest_runs(runs: pd.DataFrame, warn=None) -> pd.DataFrame:
    """One run per (model, task, hardware, method, options): the most recent; the others are superseded."""
    runs = runs.assign(options=runs["method_options"].map(format_options)).sort_values(["created", "run_id"])
    keep = runs.drop_duplicates(KEY, keep="last")
    for _, old in runs.drop(keep.index).iterrows():
        (warn or log.warning)(f"run {old['run_id']} ({old['method']} on {old['task']}) is superseded by a later "
                              "run with the same model, task, hardware, method and options; left out")
    return keep


def _accuracy(scores: pd.DataFrame, method: str, metric: str | None) -> float | None:
    if not metric or scores.empty:
        return None
    rows = scores[scores["method"] == method].to_dict("records")
    return (accuracy_stats(rows, metric).get(method) or {}).get("accuracy")


def board_row(own: pd.DataFrame, base: pd.DataFrame, scores: pd.DataFrame, metric: str | None,
              n_boot: int, seed: int) -> dict:
    """One leaderboard row: the method's rows (`own`) against the AR rows of the same run(s) (`base`)."""
    ok = own[own["error"].isna()]
    stats = method_stats(ok) if len(ok) else {"n": 0, "tokens_per_step": None, "tokens_per_s": None,
                                              "acceptance_rate": None, "draft_forwards_per_step": None}
    first = own.iloc[0]
    row = {k: first[k] for k in ("model", "task", "method", "options", "hardware")}
    row.update({k: stats[k] for k in ("n", "tokens_per_step", "tokens_per_s", "acceptance_rate",
                                      "draft_forwards_per_step")}, n_errors=int(len(own) - len(ok)))
    row["run_id"] = ";".join(dict.fromkeys(own["run_id"]))
    acc = _accuracy(scores, first["method"], metric)
    row.update(metric=metric, accuracy=acc)
    if first["method"] == BASELINE:  # the reference: 1 by definition
        one = 1.0 if row["n"] else None
        row.update(dict.fromkeys(SPEEDUPS, one), n_paired=row["n"], lossless_rate=one,
                   accuracy_delta=0.0 if acc is not None else None)
        return row
    pairs = pair(ok, base[base["error"].isna()], on=("run_id", "doc_id", "turn"))
    pairs = pairs[(pairs["wall_time_s"] > 0) & (pairs["wall_time_s_ar"] > 0)]
    row.update(n_paired=int(len(pairs)), **bootstrap_speedups(pairs["wall_time_s_ar"], pairs["wall_time_s"],
                                                                  n_boot, seed))
    row["lossless_rate"] = float((pairs["output_sha1"] == pairs["output_sha1_ar"]).mean()) if len(pairs) else None
    acc_ar = _accuracy(scores, BASELINE, metric) if len(base) else None
    row["accuracy_delta"] = acc - acc_ar if acc is not None and acc_ar is not None else None
    return row


def leaderboard(runs: Runs, n_boot: int = 2000, seed: int = 0, warn=None) -> pd.DataFrame:
    """One row per (model, task, hardware, method, options), sorted; AR rows pool the AR rows of every
    run kept for that model, task and hardware. A method whose run has no AR rows gets an empty speedup."""
    def note(msg):
        runs.warnings.append(msg)
        (warn or log.warning)(msg)

    kept = latest_runs(runs.runs, note)
    s = runs.samples[runs.samples["run_id"].isin(kept["run_id"])]
    rows = []
    for _, run in kept[kept["method"] != BASELINE].iterrows():
        mine = s[s["run_id"] == run["run_id"]]
        own, base = mine[mine["method"] == run["method"]], mine[mine["method"] == BASELINE]
        if own.empty:
            note(f"run {run['run_id']}: no {run['method']} rows; nothing to report")
            continue
        if base[base["error"].isna()].empty:
            note(f"run {run['run_id']} ({run['method']} on {run['task']}): no AR rows to pair with, so speedup "
                 "and lossless_rate are left empty")
        rows.append(board_row(own, base, runs.scores[runs.scores["run_id"] == run["run_id"]], run["metric"],
                              n_boot, seed))
    ar = s[s["method"] == BASELINE]
    for _, group in ar.groupby(["model", "task", "hardware", "options"], sort=False):
        ids = set(group["run_id"])
        metric = kept.loc[kept["run_id"].isin(ids), "metric"].iloc[0]
        rows.append(board_row(group, group, runs.scores[runs.scores["run_id"].isin(ids)], metric, n_boot, seed))
    board = pd.DataFrame(rows, columns=COLUMNS)
    order = board["method"].ne(BASELINE)
    return (board.assign(_ar=order).sort_values(["model", "hardware", "task", "_ar", "method", "options"])
            .drop(columns="_ar").reset_index(drop=True))


def labels(board: pd.DataFrame) -> pd.Series:
    """Short names for plots and tables: the method plus the options that differ between its rows."""
    def label(row):
        same = board[board["method"] == row["method"]]["options"].map(_parse_options)
        mine = _parse_options(row["options"])
        varying = [k for k in mine if same.map(lambda o: o.get(k)).nunique(dropna=False) > 1]
        return row["method"] + "".join(f" {k}={mine[k]}" for k in varying)
    return board.apply(label, axis=1) if len(board) else pd.Series(dtype=str)


def _parse_options(text: str) -> dict:
    parts = re.split(r",(?=[A-Za-z_]\w*=)", text) if text else []
    return dict(p.split("=", 1) for p in parts)


def write_csv(board: pd.DataFrame, path: Path) -> None:
    write_atomic(path, board.to_csv(index=False, float_format="%.6g"))


@contextmanager
def report_lock(out: Path, shared: bool = False):
    """Hold the report folder `out`: exclusively to write a report, shared to read one writer's complete
    set (leaderboard.csv, report.md and plots/ from the same report) while others may be writing.
    An flock on the folder itself (Linux, macOS): released when the holder ends, even if it crashes."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_report(runs: Runs, board: pd.DataFrame, out: Path, command: str = "", plots: bool = True,
                 warn=None) -> dict[str, Path]:
    """leaderboard.csv, plots/*.png and report.md under `out` as one set: the plots are drawn into a
    staging folder, then under `report_lock` the plots folder is swapped in whole and the two files are
    written atomically, so that concurrent reports on one `out` never mix. Returns the paths written."""
    from harness.report_md import render

    make_dir(out)
    written, figures, staging = {"leaderboard": out / "leaderboard.csv"}, {}, None
    try:
        if plots:
            from harness.plots import make_plots

            staging = Path(tempfile.mkdtemp(dir=out, prefix=".plots-"))
            drawn = make_plots(board, runs.samples, staging)
            figures = {key: {kind: out / "plots" / path.name for kind, path in kinds.items()}
                       for key, kinds in drawn.items()}
            written.update({f"plot:{path.stem}": path for kinds in figures.values() for path in kinds.values()})
        written["report"] = out / "report.md"
        text = render(runs, board, figures, out, command)
        with report_lock(out):
            if staging is not None:
                _swap_in(staging, out / "plots")
            write_csv(board, written["leaderboard"])
            write_atomic(written["report"], text)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return written


def _swap_in(staging: Path, target: Path) -> None:
    """Replace the folder `target` by `staging` (two renames; the old one is then deleted)."""
    staging.chmod(0o755)  # mkdtemp makes it private; plots are for reading
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=".plots-old-"))
        os.replace(target, old)  # over the empty folder just made
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def report(paths, out: Path, command: str = "", warn=None, n_boot: int = 2000, seed: int = 0,
           plots: bool = True) -> tuple[pd.DataFrame, dict[str, Path]]:
    """`harness report`: load the runs under `paths`, build the leaderboard, write everything under `out`."""
    if seed < 0:
        raise HarnessError(f"--seed must be 0 or more (got {seed})")
    runs = load_runs(paths, warn)
    board = leaderboard(runs, n_boot=n_boot, seed=seed, warn=warn)
    return board, write_report(runs, board, out, command=command, plots=plots)
