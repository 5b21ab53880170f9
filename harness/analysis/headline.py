"""headline.md: the leaderboard at a glance, and the CLLM paper's figures beside ours.

    text = render_headline(board, profiles)   # profiles: {(model, hardware): (conditions, table) or None}
Per model and hardware: a method × task matrix of speedups with their 95% intervals, then per task a compact
table (speedup, tokens/step, accuracy, Δ accuracy, lossless, length), for a task with categories (spec_bench)
Spec-Bench's published leaderboard beside ours (harness.analysis.specbench_tables), then the reproduction table.
Pure tables.
"""
from __future__ import annotations

import pandas as pd

from harness.analysis.leaderboard import labels, whole
from harness.analysis.markdown import fmt, interval
from harness.analysis.specbench_tables import beside_published
from harness.analysis.summary import BASELINE

# The CLLM paper's speedups (Kou et al. 2024, arXiv 2403.00835; LLaMA-2-7B-sized models on one A100, batch 1),
# with where each figure comes from. Only figures we could read in a source are given; the rest say so.
PAPER = [
    {"method": "cllm", "task": "all", "paper": "2.4–3.4×",
     "source": "abstract: \"2.4× to 3.4× improvements in generation speed\" across the four benchmarks"},
    {"method": "cllm", "task": "spider", "paper": "3.4×",
     "source": "§1: CLLM trained on ~1M tokens reaches 3.4× on Spider"},
    {"method": "cllm", "task": "gsm8k", "paper": "~3×",
     "source": "authors' blog, Figure 1: CLLM-ABEL-7B-001 with Jacobi decoding on GSM8K"},
    {"method": "jacobi", "task": "all", "paper": "~1.05×",
     "source": "authors' blog: vanilla Jacobi decoding averages 1.05× over AR"},
    {"method": "lookahead", "task": "all", "paper": "~1.7×",
     "source": "as cited in this project's issue #20 from the paper's baselines; not checked against Table 1"},
    {"method": "speculative", "task": "all", "paper": "–",
     "source": "Table 1 lists speculative decoding with a distilled draft model; its figures are not quoted here"},
]


def cell(row: pd.Series | None, name: str = "speedup") -> str:
    """A matrix cell: the figure [lo, hi], bold where the whole interval is above 1 (faster than AR, established)."""
    if row is None or pd.isna(row.get(name)):
        return "–"
    s, lo, hi = row[name], row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return f"{s:.2f}× (no CI)"
    text = f"{s:.2f}× [{lo:.2f}, {hi:.2f}]"
    return f"**{text}**" if lo > 1 else text


def matrix(board: pd.DataFrame, name: str = "speedup", count: str | None = None) -> list[str]:
    """Method × task of one figure: one row per method label (AR left out: 1× by definition); `count` adds a
    column's value after each cell (e.g. the clean pairs)."""
    tasks = list(dict.fromkeys(board["task"]))
    rows = board[board["method"] != BASELINE]
    out = ["| method | " + " | ".join(tasks) + " | tokens/step (mean over tasks) | lossless |",
           "|---|" + "---|" * (len(tasks) + 2)]
    for label, mine in rows.groupby("label", sort=False):
        by_task = {t: r for t, r in mine.set_index("task").iterrows()}
        tps = mine["tokens_per_step"].astype(float).mean()
        lossless = mine["lossless_rate"].astype(float)
        loss_text = "–" if lossless.isna().all() else (
            f"{lossless.min():.0%}" if lossless.min() == lossless.max() else f"{lossless.min():.0%}–{lossless.max():.0%}")
        cells = [cell(by_task.get(t), name) + (f" (n {fmt(by_task[t][count], '.0f')})" if count and t in by_task else "")
                 for t in tasks]
        out.append(f"| `{label}` | " + " | ".join(cells) + f" | {tps:.2f} | {loss_text} |")
    return out


def lossy_table(board: pd.DataFrame) -> list[str]:
    """Methods whose output is not token-identical to AR's: per-token and per-answer speedups, the accuracy difference
    and the quality-weighted speedup, each with its interval."""
    rows = board[(board["method"] != BASELINE) & (board["lossless_rate"].astype(float) < 1)]
    if rows.empty:
        return []
    out = ["| method | task | per token | per answer | length | accuracy (AR) | Δ accuracy | quality-weighted |",
           "|---|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        acc = "–" if pd.isna(r["accuracy"]) else f"{r['accuracy']:.3f} ({r['accuracy'] - r['accuracy_delta']:.3f})" \
            if not pd.isna(r["accuracy_delta"]) else f"{r['accuracy']:.3f}"
        out.append(f"| `{r['label']}` | {r['task']} | {cell(r)} | {cell(r, 'speedup_per_answer')} | "
                   f"{fmt(r['length_ratio'], '.2f')} | {acc} | {interval(r, 'accuracy_delta', '+.3f')} | "
                   f"{cell(r, 'speedup_quality')} |")
    return out


def task_table(rows: pd.DataFrame) -> list[str]:
    """Per task: AR first (its throughput and accuracy), then every method."""
    out = ["| method | n (docs) | speedup [95% CI] | clean [95% CI] | tokens/step | tok/s (AR, same run) | accuracy "
           "| Δ accuracy | lossless | length |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        speed = "1 (reference)" if r["method"] == BASELINE else cell(r)
        clean = "–" if r["method"] == BASELINE else f"{cell(r, 'speedup_clean')} (n {fmt(r.get('n_clean'), '.0f')})"
        out.append(f"| `{r['label']}` | {r['n']} ({fmt(r['n_docs'], '.0f')}) | {speed} | {clean} "
                   f"| {fmt(r['tokens_per_step'], '.2f')} | {fmt(r['tokens_per_s'], '.1f')} "
                   f"({fmt(r.get('ar_tokens_per_s'), '.1f')}) | {fmt(r['accuracy'], '.3f')} "
                   f"| {fmt(r['accuracy_delta'], '+.3f')} | {fmt(r['lossless_rate'], '.0%')} | {fmt(r['length_ratio'], '.2f')} |")
    return out


def ours(board: pd.DataFrame, method: str, task: str) -> tuple[str, str]:
    """Our figures for a paper row: the method's rows (every option set) on the task, or on every task."""
    rows = board[(board["method"] == method) & ((board["task"] == task) if task != "all" else True)]
    rows = rows[rows["speedup"].notna()]
    if rows.empty:
        return "not run", "–"
    speed = rows["speedup"].astype(float)
    tps = rows["tokens_per_step"].astype(float)
    span = lambda v, unit: f"{v.min():.2f}{unit}" if len(v) == 1 else f"{v.min():.2f}–{v.max():.2f}{unit}"  # noqa: E731
    return span(speed, "×"), span(tps, "")


def profile_sentence(profile) -> str:
    """The break-even line from a `harness profile` table: t(w)/t(1) per width, per engine."""
    if profile is None:
        return ("No forward-cost profile of this hardware was found (`harness profile`), so the break-even "
                "tokens/step are not shown.")
    cond, table = profile
    parts = []
    for engine, rows in table.groupby("engine", sort=False):
        pairs = ", ".join(f"w={int(r.width)}: {r.break_even_tokens_per_step:.2f}" for r in rows.itertuples() if r.width > 1)
        t1 = rows.loc[rows["width"] == 1, "ms_median"]
        parts.append(f"{engine} (t(1) = {t1.iloc[0]:.1f} ms): {pairs}" if len(t1) else f"{engine}: {pairs}")
    return (f"On this hardware (`harness profile`, {cond.get('created', '?')}, {cond.get('model', '?')}) one forward "
            f"of w tokens costs t(w)/t(1) forwards of one token — " + "; ".join(parts) + ". A method whose forwards "
            "are w tokens wide beats AR only if it commits more than t(w)/t(1) tokens per step. On the paper's GPU "
            "a 7B model's forward is memory-bound, so widening it is nearly free there (t(w)/t(1) close to 1 for "
            "the widths these methods use): the same tokens per step buy much more speed there than here.")


def reproduction(board: pd.DataFrame, profile) -> list[str]:
    out = ["| method | task | paper (7B, A100) | source of the paper's figure | ours: speedup | ours: tokens/step |",
           "|---|---|---|---|---|---|"]
    for p in PAPER:
        speed, tps = ours(board, p["method"], p["task"])
        out.append(f"| {p['method']} | {p['task']} | {p['paper']} | {p['source']} | {speed} | {tps} |")
    return out + ["", profile_sentence(profile)]


def render_headline(board: pd.DataFrame, profiles: dict, command: str = "", speeds: pd.DataFrame | None = None) -> str:
    turn = board["turn"] if "turn" in board else pd.Series("all", index=board.index)
    per_turn = board[turn != "all"].assign(label=lambda b: labels(board).loc[b.index] + " (turn " + b["turn"] + ")")
    per_category = board[(turn == "all") & ~whole(board)].assign(label=lambda b: labels(board).loc[b.index])
    board = board[whole(board)]
    board = board.assign(label=labels(board))
    lines = ["# Headline", "",
             "The leaderboard at a glance (every column: `report.md`; every definition: docs/measurement.md). "
             "Speedup: the method's throughput over AR's on the same requests, paired in one run; brackets: 95% "
             "interval resampling runs, then documents; **bold**: the whole interval is above 1 (faster than AR on "
             "this evidence)." + (f" Made by `{command}`." if command else ""), ""]
    for (model, hardware), group in board.groupby(["model", "hardware"], sort=False):
        engines = ", ".join(dict.fromkeys(group["engine"].astype(str)))
        lines += [f"## {model} on {hardware} (engine: {engines})", "", *matrix(group), "",
                  "### Clean pairs only", "",
                  "The same over the pairs where both the method and AR ended on their own (EOS or a stop string), "
                  "not at the token cap, where a looping small model hands a copying drafter free tokens; n: clean "
                  "pairs, no interval below 10 documents.", "", *matrix(group, "speedup_clean", "n_clean"), ""]
        lossy = lossy_table(group)
        if lossy:
            lines += ["### Lossy methods: per token and per answer", "",
                      "A method whose output differs from AR's is credited per token by `speedup`; per answer, "
                      "it takes Σ AR time / Σ its time over the same requests (above 1: faster per answer); "
                      "quality-weighted: the per-answer speedup times min(1, exp(-3 (1 − accuracy / AR's "
                      "accuracy))) (docs/measurement.md#quality-weighted-speedup).", "",
                      *lossy, ""]
        flagged = speeds[(speeds["model"] == model) & (speeds["hardware"] == hardware) & speeds["flagged"]] \
            if speeds is not None else []
        if len(flagged):
            lines += ["Runs whose AR ran more than 10% off the median AR speed of their task (their paired ratios "
                      "stand; their tok/s do not compare with the other runs'): " + ", ".join(
                          f"{r.run_id} ({r.method} on {r.task}, {r.ar_vs_median:.2f}×)" for r in flagged.itertuples())
                      + ".", ""]
        for task, rows in group.groupby("task", sort=False):
            turns = per_turn[(per_turn["task"] == task) & (per_turn["model"] == model) & (per_turn["hardware"] == hardware)]
            lines += [f"### {task}", "", *task_table(rows), *task_table(turns)[2:], ""]
        for task, rows in group.groupby("task", sort=False):
            mine = per_category[(per_category["task"] == task) & (per_category["model"] == model)
                                & (per_category["hardware"] == hardware)]
            beside = beside_published(pd.concat([rows, mine]), model, hardware) if len(mine) else []
            lines += [f"### Beside Spec-Bench's leaderboard ({task})", "", *beside] if beside else []
        lines += ["### Beside the CLLM paper", "",
                  "The paper measured 7B models on a GPU; we measure a 135M model on this hardware. Ours spans every "
                  "option set of the method in this leaderboard (on the task, or over all tasks for `all`).", "",
                  *reproduction(group, profiles.get((model, hardware))), ""]
    return "\n".join(lines) + "\n"
