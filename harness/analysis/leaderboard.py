"""The leaderboard: pure pandas over run folders' samples rows, then leaderboard.csv, plots and report.md.

    runs = load_runs(["results/runs"])        # every run folder found, as tidy tables
    board = leaderboard(runs)                 # one row per experiment (KEY: model, task, hardware, method,
                                              # options, dtype, max_new_tokens, num_fewshot, chat template, device,
                                              # engine, batch_size)
    write_report(runs, board, Path("results"), command="harness report results/runs")
Each method's rows are paired with the AR rows of the same run (timed back to back); `speedup` is the
ratio of throughputs (harness.analysis.summary), with 95% bootstrap intervals over documents, and Spec-Bench's own
figures beside it (harness.analysis.specbench). AR rows pool only runs with identical settings. A conversation task
adds a row per turn, a task whose rows carry a category (spec_bench) one per category. Definitions:
docs/measurement.md.
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
from harness.analysis.columns import COLUMNS as COLUMN_DOCS
from harness.analysis.specbench import baseline_figures, specbench_figures
from harness.analysis.summary import (BASELINE, INTERVALS, MIN_DOCS, accuracy_stats, bootstrap_speedups, method_stats, pair,
                             timed)

log = logging.getLogger(__name__)

# settings that make two runs different experiments (besides model, task, hardware, method and options)
SETTINGS = ["dtype", "max_new_tokens", "num_fewshot", "chat_template", "device", "engine", "batch_size"]
KEY = ["model", "task", "hardware", "method", "options", *SETTINGS]
VERSIONED = ("torch", "transformers", "lm_eval")  # library versions a leaderboard row must not mix silently
COLUMNS = list(COLUMN_DOCS)  # each described in harness/analysis/columns.py
SPEEDUPS = ("speedup", "speedup_geomean", "speedup_clean", "speedup_per_answer", "speedup_quality", *INTERVALS)
AR_SPEED_TOLERANCE = 0.10  # a run whose AR throughput is further than this from its group's median is flagged
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
            "versions": ", ".join(f"{k} {versions.get(k) or '?'}" for k in VERSIONED), **settings(info), "path": path,
            "replicate": int((info.get("config") or {}).get("replicate") or 1)}


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
    """One run per KEY (model, task, hardware, method, options and SETTINGS) and replicate (`bench --repeats`):
    the most recent; the others are superseded. Runs that differ in any setting (a bf16 run and an fp32 one)
    are both kept."""
    runs = runs.assign(options=runs["method_options"].map(format_options)).sort_values(["created", "run_id"])
    if "replicate" not in runs:
        runs = runs.assign(replicate=1)
    keep = runs.drop_duplicates([*KEY, "replicate"], keep="last")  # replicates of one cell are all kept
    for _, old in runs.drop(keep.index).iterrows():
        (warn or log.warning)(f"run {old['run_id']} ({old['method']} on {old['task']}) is superseded by a later "
                              "run with the same model, task, hardware, method, options and settings "
                              f"({', '.join(f'{k}={old[k]}' for k in SETTINGS)}, replicate {old['replicate']}); left out")
    return keep


def _accuracy(scores: pd.DataFrame, method: str, metric: str | None) -> float | None:
    if not metric or scores.empty:
        return None
    rows = scores[scores["method"] == method].to_dict("records")
    return (accuracy_stats(rows, metric).get(method) or {}).get("accuracy")


def paired_accuracy(scores: pd.DataFrame, method: str, metric: str | None) -> pd.DataFrame | None:
    """{run_id, doc_id, m_acc, a_acc}: the method's and AR's score of each document both were scored on."""
    if not metric or scores.empty:
        return None
    value = lambda d: d.get(metric) if isinstance(d, dict) else None  # noqa: E731
    table = scores.assign(acc=scores["scores"].map(value)).dropna(subset=["acc"])
    m = table[table["method"] == method][["run_id", "doc_id", "acc"]]
    a = table[table["method"] == BASELINE][["run_id", "doc_id", "acc"]]
    both = m.merge(a, on=["run_id", "doc_id"], suffixes=("_m", "_a"))
    return both.rename(columns={"acc_m": "m_acc", "acc_a": "a_acc"}) if len(both) else None


def per_run_speed(rows: pd.DataFrame) -> pd.Series:
    """Each run's Σ tokens / Σ time over its successful rows, by run_id."""
    ok = rows[rows["error"].isna()]
    sums = ok.assign(t=ok["new_tokens"].astype(float), s=ok["wall_time_s"].astype(float)).groupby("run_id")[["t", "s"]].sum()
    return sums["t"] / sums["s"]


def run_throughput(rows: pd.DataFrame) -> float | None:
    """Tokens per second, never pooled across runs: the median over runs of per_run_speed."""
    speeds = per_run_speed(rows)
    return float(speeds.median()) if len(speeds) else None


def foreign_history(mine: pd.DataFrame, method: str) -> pd.Series:
    """True for the AR rows of a conversation's later turns whose history the method wrote and AR would not have:
    both sides answer turn t after the method's earlier answers, so such a row is not AR's own conversation."""
    ar = mine["method"] == BASELINE
    if mine["turn"].max() <= 1 or method == BASELINE:
        return pd.Series(False, index=mine.index)
    sha = mine.pivot_table(index=["run_id", "doc_id", "turn"], columns="method", values="output_sha1", aggfunc="first")
    if method not in sha or BASELINE not in sha:
        return ar & (mine["turn"] > 1)
    differs = (sha[method] != sha[BASELINE]).groupby(level=[0, 1]).cumsum()  # earlier turns that differed, turn included
    earlier = (differs - (sha[method] != sha[BASELINE])).rename("earlier")
    keys = pd.MultiIndex.from_frame(mine[["run_id", "doc_id", "turn"]])
    return ar & pd.Series(earlier.reindex(keys).fillna(1).to_numpy() > 0, index=mine.index)


def _describe(own: pd.DataFrame, row: dict) -> dict:
    ok = own[own["error"].isna()]
    stats = method_stats(ok) if len(ok) else {"n": 0}
    row.update({k: stats.get(k) for k in ("n", "tokens_per_step", "acceptance_rate", "draft_forwards_per_step",
                                          "repeat_share", "phrase_repeat_share")}, n_errors=int(len(own) - len(ok)))
    row["tokens_per_s"] = run_throughput(own)
    row["run_id"] = ";".join(dict.fromkeys(own["run_id"]))
    row["n_runs"] = int(own["run_id"].nunique())
    return row


def whole(board: pd.DataFrame) -> pd.Series:
    """True for the rows over every turn and category (not the per-turn or per-category rows)."""
    out = pd.Series(True, index=board.index)
    for col in ("turn", "category"):
        if col in board:
            out &= board[col].fillna("all").astype(str) == "all"
    return out


def board_row(own: pd.DataFrame, base: pd.DataFrame, scores: pd.DataFrame, metric: str | None,
              n_boot: int, seed: int, min_docs: int = MIN_DOCS, turn: str = "all", category: str = "all") -> dict:
    """One leaderboard row: the method's rows (`own`) against the AR rows of the same run(s) (`base`); a per-category
    row is given the scores of its category's documents only."""
    first = own.iloc[0]
    row = _describe(own, {k: first[k] for k in ("model", "task", "method", "options", "hardware", *SETTINGS)})
    row.update(turn=turn, category=category)
    acc = _accuracy(scores, first["method"], metric) if turn == "all" else None
    row.update(metric=metric, accuracy=acc)
    ok = own[own["error"].isna()]
    if first["method"] == BASELINE:  # the reference: 1 by definition, no interval
        one = 1.0 if row["n"] else None
        row.update(dict.fromkeys(SPEEDUPS), speedup=one, speedup_geomean=one, speedup_per_answer=one, length_ratio=one,
                   n_paired=row["n"], n_docs=int(ok["doc_id"].nunique()), lossless_rate=one,
                   ar_tokens_per_s=row["tokens_per_s"], accuracy_delta=0.0 if acc is not None else None,
                   **baseline_figures(ok))
        return row
    ok_base = base[base["error"].isna()]
    pairs = pair(ok, ok_base, on=("run_id", "doc_id", "turn"))
    ratios = timed(pairs)
    accuracy = paired_accuracy(scores, first["method"], metric) if turn == "all" else None
    row.update(n_paired=int(len(ratios)), **bootstrap_speedups(ratios, n_boot, seed, min_docs=min_docs, accuracy=accuracy),
               **specbench_figures(ratios, ok))
    row["ar_tokens_per_s"] = run_throughput(base) if len(base) else None
    row["lossless_rate"] = float((pairs["output_sha1"] == pairs["output_sha1_ar"]).mean()) if len(pairs) else None
    acc_ar = _accuracy(scores, BASELINE, metric) if len(base) and turn == "all" else None
    if accuracy is None:  # no document scored on both sides: the plain difference of the two means, if any
        row["accuracy_delta"] = acc - acc_ar if acc is not None and acc_ar is not None else None
    return row


def turn_rows(own: pd.DataFrame, base: pd.DataFrame, scores, metric, n_boot, seed, min_docs) -> list[dict]:
    """Per-turn rows of a conversation task (more than one turn), after the row over every turn."""
    turns = sorted(own["turn"].unique())
    if len(turns) < 2:
        return []
    return [board_row(own[own["turn"] == t], base[base["turn"] == t], scores, metric, n_boot, seed, min_docs,
                      turn=str(t)) for t in turns if (own["turn"] == t).any()]


def category_rows(own: pd.DataFrame, base: pd.DataFrame, scores, metric, n_boot, seed, min_docs) -> list[dict]:
    """Per-category rows of a task whose rows carry a category (Spec-Bench), after the row over all of them; each
    category's accuracy over its own documents (none where its documents have no metric)."""
    if "category" not in own or own["category"].isna().all():
        return []
    out = []
    for c in dict.fromkeys(own["category"].dropna()):
        mine = own[own["category"] == c]
        theirs = scores[scores["doc_id"].isin(set(mine["doc_id"]))] if len(scores) else scores
        out.append(board_row(mine, base[base["category"] == c], theirs, metric, n_boot, seed, min_docs, category=c))
    return out


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
    rows, own_ar = [], []
    methods = kept[kept["method"] != BASELINE]
    for _, cell in methods.groupby(KEY, sort=False, dropna=False):  # a cell: one run per replicate
        mine = s[s["run_id"].isin(cell["run_id"])]
        method, task = cell["method"].iloc[0], cell["task"].iloc[0]
        own, base = mine[mine["method"] == method], mine[mine["method"] == BASELINE]
        if own.empty:
            note(f"run(s) {', '.join(cell['run_id'])}: no {method} rows; nothing to report")
            continue
        if base[base["error"].isna()].empty:
            note(f"run(s) {', '.join(cell['run_id'])} ({method} on {task}): no AR rows to pair with, so speedup "
                 "and lossless_rate are left empty")
        cell_scores = runs.scores[runs.scores["run_id"].isin(cell["run_id"])]
        metric = cell["metric"].iloc[0]
        rows.append(board_row(own, base, cell_scores, metric, n_boot, seed, min_docs))
        rows += turn_rows(own, base, cell_scores, metric, n_boot, seed, min_docs)
        rows += category_rows(own, base, cell_scores, metric, n_boot, seed, min_docs)
        own_ar.append(base[~foreign_history(mine, method)[base.index]])
    ar = pd.concat(own_ar) if own_ar else s.iloc[:0]
    ar = pd.concat([ar, s[(s["method"] == BASELINE) & s["run_id"].isin(kept.loc[kept["method"] == BASELINE, "run_id"])]])
    for _, group in ar.groupby(["model", "task", "hardware", "options", *SETTINGS], sort=False, dropna=False):
        ids = set(group["run_id"])
        metric = kept.loc[kept["run_id"].isin(ids), "metric"].iloc[0]
        group_scores = runs.scores[runs.scores["run_id"].isin(ids)]
        rows.append(board_row(group, group, group_scores, metric, n_boot, seed))
        rows += turn_rows(group, group, group_scores, metric, n_boot, seed, min_docs)
        rows += category_rows(group, group, group_scores, metric, n_boot, seed, min_docs)
    board = pd.DataFrame(rows, columns=COLUMNS)
    if len(board):
        board = provenance(board, runs.runs, note)
    order = board["method"].ne(BASELINE)
    by_turn = board["turn"].ne("all")  # the row over every turn first, then the per-turn rows, then per category
    by_cat = board["category"].ne("all")
    return (board.assign(_ar=order, _turn=by_turn, _cat=by_cat)
            .sort_values(["model", "hardware", "task", "_cat", "category", "_turn", "turn", "_ar", "method", "options",
                          *SETTINGS])
            .drop(columns=["_ar", "_turn", "_cat"]).reset_index(drop=True))


def run_speeds(runs: Runs) -> pd.DataFrame:
    """One row per run: its method's and its AR's throughput, and AR's against the median AR throughput of the runs
    with the same model, hardware, task and settings (`ar_vs_median`); `flagged` where that is off by more than
    AR_SPEED_TOLERANCE (the machine ran at another speed: its tok/s do not compare with the others')."""
    s, ar = runs.samples, runs.samples["method"] == BASELINE
    table = runs.runs.assign(options=runs.runs["method_options"].map(format_options))
    table = table.assign(tokens_per_s=table["run_id"].map(per_run_speed(s[~ar])),
                         ar_tokens_per_s=table["run_id"].map(per_run_speed(s[ar])))
    table.loc[table["method"] == BASELINE, "tokens_per_s"] = table["ar_tokens_per_s"]
    group = ["model", "hardware", "task", *SETTINGS]
    median = table.groupby(group, dropna=False)["ar_tokens_per_s"].transform("median")
    table = table.assign(ar_vs_median=table["ar_tokens_per_s"] / median)
    table["flagged"] = (table["ar_vs_median"] - 1).abs() > AR_SPEED_TOLERANCE
    cols = ["run_id", "model", "hardware", "task", "method", "options", "replicate", *SETTINGS, "created",
            "tokens_per_s", "ar_tokens_per_s", "ar_vs_median", "flagged"]
    return table[cols].sort_values(["model", "hardware", "task", "created", "run_id"]).reset_index(drop=True)


def speed_warnings(speeds: pd.DataFrame) -> list[str]:
    return [f"run {r.run_id} ({r.method} on {r.task}): AR ran at {r.ar_tokens_per_s:.1f} tok/s, {r.ar_vs_median:.2f}× "
            f"the median of the runs with the same settings: the machine was not at the same speed; compare its "
            "tok/s only with its own AR (its paired ratios stand)" for r in speeds[speeds["flagged"]].itertuples()]


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
