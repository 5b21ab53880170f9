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

from harness.analysis.leaderboard import SETTINGS, labels
from harness.analysis.reference import differences, engine_label, reference_note
from methods.specs import format_options
from harness.analysis.summary import MIN_DOCS
from harness.engine.generate import REPEAT_RUN
from harness.text import PHRASE_TIMES, PHRASE_WORDS

log = logging.getLogger(__name__)
PROFILE_COLUMNS = ["engine", "width", "ms_median", "ms_p10", "ms_p90", "break_even_tokens_per_step"]  # harness profile's CSV

CAPTIONS = {"speedup_matrix": "Speedup vs AR, method × task (green faster, red slower; bold: interval clear of 1×); a "
                              "method beats AR only where its tokens/step exceed its forward's break-even t(w)/t(1)",
            "speedup": "Speedup vs AR per task (throughput ratio), 95% bootstrap intervals over documents",
            "speedup_vs_tokens_per_step": "Speedup vs tokens committed per step, with the break-even rays "
                                          "speedup = tokens/step ÷ t(w)/t(1)",
            "accuracy_vs_speedup": "Accuracy vs speedup",
            "step_tokens": "Distribution of tokens committed per step",
            "speedup_vs_batch_size": "Speedup vs batched AR and throughput, against the batch size"}


def fmt(value, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


def interval(row: pd.Series, name: str) -> str:
    point = fmt(row[name], ".2f")
    lo, hi = row[f"{name}_lo"], row[f"{name}_hi"]
    return point if pd.isna(lo) or pd.isna(hi) else f"{point} [{lo:.2f}, {hi:.2f}]"


def table(rows: pd.DataFrame) -> list[str]:
    head = ["method", "n", "docs", "tok/step", "accept", "tok/s", "speedup [95% CI]", "geomean [95% CI]", "length",
            "lossless", "looping", "phrases", "accuracy", "Δ accuracy", "errors", "dirty"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        cells = [f"`{r['label']}`", str(r["n"]), fmt(r["n_docs"], ".0f"), fmt(r["tokens_per_step"], ".2f"),
                 fmt(r["acceptance_rate"], ".1%"), fmt(r["tokens_per_s"], ".1f"), interval(r, "speedup"),
                 interval(r, "speedup_geomean"), fmt(r["length_ratio"], ".2f"), fmt(r["lossless_rate"], ".0%"),
                 fmt(r.get("repeat_share"), ".0%"), fmt(r.get("phrase_repeat_share"), ".0%"), fmt(r["accuracy"], ".3f"),
                 fmt(r["accuracy_delta"], "+.3f"), str(r["n_errors"]),
                 {True: "yes", False: "no"}.get(r["dirty"], "?")]
        out.append("| " + " | ".join(cells) + " |")
    return out


def interval_notes(rows: pd.DataFrame) -> list[str]:
    """One note line per reason an interval is left empty, naming the rows."""
    out = []
    for reason, group in rows[rows["interval_note"].notna()].groupby("interval_note", sort=False):
        names = ", ".join(f"`{x}`" for x in group["label"])
        out.append(f"Note: no interval for {names}: {reason}.")
    return out


DEFINITIONS = (
    "Each method is paired with AR on the same requests in the same run (timed back to back). "
    "`speedup` = (Σ method new tokens / Σ method time) ÷ (Σ AR new tokens / Σ AR time) over the paired requests "
    "(the ratio of throughputs: for a lossless method, whose output equals AR's, this is Σ AR time / Σ method time); "
    "`geomean` = geometric mean of the per-request throughput ratios; `length` = Σ method new tokens / Σ AR new "
    "tokens over the same pairs (below 1: the method stopped earlier; above 1: it wrote more, e.g. a loop). "
    "Brackets: 95% percentile bootstrap intervals that resample documents (a conversation's turns together); "
    f"with fewer than {MIN_DOCS} documents (`docs`) there is no interval, and a note says so. `Δ accuracy` is "
    "against AR on the same documents; `lossless` is the share of outputs token-identical to AR's; "
    f"`looping` the share of outputs holding one token {REPEAT_RUN} or more times in a row (a looping model commits "
    "many tokens per step cheaply: compare with AR's row); `phrases` the share holding one sequence of "
    f"{PHRASE_WORDS} words {PHRASE_TIMES} or more times (the same at sentence scale; small models repeat "
    "sentences under greedy decoding too, so read it against AR's row). A row is one "
    "experiment: model, task, hardware, method, options, " + ", ".join(SETTINGS) + "; AR rows pool only runs "
    "with identical settings. `dirty`: a run of the row was made with uncommitted changes. "
    "Definitions: docs/measurement.md.")


def render(runs, board: pd.DataFrame, figures: dict, out: Path, command: str = "", profiles: dict | None = None) -> str:
    """report.md; `profiles` ({(model, hardware): find_profile's result}) saves looking them up again."""
    board = board.assign(label=labels(board))
    lines = ["# Leaderboard", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(runs.runs)} run folders"
             + (f" by `{command}`" if command else "") + "; the numbers are in `leaderboard.csv`.", "",
             DEFINITIONS, "", "At a glance: `headline.md` (method × task matrix, and the CLLM paper's figures beside ours).", ""]
    for (model, hardware), group in board.groupby(["model", "hardware"], sort=False):
        lines += [f"## {model} on {hardware} (engine: {engines(group)})", "", *note_lines(group)]
        for task, rows in group.groupby("task", sort=False):
            metric = next((m for m in rows["metric"] if isinstance(m, str)), None)
            lines += [f"### {task}" + (f" (accuracy: `{metric}`)" if metric else " (speed only)"), "", *table(rows), ""]
            notes = interval_notes(rows)
            lines += [*notes, ""] if notes else []
        lines += profile_markdown(profiles[(model, hardware)] if profiles is not None
                                  else find_profile(model, hardware, out))
        for kind, path in figures.get((model, hardware), {}).items():
            rel = Path(os.path.relpath(path, out)).as_posix()
            lines += [f"![{CAPTIONS.get(kind, kind)}: {model} on {hardware}]({rel})", ""]
    if runs.warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in dict.fromkeys(runs.warnings)], ""]
    lines += ["## Runs", "", "| run_id | model | task | method | options | hardware | settings | created | commit "
              "| versions |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in runs.runs.sort_values(["model", "task", "method", "created"]).iterrows():
        opts = format_options(r["method_options"])
        sets = ", ".join(f"{k}={r[k]}" for k in SETTINGS)
        commit = (r["commit"] or "–")[:10] + {True: " (dirty)", None: " (dirty?)"}.get(r["dirty"], "")
        lines.append(f"| {r['run_id']} | {r['model']} | {r['task']} | {r['method']} | {opts or '–'} | "
                     f"{r['hardware']} | {sets} | {r['created']} | {commit} | {r['versions']} |")
    return "\n".join(lines) + "\n"


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
    """The leaderboard as a plain-text table for the terminal."""
    board = board.assign(label=labels(board))
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
