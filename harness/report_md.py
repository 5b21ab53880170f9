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

from harness.report import format_options, labels

log = logging.getLogger(__name__)
PROFILE_COLUMNS = ["width", "ms_median", "ms_p10", "ms_p90", "break_even_tokens_per_step"]  # harness.profile's CSV

CAPTIONS = {"speedup": "Speedup vs AR per task, 95% bootstrap intervals",
            "speedup_vs_tokens_per_step": "Speedup vs tokens committed per step",
            "accuracy_vs_speedup": "Accuracy vs speedup",
            "step_tokens": "Distribution of tokens committed per step"}


def fmt(value, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


def interval(row: pd.Series, name: str) -> str:
    point = fmt(row[name], ".2f")
    lo, hi = row[f"{name}_lo"], row[f"{name}_hi"]
    return point if pd.isna(lo) or pd.isna(hi) else f"{point} [{lo:.2f}, {hi:.2f}]"


def table(rows: pd.DataFrame) -> list[str]:
    head = ["method", "n", "tok/step", "accept", "tok/s", "speedup [95% CI]", "geomean [95% CI]", "lossless",
            "accuracy", "Δ accuracy", "errors"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        cells = [f"`{r['label']}`", str(r["n"]), fmt(r["tokens_per_step"], ".2f"), fmt(r["acceptance_rate"], ".1%"),
                 fmt(r["tokens_per_s"], ".1f"), interval(r, "speedup"), interval(r, "speedup_geomean"),
                 fmt(r["lossless_rate"], ".0%"), fmt(r["accuracy"], ".3f"), fmt(r["accuracy_delta"], "+.3f"),
                 str(r["n_errors"])]
        out.append("| " + " | ".join(cells) + " |")
    return out


def render(runs, board: pd.DataFrame, figures: dict, out: Path, command: str = "") -> str:
    board = board.assign(label=labels(board))
    lines = ["# Leaderboard", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(runs.runs)} run folders"
             + (f" by `{command}`" if command else "") + "; the numbers are in `leaderboard.csv`.", "",
             "Each method is paired with AR on the same requests in the same run (timed back to back). "
             "`speedup` = Σ AR time / Σ method time over the paired requests; `geomean` = geometric mean of the "
             "per-request ratios; brackets: 95% percentile bootstrap intervals over requests. `Δ accuracy` is "
             "against AR on the same documents; `lossless` is the share of outputs token-identical to AR's. "
             "AR rows pool the AR measurements of every run for that model, task and hardware.", ""]
    for (model, hardware), group in board.groupby(["model", "hardware"], sort=False):
        lines += [f"## {model} on {hardware}", ""]
        for task, rows in group.groupby("task", sort=False):
            metric = next((m for m in rows["metric"] if isinstance(m, str)), None)
            lines += [f"### {task}" + (f" (accuracy: `{metric}`)" if metric else " (speed only)"), "", *table(rows), ""]
        lines += profile_lines(model, hardware, out)
        for kind, path in figures.get((model, hardware), {}).items():
            rel = Path(os.path.relpath(path, out)).as_posix()
            lines += [f"![{CAPTIONS.get(kind, kind)}: {model} on {hardware}]({rel})", ""]
    if runs.warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in dict.fromkeys(runs.warnings)], ""]
    lines += ["## Runs", "", "| run_id | model | task | method | options | hardware | created | commit |",
              "|---|---|---|---|---|---|---|---|"]
    for _, r in runs.runs.sort_values(["model", "task", "method", "created"]).iterrows():
        opts = format_options(r["method_options"])
        lines.append(f"| {r['run_id']} | {r['model']} | {r['task']} | {r['method']} | {opts or '–'} | "
                     f"{r['hardware']} | {r['created']} | {(r['commit'] or '–')[:10]} |")
    return "\n".join(lines) + "\n"


def profile_lines(model: str, hardware: str, out: Path) -> list[str]:
    """The forward-cost table (`harness profile`) saved for this hardware in OUT/profile or results/profile,
    this model's when there is one, else another model's; [] when none was measured here."""
    found = []
    for folder in dict.fromkeys([out / "profile", Path("results/profile")]):
        for meta in sorted(folder.glob("*.json")):
            try:
                cond = json.loads(meta.read_text())
                table = pd.read_csv(meta.with_suffix(".csv"))[PROFILE_COLUMNS]
                if cond["hardware"]["label"] == hardware:
                    found.append((cond["model"] != model, cond, table))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("%s: not a readable forward-cost profile (%s); left out of the report", meta, e)
    if not found:
        return []
    _, cond, table = min(found, key=lambda f: f[0])
    lines = ["### Forward cost on this hardware", "",
             f"`harness profile`, {cond['created']}, {cond['model']} ({cond['dtype']}): one forward of w new tokens "
             f"after {cond['context']} cached tokens, median of {cond['repeats']}. "
             "A method whose forwards are w tokens wide is faster than AR only if it commits more than t(w)/t(1) "
             "tokens per step.", "", "| w | ms (median) | ms (p10–p90) | t(w)/t(1) = break-even tokens/step |",
             "|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.width} | {r.ms_median:.2f} | {r.ms_p10:.2f}–{r.ms_p90:.2f} | {r.break_even_tokens_per_step:.2f} |")
    return lines + [""]


def format_board(board: pd.DataFrame) -> str:
    """The leaderboard as a plain-text table for the terminal."""
    board = board.assign(label=labels(board))
    cols = [("task", 12, lambda r: str(r["task"])[:11]), ("method", 28, lambda r: str(r["label"])[:27]),
            ("n", 5, lambda r: str(r["n"])), ("tok/step", 9, lambda r: fmt(r["tokens_per_step"], ".2f")),
            ("tok/s", 8, lambda r: fmt(r["tokens_per_s"], ".1f")),
            ("speedup [95% CI]", 22, lambda r: interval(r, "speedup")),
            ("accept", 8, lambda r: fmt(r["acceptance_rate"], ".1%")),
            ("lossless", 9, lambda r: fmt(r["lossless_rate"], ".0%")),
            ("accuracy", 9, lambda r: fmt(r["accuracy"], ".3f")), ("Δacc", 7, lambda r: fmt(r["accuracy_delta"], "+.3f"))]
    lines = []
    for (model, hardware), group in board.groupby(["model", "hardware"], sort=False):
        head = "".join(f"{name:<{w}}" for name, w, _ in cols)
        lines += [f"{model} on {hardware}", head, "-" * len(head)]
        lines += ["".join(f"{get(r):<{w}}" for _, w, get in cols) for _, r in group.iterrows()]
    return "\n".join(lines)
