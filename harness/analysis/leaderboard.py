"""The leaderboard: pure pandas over run folders' samples rows, then leaderboard.csv, plots and report.md.

    runs = load_runs(["results/runs"])        # every run folder found, as tidy tables
    board = leaderboard(runs)                 # one row per experiment (KEY: model, task, hardware, method,
                                              # options, dtype, max_new_tokens, num_fewshot, chat template, device,
                                              # engine, batch_size)
    write_report(runs, board, Path("results"), command="harness report results/runs")
Each method's rows are paired with the AR rows of the same run (timed back to back); `speedup` is the
ratio of throughputs (harness.analysis.summary), with 95% bootstrap intervals over documents. AR rows pool only
runs with identical settings. Definitions: docs/measurement.md.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import HarnessError
from methods.specs import format_options, parse_options
from harness.engine.records import (MANIFEST, SAMPLES, SCORES, read_manifest, read_samples, row_problem,
                             write_atomic)
from harness.analysis.summary import (BASELINE, INTERVALS, MIN_DOCS, accuracy_stats, bootstrap_speedups, method_stats, pair,
                             timed)

log = logging.getLogger(__name__)

# settings that make two runs different experiments (besides model, task, hardware, method and options)
SETTINGS = ["dtype", "max_new_tokens", "num_fewshot", "chat_template", "device", "engine", "batch_size"]
KEY = ["model", "task", "hardware", "method", "options", *SETTINGS]
VERSIONED = ("torch", "transformers", "lm_eval")  # library versions a leaderboard row must not mix silently
COLUMNS = ["model", "task", "method", "options", "n", "n_errors", "n_paired", "n_docs", "tokens_per_step",
           "tokens_per_s", "speedup", "speedup_lo", "speedup_hi", "speedup_geomean", "speedup_geomean_lo",
           "speedup_geomean_hi", "interval_note", "length_ratio", "acceptance_rate", "draft_forwards_per_step",
           "accuracy", "metric", "accuracy_delta", "lossless_rate", "repeat_share", "phrase_repeat_share", "hardware", *SETTINGS,
           "dirty", "versions", "run_id"]
SPEEDUPS = ("speedup", "speedup_geomean", *INTERVALS)
REQUIRED = ("method", "doc_id")  # a samples row without these cannot be paired: skipped as corrupt


@dataclass
class Runs:
    """Run folders as tables: `runs` one row per run (its manifest), `samples` one row per samples row
    (with the run's model, task, hardware, options and settings), `scores` one row per scored document."""

    runs: pd.DataFrame
    samples: pd.DataFrame
    scores: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def baseline_options(method_options: dict) -> dict:
    """The options of the AR run paired with a method: AR samples at the method's temperature."""
    return {"temperature": float(method_options.get("temperature", 0.0))}


def settings(info: dict) -> dict[str, str]:
    """A run's SETTINGS from its run.json, as text. Older files lack some fields: what they record is used
    (the loaded model's dtype and device), "default" where the task's default applied, else "unknown"."""
    cfg, model = info.get("config") or {}, info.get("model") or {}
    chat = model.get("chat_template")  # whether the model has one; the config may turn it off
    chat = "false" if cfg.get("chat_template") is False else ("unknown" if chat is None else str(bool(chat)).lower())
    picked = {"dtype": model.get("dtype") or (cfg.get("dtype") if cfg.get("dtype") != "auto" else None),
              "device": model.get("device") or (info.get("hardware") or {}).get("device"),
              "chat_template": chat}
    out = {k: "unknown" if v is None else str(v) for k, v in picked.items()}
    out["engine"] = str(cfg.get("engine", "eager"))  # runs from before the engine option were eager
    out["batch_size"] = str(cfg.get("batch_size", 1))  # runs from before --batch-size decoded one request at a time
    for k in ("max_new_tokens", "num_fewshot"):
        value = cfg.get(k, info.get(k))
        out[k] = "default" if value is None else str(value)
    return {k: out[k] for k in SETTINGS}


def run_record(info: dict, path: str = "") -> dict:
    """One row of Runs.runs from a run.json (KeyError or TypeError where it lacks the essentials)."""
    git, versions = info.get("git") or {}, info.get("versions") or {}
    return {"run_id": str(info.get("run_id") or Path(path).name), "model": info["model"]["name"],
            "task": info["task"]["name"], "hardware": info["hardware"]["label"],
            "method": info["method"]["name"], "method_options": info["method"].get("options") or {},
            "metric": info["task"].get("metric"), "created": str(info.get("created") or ""),
            "commit": git.get("commit"), "dirty": git.get("dirty"),
            "versions": ", ".join(f"{k} {versions.get(k) or '?'}" for k in VERSIONED), **settings(info), "path": path}


def tag_samples(run: dict, rows: list[dict]) -> list[dict]:
    """The run's samples rows, each with the run's id, model, task, hardware, settings and its method's options."""
    options = {run["method"]: format_options(run["method_options"]),
               BASELINE: format_options(baseline_options(run["method_options"]))}
    tags = {k: run[k] for k in ("run_id", "model", "task", "hardware", *SETTINGS)}
    return [{**r, **tags, "options": options.get(r["method"], "")} for r in rows]


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
            run = run_record(info, str(folder))
        except (HarnessError, KeyError, TypeError, AttributeError) as e:
            note(f"{folder / MANIFEST}: unreadable manifest ({e}); skipped")
            continue
        if info.get("shared_device"):  # a data-parallel run on one CPU (harness.engine.parallel)
            note(f"run {run['run_id']} ({run['method']} on {run['task']}): {info.get('world_size')} processes shared "
                 f"one {info['hardware'].get('device') or 'device'}, so its timings are not comparable with a "
                 "single-process run's")
        try:
            rows = read_samples(folder / SAMPLES, warn=note, required=REQUIRED, check=row_problem)
        except HarnessError as e:
            note(f"{e}; run {run['run_id']} skipped")
            continue
        if not rows:
            note(f"{folder / SAMPLES}: no samples; run {run['run_id']} skipped")
            continue
        samples += tag_samples(run, rows)
        if (folder / SCORES).exists():
            for s in read_samples(folder / SCORES, warn=note, required=("method", "doc_id", "scores")):
                if isinstance(s["scores"], dict):
                    scores.append({**s, "run_id": run["run_id"]})
                else:
                    note(f"{folder / SCORES}: a row for {s['method']} on {s['doc_id']} has no metric values; skipped")
        runs.append(run)
    if not runs:
        raise HarnessError("no readable runs to report: " + (warnings[-1] if warnings else "nothing found"))
    return make_runs(runs, samples, scores, warnings)


def make_runs(runs: list[dict], samples: list[dict], scores: list[dict], warnings: list[str] | None = None) -> Runs:
    """Runs from run records (run_record), tagged samples rows (tag_samples) and scores rows (with run_id)."""
    samples_df = pd.DataFrame(samples)
    for col in ("error", "turn", "wall_time_s", "output_sha1", "steps", "new_tokens", "step_tokens"):
        if col not in samples_df:
            samples_df[col] = None
    samples_df["turn"] = samples_df["turn"].fillna(1).astype(int)
    samples_df["doc_id"] = samples_df["doc_id"].astype(str)
    scores_df = pd.DataFrame(scores, columns=["run_id", "method", "doc_id", "scores"])
    return Runs(pd.DataFrame(runs), samples_df, scores_df, list(warnings or []))


def latest_runs(runs: pd.DataFrame, warn=None) -> pd.DataFrame:
    """One run per KEY (model, task, hardware, method, options and SETTINGS): the most recent; the others
    are superseded. Runs that differ in any setting (a bf16 run and an fp32 one) are both kept."""
    runs = runs.assign(options=runs["method_options"].map(format_options)).sort_values(["created", "run_id"])
    keep = runs.drop_duplicates(KEY, keep="last")
    for _, old in runs.drop(keep.index).iterrows():
        (warn or log.warning)(f"run {old['run_id']} ({old['method']} on {old['task']}) is superseded by a later "
                              "run with the same model, task, hardware, method, options and settings "
                              f"({', '.join(f'{k}={old[k]}' for k in SETTINGS)}); left out")
    return keep


def _accuracy(scores: pd.DataFrame, method: str, metric: str | None) -> float | None:
    if not metric or scores.empty:
        return None
    rows = scores[scores["method"] == method].to_dict("records")
    return (accuracy_stats(rows, metric).get(method) or {}).get("accuracy")


def board_row(own: pd.DataFrame, base: pd.DataFrame, scores: pd.DataFrame, metric: str | None,
              n_boot: int, seed: int, min_docs: int = MIN_DOCS) -> dict:
    """One leaderboard row: the method's rows (`own`) against the AR rows of the same run(s) (`base`)."""
    ok = own[own["error"].isna()]
    stats = method_stats(ok) if len(ok) else {"n": 0, "tokens_per_step": None, "tokens_per_s": None,
                                              "acceptance_rate": None, "draft_forwards_per_step": None}
    first = own.iloc[0]
    row = {k: first[k] for k in ("model", "task", "method", "options", "hardware", *SETTINGS)}
    row.update({k: stats.get(k) for k in ("n", "tokens_per_step", "tokens_per_s", "acceptance_rate", "draft_forwards_per_step",
                                          "repeat_share", "phrase_repeat_share")}, n_errors=int(len(own) - len(ok)))
    row["run_id"] = ";".join(dict.fromkeys(own["run_id"]))
    acc = _accuracy(scores, first["method"], metric)
    row.update(metric=metric, accuracy=acc)
    if first["method"] == BASELINE:  # the reference: 1 by definition, no interval
        one = 1.0 if row["n"] else None
        row.update(dict.fromkeys(SPEEDUPS), speedup=one, speedup_geomean=one, length_ratio=one, n_paired=row["n"],
                   n_docs=int(ok["doc_id"].nunique()), lossless_rate=one,
                   accuracy_delta=0.0 if acc is not None else None)
        return row
    pairs = pair(ok, base[base["error"].isna()], on=("run_id", "doc_id", "turn"))
    ratios = timed(pairs)
    row.update(n_paired=int(len(ratios)), **bootstrap_speedups(ratios, n_boot, seed, min_docs=min_docs))
    row["lossless_rate"] = float((pairs["output_sha1"] == pairs["output_sha1_ar"]).mean()) if len(pairs) else None
    acc_ar = _accuracy(scores, BASELINE, metric) if len(base) else None
    row["accuracy_delta"] = acc - acc_ar if acc is not None and acc_ar is not None else None
    return row


def provenance(board: pd.DataFrame, runs: pd.DataFrame, note) -> pd.DataFrame:
    """The `dirty` and `versions` columns from each row's runs, with a warning for rows from a dirty git
    tree and for rows that pool runs made with different library versions."""
    by_id = runs.set_index("run_id")
    dirty, versions = [], []
    for _, row in board.iterrows():
        mine = by_id.loc[row["run_id"].split(";")]
        flags = set(mine["dirty"])
        dirty.append(True if True in flags else (False if flags == {False} else None))
        versions.append(" | ".join(dict.fromkeys(mine["versions"])))
        if len(set(mine["versions"])) > 1:
            note(f"{row['method']} on {row['task']} ({row['options']}) pools runs made with different library "
                 f"versions: {versions[-1]}")
    n_dirty = sum(d is True for d in dirty)
    if n_dirty:
        note(f"{n_dirty} of {len(board)} rows come from runs made in a git tree with uncommitted changes "
             "(`dirty`): the code that ran is the recorded commit plus edits that were not recorded")
    return board.assign(dirty=dirty, versions=versions)


def leaderboard(runs: Runs, n_boot: int = 2000, seed: int = 0, warn=None, min_docs: int = MIN_DOCS) -> pd.DataFrame:
    """One row per KEY, sorted; an AR row pools the AR rows of the kept runs with the same model, task,
    hardware, AR options and SETTINGS. A method whose run has no AR rows gets an empty speedup."""
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
                              n_boot, seed, min_docs))
    ar = s[s["method"] == BASELINE]
    for _, group in ar.groupby(["model", "task", "hardware", "options", *SETTINGS], sort=False, dropna=False):
        ids = set(group["run_id"])
        metric = kept.loc[kept["run_id"].isin(ids), "metric"].iloc[0]
        rows.append(board_row(group, group, runs.scores[runs.scores["run_id"].isin(ids)], metric, n_boot, seed))
    board = pd.DataFrame(rows, columns=COLUMNS)
    if len(board):
        board = provenance(board, runs.runs, note)
    order = board["method"].ne(BASELINE)
    return (board.assign(_ar=order).sort_values(["model", "hardware", "task", "_ar", "method", "options", *SETTINGS])
            .drop(columns="_ar").reset_index(drop=True))


def labels(board: pd.DataFrame, ignore: tuple[str, ...] = ()) -> pd.Series:
    """Short names for plots and tables: the method plus the options and settings that differ between its rows
    (leaving out the settings in `ignore`, e.g. the batch size a plot puts on its axis)."""
    def label(row):
        same = board[board["method"] == row["method"]]
        varying = lambda values: values.nunique(dropna=False) > 1  # noqa: E731
        mine = parse_options(row["options"])
        theirs = same["options"].map(parse_options)
        opts = [k for k in mine if varying(theirs.map(lambda o, k=k: o.get(k)))]
        sets = [k for k in SETTINGS if k in board and k not in ignore and varying(same[k])]
        return row["method"] + "".join(f" {k}={mine[k]}" for k in opts) + "".join(f" {k}={row[k]}" for k in sets)
    return board.apply(label, axis=1) if len(board) else pd.Series(dtype=str)


def write_csv(board: pd.DataFrame, path: Path) -> None:
    write_atomic(path, board.to_csv(index=False, float_format="%.6g"))
