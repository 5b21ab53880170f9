"""Markdown for a task with categories (Spec-Bench): per category, our speedup and Spec-Bench's side by side, why they
differ where they do, and Spec-Bench's published leaderboard beside our rows.

    lines = category_tables(rows)                 # rows: one task's leaderboard rows, with `label`
    lines = beside_published(rows, model, hw)     # Spec-Bench's A100 and 3090 Vicuna-7B rows beside ours
Pure functions over leaderboard rows; the figures: harness.analysis.specbench.
"""
from __future__ import annotations

import pandas as pd

from harness.analysis.specbench import CATEGORIES, HARDWARE, NOT_HERE, OURS, PUBLISHED, SOURCE, disagreement
from methods.specs import parse_options

BASELINE = "ar"


def _f(value, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


def _ours(r) -> str:
    s, lo, hi = r.get("speedup"), r.get("speedup_lo"), r.get("speedup_hi")
    if s is None or pd.isna(s):
        return "–"
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return f"{s:.2f}× (no CI)"
    text = f"{s:.2f}× [{lo:.2f}, {hi:.2f}]"
    return f"**{text}**" if lo > 1 else text


def _theirs(r) -> str:
    s, sd = r.get("specbench_speedup"), r.get("specbench_speedup_sd")
    if s is None or pd.isna(s):
        return "–"
    return f"{s:.2f}×" + ("" if sd is None or pd.isna(sd) else f" ± {sd:.2f}")


def _accuracy(r) -> str:
    if r.get("accuracy") is None or pd.isna(r.get("accuracy")):
        return "no metric"
    return f"{r['accuracy']:.3f}"


def category_tables(rows: pd.DataFrame) -> list[str]:
    """One table per category (then `all`): every method's speedup both ways, its tok/s both ways, τ and accuracy,
    and a note under any row where the two speedups differ by more than 5%."""
    if "category" not in rows or not rows["category"].ne("all").any():
        return []
    rows = rows[rows["turn"].astype(str) == "all"] if "turn" in rows else rows
    out = ["Per category, both definitions of speedup (docs/measurement.md#spec-bench-figures). **Ours**: the "
           "method's throughput over AR's, pooled over the category's pairs (Σ tokens / Σ time), with its 95% interval. "
           "**Spec-Bench's** (its evaluation/speed.py): the mean of the method's per-sample tok/s over the mean of AR's "
           "(a question's turns summed), averaged over the runs (± their standard deviation with replicates). τ: "
           "tokens per target forward, Spec-Bench's #mean accepted tokens. Accuracy: GSM8K exact match where the "
           "category has it (math_reasoning); the other categories have no metric here.", ""]
    notes = []
    for category in [*[c for c in dict.fromkeys(rows["category"]) if c != "all"], "all"]:
        mine = rows[rows["category"] == category]
        if mine.empty:
            continue
        out += [f"#### {category}", "", "| method | n (docs) | speedup, ours [95% CI] | speedup, Spec-Bench's | "
                "tok/s pooled (AR) | tok/s per-sample mean (AR) | τ | accuracy | lossless |",
                "|---|---|---|---|---|---|---|---|---|"]
        for _, r in mine.iterrows():
            ours = "1 (reference)" if r["method"] == BASELINE else _ours(r)
            out.append(f"| `{r['label']}` | {r['n']} ({_f(r.get('n_docs'), '.0f')}) | {ours} | {_theirs(r)} | "
                       f"{_f(r.get('tokens_per_s'), '.1f')} ({_f(r.get('ar_tokens_per_s'), '.1f')}) | "
                       f"{_f(r.get('specbench_tokens_per_s'), '.1f')} ({_f(r.get('specbench_ar_tokens_per_s'), '.1f')}) | "
                       f"{_f(r.get('tokens_per_step'), '.2f')} | {_accuracy(r)} | {_f(r.get('lossless_rate'), '.0%')} |")
            why = disagreement(r)
            if why:
                notes.append(f"- `{r['label']}`, {category}: {why}.")
        out.append("")
    if notes:
        out += ["Where the two definitions differ by more than 5%:", "", *notes, ""]
    return out


def _matches(r, name: str) -> bool:
    method, fits, _ = OURS[name]
    return r["method"] == method and fits(parse_options(str(r["options"]) if pd.notna(r["options"]) else ""))


def beside_published(rows: pd.DataFrame, model: str, hardware: str) -> list[str]:
    """Spec-Bench's published Vicuna-7B rows (A100, RTX 3090) for the methods we also have, each beside our rows of
    the nearest method (Spec-Bench's definition of speedup, so that the columns mean the same); then the methods of its
    leaderboard this harness does not have."""
    if "category" not in rows or not rows["category"].ne("all").any():
        return []
    rows = rows[(rows["turn"].astype(str) == "all") & (rows["method"] != BASELINE)] if "turn" in rows else rows
    head = ["method", "source", "model", "hardware", *CATEGORIES, "mean accepted"]
    out = [f"Spec-Bench's published speedups ({SOURCE}: Vicuna-7B-v1.3, FP16, greedy, batch 1, the mean of 3 runs) "
           f"beside ours ({model}, {hardware}), all in Spec-Bench's definition of speedup; `all` is its Overall. "
           "Ours ran on another model and hardware, so the rows compare which categories favour which method, not "
           "the sizes of the speedups.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(n for n, _ in PUBLISHED):
        for (n, hw), (speeds, accepted) in PUBLISHED.items():
            if n == name:
                out.append(f"| {name} | Spec-Bench Leaderboard.md | Vicuna-7B-v1.3 | {HARDWARE[hw]} | "
                           + " | ".join(f"{s:.2f}×" for s in speeds) + f" | {accepted:.2f} |")
        found = rows[rows.apply(_matches, axis=1, name=name)] if len(rows) else rows
        for label, mine in found.groupby("label", sort=False):
            by = mine.set_index("category")
            cells = [_f(by.loc[c, "specbench_speedup"], ".2f") + "×" if c in by.index
                     and not pd.isna(by.loc[c, "specbench_speedup"]) else "–" for c in CATEGORIES]
            acc = _f(by.loc["all", "specbench_mean_accepted"], ".2f") if "all" in by.index else "–"
            out.append(f"| {name} ≈ `{label}` | this harness | {model} | {hardware} | " + " | ".join(cells)
                       + f" | {acc} |")
        if found.empty:
            out.append(f"| {OURS[name][2]} | this harness | {model} | {hardware} | "
                       + " | ".join("not run" for _ in CATEGORIES) + " | – |")
    out += ["", "The pairs: " + "; ".join(OURS[n][2] for n in OURS) + ". Not in this harness "
            "yet (Spec-Bench lists them): " + ", ".join(NOT_HERE) + ".", ""]
    return out
