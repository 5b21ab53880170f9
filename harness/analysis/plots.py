"""The report's plots (matplotlib, Agg backend, PNG), one set per (model, hardware) in the leaderboard.

    figures = make_plots(board, samples, Path("results/plots"))   # {(model, hardware): {kind: path}}
Kinds: `speedup_matrix` (method × task, red below AR, green above), `speedup` (bars with 95% intervals per
task, where there are enough documents),
`speedup_vs_tokens_per_step`, `accuracy_vs_speedup`, `step_tokens` (the distribution of tokens committed
per step) and, when the runs have more than one batch size, `speedup_vs_batch_size`. Every figure names its model
and hardware.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.engine.records import write_atomic  # noqa: E402
from harness.analysis.leaderboard import labels, whole  # noqa: E402
from harness.analysis.acceptance import by_position  # noqa: E402
from harness.analysis.summary import BASELINE, MIN_DOCS  # noqa: E402

KINDS = ("speedup_matrix", "speedup", "speedup_vs_tokens_per_step", "accuracy_vs_speedup", "step_tokens", "speedup_vs_batch_size")
MARKERS = "osD^vP*Xh<>"
MAX_STEP_TOKENS = 16  # the distribution's last bin holds this many tokens or more
BREAK_EVEN = (1.0, 1.5, 2.0, 3.0)  # t(w)/t(1): the cost of a method's forward in one-token forwards
METRIC_NAMES = {"exact_match,flexible-extract": "GSM8K accuracy (exact match)",
                "exact_match,strict-match": "GSM8K accuracy (exact match, strict format)",
                "pass@1,none": "HumanEval pass@1 (unit tests pass)",
                "exec_acc,none": "Spider execution accuracy",
                "exact_string_match,none": "Spider exact SQL match",
                "judge_score,none": "MT-bench judge score (1-10)"}


def metric_name(metric: str | None, task: str = "") -> str:
    """An lm-eval key ("exact_match,flexible-extract") in words, for an axis."""
    if not metric:
        return "no metric"
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    name, _, flt = metric.partition(",")
    words = f"{task} {name.replace('_', ' ')}".strip()
    return words if flt in ("", "none") else f"{words} ({flt.replace('-', ' ')})"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def colours(names) -> dict[str, str]:
    """One fixed colour per method label (AR black), the same in every figure."""
    others = sorted(n for n in set(names) if n != BASELINE)
    cmap = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
    return {BASELINE: "black", **{n: cmap(i % cmap.N) for i, n in enumerate(others)}}


def _title(ax_or_fig, what: str, model: str, hardware: str) -> None:
    text = f"{what}\n{model} on {hardware}"
    (ax_or_fig.suptitle if hasattr(ax_or_fig, "suptitle") else ax_or_fig.set_title)(text, fontsize=11)


def speedup_bars(board: pd.DataFrame, model: str, hardware: str, colour: dict):
    tasks = list(dict.fromkeys(board["task"]))
    rows = board[(board["method"] != BASELINE) & board["speedup"].notna()]
    names = list(dict.fromkeys(rows["label"])) or ["(none)"]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.0 + 0.3 * len(tasks) * len(names)), 4.8))
    for i, name in enumerate(names):
        r = rows[rows["label"] == name].set_index("task").reindex(tasks)
        x = np.arange(len(tasks)) + (i - (len(names) - 1) / 2) * width
        ax.bar(x, r["speedup"].astype(float), width, label=name, color=colour.get(name))
        has = r["speedup_lo"].notna().to_numpy() & r["speedup_hi"].notna().to_numpy()  # no bar where no interval
        if has.any():
            err = np.vstack([r["speedup"] - r["speedup_lo"], r["speedup_hi"] - r["speedup"]]).astype(float)[:, has]
            ax.errorbar(x[has], r["speedup"].astype(float)[has], yerr=err, fmt="none", capsize=3, ecolor="0.3")
        # Each value at its bar's foot, clear of the error bar's cap, upright so that neighbours never overlap.
        for xi, v in zip(x, r["speedup"]):
            if not pd.isna(v):
                ax.text(xi, 0.01, f"{v:.2f}×", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                        rotation=90, fontsize=7, bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="AR (1×)")
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_xlabel("task")
    ax.set_ylabel("speedup vs AR (×): method tokens/s ÷ AR tokens/s")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _title(ax, f"Speedup vs AR per task (error bars: 95% bootstrap interval over documents, none below {MIN_DOCS})",
           model, hardware)
    return fig


def speedup_matrix(board: pd.DataFrame, model: str, hardware: str):
    """Method × task heatmap: colour = log2(speedup) (red slower than AR, green faster), each cell annotated with
    the speedup and its interval; the text is bold where the whole interval is above (or below) 1."""
    tasks = list(dict.fromkeys(board["task"]))
    rows = board[board["method"] != BASELINE]
    names = list(dict.fromkeys(rows["label"])) or ["(none)"]
    cells = {(r["label"], r["task"]): r for _, r in rows.iterrows() if not pd.isna(r["speedup"])}
    values = np.array([[np.log2(float(cells[(n, t)]["speedup"])) if (n, t) in cells else np.nan for t in tasks]
                       for n in names])
    fig, ax = plt.subplots(figsize=(2.3 * len(tasks) + 3.2, 0.62 * len(names) + 1.9))
    ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=-2, vmax=2, aspect="auto")
    for i, name in enumerate(names):
        for j, task in enumerate(tasks):
            r = cells.get((name, task))
            if r is None:
                ax.text(j, i, "–", ha="center", va="center", fontsize=9)
                continue
            ci = "" if pd.isna(r["speedup_lo"]) else f"\n[{r['speedup_lo']:.2f}, {r['speedup_hi']:.2f}]"
            sure = not pd.isna(r["speedup_lo"]) and r["speedup_lo"] > 1  # bold: faster than AR on this evidence
            ax.text(j, i, f"{r['speedup']:.2f}×{ci}", ha="center", va="center", fontsize=8,
                    fontweight="bold" if sure else "normal")
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
    ax.set_xlabel("a method beats AR only where its tokens/step exceed its forward's break-even t(w)/t(1)\n"
                  "(w: tokens per forward; t(w)/t(1) from `harness profile`, the report's forward-cost table)", fontsize=8)
    _title(ax, "Speedup vs AR (green: faster, red: slower; bold: the whole 95% interval above 1×)", model, hardware)
    fig.tight_layout()
    return fig


def speedup_vs_tokens_per_step(board: pd.DataFrame, model: str, hardware: str, colour: dict):
    fig, ax = plt.subplots(figsize=(7, 5))
    tasks = list(dict.fromkeys(board["task"]))
    rows = board[board["speedup"].notna() & board["tokens_per_step"].notna()]
    for name, r in rows.groupby("label", sort=False):
        for _, p in r.iterrows():
            ax.errorbar(p["tokens_per_step"], p["speedup"], yerr=_err(p), color=colour.get(name), alpha=0.5,
                        linewidth=1)
            ax.scatter(p["tokens_per_step"], p["speedup"], color=colour.get(name), s=50,
                       marker=MARKERS[tasks.index(p["task"]) % len(MARKERS)], edgecolors="white", linewidths=0.5,
                       zorder=3)
    ax.axhline(1.0, color="0.5", linestyle="--", linewidth=1)
    break_even_lines(ax)
    handles = [plt.Line2D([], [], color=colour.get(n), marker="o", linestyle="", label=n)
               for n in dict.fromkeys(rows["label"])]
    if len(tasks) > 1:  # the marker tells the task (text beside each point overlapped where methods cluster)
        handles += [plt.Line2D([], [], color="0.4", marker=MARKERS[i % len(MARKERS)], linestyle="", label=f"task {t}")
                    for i, t in enumerate(tasks)]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel("tokens committed per step (tokens / target forward)")
    ax.set_ylabel("speedup vs AR (×), 95% interval")
    _title(ax, "Speedup vs tokens per step" + ("" if len(tasks) > 1 else f" on {tasks[0]}") + " (dashed: AR speed;\n"
           "dotted: speedup = tokens/step ÷ c, a method whose forward costs c one-token forwards; c = t(w)/t(1))",
           model, hardware)
    return fig


def break_even_lines(ax) -> None:
    """The break-even family: a method committing x tokens per step with forwards that cost c one-token forwards
    runs at x / c of AR's speed (c = t(w)/t(1) from `harness profile`), so it beats AR only where x > c. Each c
    is a dotted ray through the origin, named where it leaves the plot."""
    ax.autoscale(False)  # the data's limits, whatever the rays span
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    x0, x1 = min(x0, 0.9), max(x1, 1.1)
    ax.set_xlim(x0, x1)
    xs = np.linspace(x0, x1, 50)
    for c in BREAK_EVEN:
        ax.plot(xs, xs / c, color="0.6", linestyle=":", linewidth=1, zorder=1)
        x_end = min(x1, y1 * c)  # where the ray leaves the plot: its right edge or its top
        if x0 < x_end and y0 < x_end / c:
            ax.annotate(f"c = {c:g}", (x_end, x_end / c), xytext=(-2, -2), textcoords="offset points", ha="right",
                        va="top", fontsize=7, color="0.35", zorder=4,
                        bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=0.5))


def accuracy_vs_speedup(board: pd.DataFrame, model: str, hardware: str, colour: dict):
    """One panel per task that has an accuracy (MT-bench without a judge has none and gets no panel)."""
    scored_tasks = board[board["accuracy"].notna() & board["speedup"].notna()]["task"]
    tasks = list(dict.fromkeys(scored_tasks))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)) + 0.6, 4.4), squeeze=False)
    if not tasks:
        axes[0][0].set_axis_off()
        axes[0][0].text(0.5, 0.5, "no task has an accuracy\n(speed only, or MT-bench without a judge)", ha="center",
                        va="center", transform=axes[0][0].transAxes, fontsize=10, color="0.4")
    for ax, task in zip(axes[0], tasks):
        scored = board[(board["task"] == task) & board["speedup"].notna() & board["accuracy"].notna()]
        metric = next((m for m in scored["metric"] if isinstance(m, str)), None)
        for _, p in scored.iterrows():
            ax.errorbar(p["speedup"], p["accuracy"], xerr=_err(p), color=colour.get(p["label"]), alpha=0.5, linewidth=1)
            ax.scatter(p["speedup"], p["accuracy"], color=colour.get(p["label"]), s=50, label=p["label"], zorder=3)
        fraction = scored["accuracy"].max() <= 1
        if fraction:
            ax.set_ylim(-0.03, 1.03)
        ax.axvline(1.0, color="0.5", linestyle="--", linewidth=1)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("speedup vs AR (×), 95% interval")
        ax.set_ylabel(metric_name(metric, task) + (", share" if fraction else ""))
    legend = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels())}
    if legend:  # one legend for every panel, beside them: inside, it hid the points
        fig.legend(legend.values(), legend.keys(), fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    left_out = [t for t in dict.fromkeys(board["task"]) if t not in tasks]
    _title(fig, "Accuracy vs speedup (dashed: AR speed)" + (f"; no accuracy: {', '.join(left_out)}" if left_out else ""),
           model, hardware)
    fig.tight_layout()
    return fig


def step_tokens(board: pd.DataFrame, samples: pd.DataFrame, model: str, hardware: str, colour: dict):
    """Share of steps committing 1, 2, ... tokens, per method and task, from the rows' `step_tokens`;
    rows without them fall back to the per-request mean tokens per step (the title says so)."""
    tasks = list(dict.fromkeys(board["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 0.6, 6.6), squeeze=False)
    per_step = samples["step_tokens"].map(lambda v: isinstance(v, list) and len(v) > 0).any()
    top = 2  # the widest bin any panel needs (at most MAX_STEP_TOKENS): no run of empty bins at the right
    for ax, task in zip(axes[0], tasks):
        for _, b in board[(board["task"] == task) & (board["method"] != BASELINE)].iterrows():
            rows = rows_of(samples, b)
            if per_step:
                counts = np.clip(np.concatenate([np.asarray(v, dtype=int) for v in rows["step_tokens"]
                                                 if isinstance(v, list)] or [np.zeros(0, int)]), 1, MAX_STEP_TOKENS)
                if counts.size == 0:
                    continue
                share = np.bincount(counts)[1:] / counts.size
                share[share == 0] = np.nan  # not drawn on the log scale
                top = max(top, len(share))
                ax.plot(np.arange(1, len(share) + 1), 100 * share, marker="o", markersize=3,
                        color=colour.get(b["label"]), label=f"{b['label']} (mean {b['tokens_per_step']:.2f})")
            else:
                values = (rows["new_tokens"].astype(float) / rows["steps"].astype(float)).dropna()
                ax.hist(values, bins=20, histtype="step", color=colour.get(b["label"]), label=b["label"])
        ax.set_title(task, fontsize=10)
        if not per_step:
            ax.set_xlabel("tokens per step, per-request mean")
            ax.set_ylabel("requests")
        if ax.get_legend_handles_labels()[0]:  # below its panel: the long tails run under any legend inside it
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    for ax in axes[0] if per_step else ():  # one x range for every panel: the data's, so panels compare
        last = f" (last bin: {MAX_STEP_TOKENS}+)" if top == MAX_STEP_TOKENS else ""
        ax.set_xlabel(f"tokens committed in one step{last}")
        ax.set_ylabel("share of steps (%, log scale)")
        ax.set_yscale("log")
        ax.set_xlim(0.5, top + 0.5)
        ax.set_xticks(range(1, top + 1))
        ax.set_ylim(top=150)
    what = ("Tokens committed per step (AR: always 1)" if per_step else
            "Tokens per step: per-request means (the rows carry no per-step counts)")
    _title(fig, what, model, hardware)
    fig.tight_layout()
    return fig


def speedup_vs_batch_size(board: pd.DataFrame, model: str, hardware: str):
    """Per task: each method's speedup against batched AR at the same batch size (top), and every method's
    throughput, AR's included (bottom), against the batch size. A batch of B rows with w-token forwards runs
    forwards of B·w tokens: once B·w is past where the hardware's forward cost starts to grow (`harness profile`),
    the extra tokens a method verifies are no longer free, and its speedup falls."""
    board = board.assign(label=labels(board, ignore=("batch_size",)), B=board["batch_size"].astype(int))
    colour = colours(board["label"])
    tasks = list(dict.fromkeys(board["task"]))
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.6 * len(tasks) + 0.6, 8.0), squeeze=False, sharex=True)
    sizes = sorted(board["B"].unique())
    for col, task in enumerate(tasks):
        rows = board[board["task"] == task]
        top, bottom = axes[0][col], axes[1][col]
        for name, r in rows.groupby("label", sort=False):
            r = r.sort_values("B")
            if name != BASELINE and r["speedup"].notna().any():
                top.plot(r["B"], r["speedup"].astype(float), marker="o", color=colour.get(name), label=name)
                has = r["speedup_lo"].notna() & r["speedup_hi"].notna()
                if has.any():
                    err = np.vstack([r["speedup"] - r["speedup_lo"], r["speedup_hi"] - r["speedup"]]).astype(float)
                    top.errorbar(r["B"][has], r["speedup"][has].astype(float), yerr=err[:, has.to_numpy()], fmt="none",
                                 ecolor=colour.get(name), alpha=0.5, capsize=3)
            bottom.plot(r["B"], r["tokens_per_s"].astype(float), marker="o", color=colour.get(name), label=name,
                        linestyle="--" if name == BASELINE else "-")
        top.axhline(1.0, color="black", linestyle="--", linewidth=1)
        top.set_title(task, fontsize=10)
        top.set_ylabel("speedup vs batched AR at the same batch size (×)")
        bottom.set_ylabel("throughput (tokens/s over the batch)")
        bottom.set_xlabel("batch size B (a w-token block is a forward of B·w tokens)")
        bottom.set_xscale("log", base=2)
        bottom.set_xticks(sizes, [str(b) for b in sizes])
        for ax in (top, bottom):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    _title(fig, "Speedup and throughput vs batch size (dashed: AR)", model, hardware)
    fig.tight_layout()
    return fig


def acceptance_by_position(board: pd.DataFrame, samples: pd.DataFrame, model: str, hardware: str, colour: dict,
                           min_steps: int = 20):
    """Per task: the acceptance rate at each draft position (harness.analysis.acceptance) reached by at least
    `min_steps` steps, one line per method that drafts; τ (tokens per target forward) in the legend."""
    tasks = list(dict.fromkeys(board["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.8), squeeze=False, sharey=True)
    handles = {}
    for ax, task in zip(axes[0], tasks):
        for _, b in board[(board["task"] == task) & (board["method"] != BASELINE)].iterrows():
            pos = by_position(rows_of(samples, b))
            pos = pos[pos["steps"] >= min_steps]
            if len(pos):
                line, = ax.plot(pos["k"], pos["rate"], marker="o", color=colour.get(b["label"]))
                handles.setdefault(b["label"], line)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("draft position k")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("acceptance rate at k\n(given positions 1..k-1 accepted)")
    _title(fig, f"Acceptance rate by draft position (positions reached by {min_steps}+ steps)", model, hardware)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(3, max(1, len(handles))), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(handles) - 1) // 3), 1, 1))
    return fig


def _err(row: pd.Series):
    """Asymmetric error bar [[below], [above]] from the speedup's interval (none where it is missing)."""
    if pd.isna(row["speedup_lo"]) or pd.isna(row["speedup_hi"]):
        return None
    return [[row["speedup"] - row["speedup_lo"]], [row["speedup_hi"] - row["speedup"]]]


def rows_of(samples: pd.DataFrame, b: pd.Series) -> pd.DataFrame:
    """The successful samples rows behind one leaderboard row."""
    ids = str(b["run_id"]).split(";")
    return samples[samples["run_id"].isin(ids) & (samples["method"] == b["method"])
                   & (samples["options"] == b["options"]) & samples["error"].isna()]


def save_png(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return path


def make_plots(board: pd.DataFrame, samples: pd.DataFrame, out: Path) -> dict[tuple[str, str], dict[str, Path]]:
    """Every kind of plot for each (model, hardware) in the board, written atomically under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    board = board[whole(board)]  # per-turn and per-category rows are in the tables only
    board = board.assign(label=labels(board))
    colour = colours(board["label"])
    groups = list(board.groupby(["model", "hardware"], sort=False))
    models = board.groupby("model")["hardware"].nunique()
    figures = {}
    for (model, hw), b in groups:
        prefix = "" if len(groups) == 1 else slug(model) + (f"-{slug(hw)}" if models[model] > 1 else "") + "-"
        made = {"speedup_matrix": speedup_matrix(b, model, hw),
                "speedup": speedup_bars(b, model, hw, colour),
                "speedup_vs_tokens_per_step": speedup_vs_tokens_per_step(b, model, hw, colour),
                "accuracy_vs_speedup": accuracy_vs_speedup(b, model, hw, colour),
                "step_tokens": step_tokens(b, samples, model, hw, colour),
                "acceptance_by_position": acceptance_by_position(b, samples, model, hw, colour)}
        if "batch_size" in b and b["batch_size"].nunique() > 1:
            made["speedup_vs_batch_size"] = speedup_vs_batch_size(b.drop(columns="label"), model, hw)
        figures[(model, hw)] = {k: save_png(fig, out / f"{prefix}{k}.png") for k, fig in made.items()}
    return figures
