"""report.md: the leaderboard as Markdown tables, one per model, hardware and task, next to the plots.

    text = render(runs, board, figures, Path("results"), command="harness report results/runs")
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd

from harness.text import text_table

from harness.analysis.leaderboard import SETTINGS, labels, whole
from harness.analysis.specbench_tables import beside_published, category_tables
from harness.analysis.reference import differences, engine_label, reference_note
from methods.specs import format_options
from harness.analysis.summary import MIN_DOCS
from harness.engine.generate import REPEAT_RUN
from harness.text import PHRASE_TIMES, PHRASE_WORDS

log = logging.getLogger(__name__)
PROFILE_COLUMNS = ["engine", "width", "ms_median", "ms_p10", "ms_p90", "break_even_tokens_per_step"]  # harness profile's CSV

CAPTIONS = {"speedup_matrix": "Speedup vs AR, method × task (green faster, red slower; bold: the whole interval above 1×); a "
                              "method beats AR only where its tokens/step exceed its forward's break-even t(w)/t(1)",
            "speedup": "Speedup vs AR per task (throughput ratio), 95% bootstrap intervals over documents",
            "speedup_vs_tokens_per_step": "Speedup vs tokens committed per step, with the break-even rays "
                                          "speedup = tokens/step ÷ t(w)/t(1)",
            "accuracy_vs_speedup": "Accuracy vs speedup",
            "step_tokens": "Distribution of tokens committed per step",
            "acceptance_by_position": "Acceptance rate at each draft position",
            "speedup_vs_batch_size": "Speedup vs batched AR and throughput, against the batch size"}


def fmt(value, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


def interval(row: pd.Series, name: str, spec: str = ".2f") -> str:
    point = fmt(row.get(name), spec)
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    return point if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) else f"{point} [{lo:{spec}}, {hi:{spec}}]"


def table(rows: pd.DataFrame) -> list[str]:
    head = ["method", "n", "docs", "runs", "tok/step", "accept", "tok/s (AR)", "speedup [95% CI]", "clean [95% CI] (pairs)",
            "capped", "per answer [95% CI]", "geomean [95% CI]", "length", "lossless", "looping", "phrases", "accuracy",
            "Δ accuracy [95% CI]", "errors", "dirty"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        cells = [f"`{r['label']}`", str(r["n"]), fmt(r["n_docs"], ".0f"), fmt(r.get("n_runs"), ".0f"),
                 fmt(r["tokens_per_step"], ".2f"), fmt(r["acceptance_rate"], ".1%"),
                 f"{fmt(r['tokens_per_s'], '.1f')} ({fmt(r.get('ar_tokens_per_s'), '.1f')})", interval(r, "speedup"),
                 f"{interval(r, 'speedup_clean')} ({fmt(r.get('n_clean'), '.0f')})", fmt(r.get("capped_share"), ".0%"),
                 interval(r, "speedup_per_answer"), interval(r, "speedup_geomean"), fmt(r["length_ratio"], ".2f"),
                 fmt(r["lossless_rate"], ".0%"), fmt(r.get("repeat_share"), ".0%"), fmt(r.get("phrase_repeat_share"), ".0%"),
                 fmt(r["accuracy"], ".3f"), interval(r, "accuracy_delta", "+.3f"), str(r["n_errors"]),
                 {True: "yes", False: "no"}.get(r["dirty"], "?")]
        out.append("| " + " | ".join(cells) + " |")
    return out


def acceptance_tables(acc: pd.DataFrame, board: pd.DataFrame, top: int = 6) -> list[str]:
    """Per row of one task: the share of target forwards committing 1..top-1 and top+ tokens, and the acceptance
    rate at draft positions 1..top-1 (harness.analysis.acceptance)."""
    if acc.empty:
        return []
    key = [c for c in ("method", "options", *SETTINGS) if c in acc]
    head = ["method", "τ", *[f"{k}" for k in range(1, top)], f"{top}+", *[f"α{k}" for k in range(1, top)]]
    out = ["Share of target forwards committing k tokens (τ: their mean, the bonus token counted), and αk: the "
           "acceptance rate at draft position k given positions 1..k-1 accepted.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in board.iterrows():
        mine = acc.merge(pd.DataFrame([{k: r[k] for k in key}]), on=key)
        c, p = mine[mine["kind"] == "committed"], mine[mine["kind"] == "position"]
        share = [c.loc[c["k"] == k, "share"].sum() for k in range(1, top)] + [c.loc[c["k"] >= top, "share"].sum()]
        rate = [p.loc[p["k"] == k, "rate"] for k in range(1, top)]
        out.append(f"| `{r['label']}` | {fmt(r['tokens_per_step'], '.2f')} | " + " | ".join(f"{v:.0%}" for v in share)
                   + " | " + " | ".join(f"{v.iloc[0]:.0%}" if len(v) else "–" for v in rate) + " |")
    return out


def interval_notes(rows: pd.DataFrame) -> list[str]:
    """One note line per reason an interval is left empty, naming the rows."""
    out = []
    for column in ("interval_note", "clean_interval_note"):
        if column not in rows:
            continue
        for reason, group in rows[rows[column].notna()].groupby(column, sort=False):
            names = ", ".join(f"`{x}`" for x in group["label"])
            out.append(f"Note: no interval for {names}: {reason}.")
    return out


DEFINITIONS = (
    "Each method is paired with AR on the same requests in the same run (timed back to back); every column is "
    "defined once, in docs/measurement.md: `speedup` (a ratio of throughputs), `clean` (the same over the pairs where "
    "both ended on their own, not at the token cap; `capped`: the share of pairs where one did not), `per answer` "
    "(Σ AR time / Σ method time: what a user waits, whatever the lengths), `geomean`, `length`, `lossless`, "
    f"`looping` (one token {REPEAT_RUN}+ times in a row), `phrases` ({PHRASE_WORDS} words {PHRASE_TIMES}+ times), "
    "`Δ accuracy`. Brackets: 95% bootstrap intervals that resample runs (replicates), then documents (a "
    f"conversation's turns together); none below {MIN_DOCS} documents. `tok/s (AR)`: the method's throughput and "
    "AR's in the same run; compare throughputs only within a run. A row is one experiment: model, task, hardware, "
    "method, options, " + ", ".join(SETTINGS) + ".")


def _label(board: pd.DataFrame) -> pd.Series:
    names = labels(board)
    turn = board["turn"] if "turn" in board else pd.Series("all", index=board.index)
    return names.where(turn == "all", names + " (turn " + turn.astype(str) + ")")


def render(runs, board: pd.DataFrame, figures: dict, out: Path, command: str = "", profiles: dict | None = None,
           speeds: pd.DataFrame | None = None, acc: pd.DataFrame | None = None) -> str:
    """report.md; `profiles` ({(model, hardware): find_profile's result}) saves looking them up again; `speeds`
    (leaderboard.run_speeds) and `acc` (acceptance.acceptance) add the runs' speeds and the acceptance tables."""
    board = board.assign(label=_label(board))
    turn = board["turn"] if "turn" in board else pd.Series("all", index=board.index)
    category = board["category"] if "category" in board else pd.Series("all", index=board.index)
    lines = ["# Leaderboard", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(runs.runs)} run folders"
             + (f" by `{command}`" if command else "") + "; the numbers are in `leaderboard.csv`.", "",
             DEFINITIONS, "", "At a glance: `headline.md` (method × task matrix, and the CLLM paper's figures beside ours).", ""]
    for (model, hardware), group in board.groupby(["model", "hardware"], sort=False):
        lines += [f"## {model} on {hardware} (engine: {engines(group)})", "", *note_lines(group)]
        for task, rows in group.groupby("task", sort=False):
            metric = next((m for m in rows["metric"] if isinstance(m, str)), None)
            main, per_turn = rows[whole(rows)], rows[turn[rows.index] != "all"]
            per_category = rows[(category[rows.index] != "all") | whole(rows)]
            lines += [f"### {task}" + (f" (accuracy: `{metric}`)" if metric else " (speed only)"), "", *table(main), ""]
            notes = interval_notes(main)
            lines += [*notes, ""] if notes else []
            if len(per_turn):
                lines += ["Per turn, from the same runs (runs whose run.json lacks `pair_order` alternated who goes "
                          "first per turn, so the turn and the order are confounded there; docs/measurement.md#multi-turn):",
                          "", *table(per_turn), ""]
            lines += category_tables(per_category)
            lines += beside_published(per_category, model, hardware)
            if acc is not None:
                lines += [*acceptance_tables(acc[acc["task"] == task], main.assign(label=labels(main))), ""]
        lines += profile_markdown(profiles[(model, hardware)] if profiles is not None
                                  else find_profile(model, hardware, out))
        for kind, path in figures.get((model, hardware), {}).items():
            rel = Path(os.path.relpath(path, out)).as_posix()
            lines += [f"![{CAPTIONS.get(kind, kind)}: {model} on {hardware}]({rel})", ""]
    if runs.warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in dict.fromkeys(runs.warnings)], ""]
    lines += runs_section(runs, speeds)
    return "\n".join(lines) + "\n"


def runs_section(runs, speeds: pd.DataFrame | None) -> list[str]:
    """Every run with its settings, provenance and, where `speeds` is given, its own AR's throughput against the
    median of the runs with the same settings (flagged past leaderboard.AR_SPEED_TOLERANCE)."""
    by_id = speeds.set_index("run_id") if speeds is not None else None
    lines = ["## Runs", "", "Throughput is never pooled across runs: each run's method and AR speed, and AR's against "
             "the median AR speed of the runs with the same model, hardware, task and settings (⚠: off by more than "
             "10%: the machine ran at another speed).", "",
             "| run_id | task | method | options | replicate | settings | created | tok/s | AR tok/s | AR / median "
             "| commit | versions |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in runs.runs.sort_values(["model", "task", "method", "created"]).iterrows():
        opts = format_options(r["method_options"])
        sets = ", ".join(f"{k}={r[k]}" for k in SETTINGS)
        commit = (r["commit"] or "–")[:10] + {True: " (dirty)", None: " (dirty?)"}.get(r["dirty"], "")
        sp = by_id.loc[r["run_id"]] if by_id is not None and r["run_id"] in by_id.index else None
        speed = ["–"] * 3 if sp is None else [
            fmt(sp["tokens_per_s"], ".1f"), fmt(sp["ar_tokens_per_s"], ".1f"),
            fmt(sp["ar_vs_median"], ".2f") + (" ⚠" if sp["flagged"] else "")]
        lines.append(f"| {r['run_id']} | {r['task']} | {r['method']} | {opts or '–'} | {r.get('replicate', 1)} | "
                     f"{sets} | {r['created']} | " + " | ".join(speed) + f" | {commit} | {r['versions']} |")
    return lines


def find_profile(model: str, hardware: str, out: Path):
    """The forward-cost profile (`harness profile`) saved for this hardware in OUT/profile or results/profile,
    this model's when there is one, else another model's, as (conditions, table); None when none was measured here."""
    found = []
    for folder in dict.fromkeys([out / "profile", Path("results/profile")]):
        for meta in sorted(folder.glob("*.json")):
            try:
                cond = json.loads(meta.read_text())
                table = pd.read_csv(meta.with_suffix(".csv"))
                table = table.assign(engine=table["engine"] if "engine" in table else "eager")[PROFILE_COLUMNS]
                if cond["hardware"]["label"] == hardware:
                    found.append((cond["model"] != model, cond, table))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("%s: not a readable forward-cost profile (%s); left out of the report", meta, e)
    if not found:
        return None
    _, cond, table = min(found, key=lambda f: f[0])
    return cond, table


def profile_markdown(found) -> list[str]:
    """A (conditions, table) profile as the report's Markdown section; [] for None."""
    if found is None:
        return []
    cond, table = found
    lines = ["### Forward cost on this hardware", "",
             f"`harness profile`, {cond['created']}, {cond['model']} ({cond['dtype']}): one forward of w new tokens "
             f"after {cond['context']} cached tokens, median of {cond['repeats']}. "
             "A method whose forwards are w tokens wide is faster than AR only if it commits more than t(w)/t(1) "
             "tokens per step (t(1) of the same engine).", "",
             "| engine | w | ms (median) | ms (p10–p90) | t(w)/t(1) = break-even tokens/step |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.engine} | {r.width} | {r.ms_median:.2f} | {r.ms_p10:.2f}–{r.ms_p90:.2f} | "
                     f"{r.break_even_tokens_per_step:.2f} |")
    return lines + [""]


def format_board(board: pd.DataFrame) -> str:
    """The leaderboard as a plain-text table for the terminal (per-turn and per-category rows marked as such)."""
    category = board["category"] if "category" in board else pd.Series("all", index=board.index)
    board = board.assign(label=_label(board).where(category == "all", _label(board) + " [" + category.astype(str) + "]"))
    cols = [("task", lambda r: str(r["task"])), ("method", lambda r: str(r["label"])), ("n", lambda r: str(r["n"])),
            ("tok/step", lambda r: fmt(r["tokens_per_step"], ".2f")), ("tok/s", lambda r: fmt(r["tokens_per_s"], ".1f")),
            ("speedup [95% CI]", lambda r: interval(r, "speedup")), ("length", lambda r: fmt(r["length_ratio"], ".2f")),
            ("accept", lambda r: fmt(r["acceptance_rate"], ".1%")), ("lossless", lambda r: fmt(r["lossless_rate"], ".0%")),
            ("accuracy", lambda r: fmt(r["accuracy"], ".3f")), ("Δacc", lambda r: fmt(r["accuracy_delta"], "+.3f"))]
    lines = []
    for (model, hardware), group in board.groupby(["model", "hardware"], sort=False):
        rows = [[get(r) for _, get in cols] for _, r in group.iterrows()]
        lines += [f"{model} on {hardware} (engine: {engines(group)})", text_table([name for name, _ in cols], rows)]
        lines += [line for line in note_lines(group) if line]
    return "\n".join(lines)


def engines(rows: pd.DataFrame) -> str:
    """The engines that made these rows' numbers, with their cache: `compiled (static KV cache)`."""
    return ", ".join(engine_label(e) for e in dict.fromkeys(rows["engine"].astype(str)))


def note_lines(rows: pd.DataFrame) -> list[str]:
    """[the note, ""] where these rows' settings differ from the committed sweep's; [] where none does."""
    diffs = [d for _, r in rows.iterrows() for d in differences(r.to_dict())]
    note = reference_note({"these rows": diffs})
    return [note, ""] if note else []
