"""Spec-Bench's own figures (hemingkx/Spec-Bench, evaluation/speed.py) beside ours, and its published leaderboard.

    figures = specbench_figures(pairs, method_rows)   # {"specbench_speedup": ..., "specbench_speedup_sd": ..., ...}
speed.py, per category: a sample's throughput is its tokens over its wall time (a conversation's turns summed);
speedup = the mean of the method's per-sample tok/s ÷ the mean of the baseline's; mean accepted tokens = the mean,
over every step, of the tokens the step committed; over R runs, the mean of the R speedups and their standard
deviation (ddof 1). Here a sample is a document of the row's pairs (both sides finished), the baseline is AR in the
same run, and tokens are the recorded new tokens on both sides (speed.py re-tokenizes the baseline's text, less one
for BOS). Definitions side by side: docs/measurement.md#spec-bench-figures. Pure numpy and pandas.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

FIGURES = ("specbench_speedup", "specbench_speedup_sd", "specbench_tokens_per_s", "specbench_ar_tokens_per_s",
           "specbench_mean_accepted")
TOLERANCE = 0.05  # the report explains a row where the two speedups differ by more than this

# Spec-Bench's published leaderboard: Leaderboard.md of github.com/hemingkx/Spec-Bench at commit fd2c1cd7 ("Leaderboard
# updated", 2025-04-22), Vicuna-7B-v1.3, greedy, FP16, batch size 1, the mean of 3 runs. Speedups per reporting
# category (speed.py's definition) and #mean accepted tokens over all categories.
SOURCE = "github.com/hemingkx/Spec-Bench, Leaderboard.md at fd2c1cd7d2201ef71db4c5f4e455008f017967bf"
CATEGORIES = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag", "all")
HARDWARE = {"A100": "1× NVIDIA A100 80GB, 96 CPU cores, PyTorch 2.5.1, CUDA 11.5",
            "3090": "1× NVIDIA RTX 3090 24GB, 12 CPU cores, PyTorch 2.5.1, CUDA 12.1"}
# (method, hardware): (speedups in CATEGORIES' order, mean accepted tokens)
PUBLISHED = {
    ("PLD", "A100"): ((1.60, 1.06, 2.66, 1.19, 1.62, 1.86, 1.66), 1.75),
    ("Lookahead", "A100"): ((1.47, 1.14, 1.36, 1.25, 1.57, 1.22, 1.34), 1.64),
    ("SpS", "A100"): ((1.66, 1.13, 1.71, 1.50, 1.47, 1.66, 1.52), 2.28),
    ("PLD", "3090"): ((1.64, 1.15, 2.46, 1.28, 1.72, 1.71, 1.64), 1.73),
    ("Lookahead", "3090"): ((1.17, 1.00, 1.11, 1.06, 1.32, 1.06, 1.13), 1.64),
    ("SpS", "3090"): ((1.94, 1.37, 1.96, 1.86, 1.81, 1.83, 1.79), 2.28),
}


def _model_draft(options: dict) -> bool:
    draft = options.get("draft", "ngram")
    return draft != "ngram" and not draft.startswith("layerskip")


# Spec-Bench's method -> ours: (our method, whether a row's options fit, how the two differ)
OURS = {"PLD": ("speculative", lambda o: o.get("draft", "ngram") == "ngram",
                "PLD ≈ `speculative` draft=ngram (prompt lookup; Spec-Bench's PLD matches up to 3-grams, drafts 10)"),
        "Lookahead": ("lookahead", lambda o: True,
                      "Lookahead ≈ `lookahead` (Spec-Bench ran level 5, window 7, guess set 7)"),
        "SpS": ("speculative", _model_draft,
                "SpS ≈ `speculative` with a draft model (Spec-Bench's drafter: vicuna-68m)")}
NOT_HERE = ("EAGLE", "EAGLE-2", "EAGLE-3", "Medusa", "Hydra", "REST", "Recycling", "SAMD")


def _per_sample(tokens: pd.Series, seconds: pd.Series) -> pd.Series:
    return tokens.astype(float) / seconds.astype(float)


def run_means(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per run: the mean over its documents of the method's and AR's per-sample tok/s (a document's turns summed)."""
    per_doc = pairs.assign(m_tok=pairs["new_tokens"].astype(float), m_s=pairs["wall_time_s"].astype(float),
                           a_tok=pairs["new_tokens_ar"].astype(float), a_s=pairs["wall_time_s_ar"].astype(float))
    per_doc = per_doc.groupby(["run_id", "doc_id"], sort=False)[["m_tok", "m_s", "a_tok", "a_s"]].sum()
    speeds = pd.DataFrame({"m": _per_sample(per_doc["m_tok"], per_doc["m_s"]),
                           "a": _per_sample(per_doc["a_tok"], per_doc["a_s"])})
    return speeds.groupby(level=0, sort=False).mean()


def mean_accepted(rows: pd.DataFrame) -> float | None:
    """The mean over every step of the rows of the tokens it committed (speed.py's #mean accepted tokens)."""
    steps = [n for lists in rows["step_tokens"].dropna() for n in lists] if "step_tokens" in rows else []
    return float(np.mean(steps)) if steps else None


def specbench_figures(pairs: pd.DataFrame, rows: pd.DataFrame) -> dict:
    """Spec-Bench's figures of a leaderboard row: `pairs` its timed pairs (summary.pair + timed, with run_id), `rows`
    the method's successful rows (for the steps). The speedup and tok/s are means over runs; sd with 2+ runs."""
    out = dict.fromkeys(FIGURES)
    out["specbench_mean_accepted"] = mean_accepted(rows)
    if pairs.empty:
        return out
    means = run_means(pairs)
    speedups = means["m"] / means["a"]
    out.update(specbench_speedup=float(speedups.mean()),
               specbench_speedup_sd=float(speedups.std(ddof=1)) if len(speedups) > 1 else None,
               specbench_tokens_per_s=float(means["m"].mean()), specbench_ar_tokens_per_s=float(means["a"].mean()))
    return out


def baseline_figures(rows: pd.DataFrame) -> dict:
    """The AR row's: speedup 1 by definition; its per-sample tok/s (mean over documents, then over runs)."""
    per_doc = rows.assign(t=rows["new_tokens"].astype(float), s=rows["wall_time_s"].astype(float))
    per_doc = per_doc.groupby(["run_id", "doc_id"], sort=False)[["t", "s"]].sum()
    speed = _per_sample(per_doc["t"], per_doc["s"]).groupby(level=0, sort=False).mean().mean() if len(per_doc) else None
    return {"specbench_speedup": 1.0 if len(per_doc) else None, "specbench_speedup_sd": None,
            "specbench_tokens_per_s": speed, "specbench_ar_tokens_per_s": speed,
            "specbench_mean_accepted": mean_accepted(rows)}


def disagreement(row) -> str | None:
    """Why the two speedups of a row differ by more than TOLERANCE (None where they agree or one is missing):
    speed.py averages per-sample tok/s, weighting every answer alike, where ours weights by time; the side whose
    per-sample mean moved further from its pooled throughput is named."""
    ours, theirs = row.get("speedup"), row.get("specbench_speedup")
    if ours is None or theirs is None or pd.isna(ours) or pd.isna(theirs) or abs(theirs / ours - 1) <= TOLERANCE:
        return None
    sides = []
    for name, mean, pooled in (("the method", row.get("specbench_tokens_per_s"), row.get("tokens_per_s")),
                               ("AR", row.get("specbench_ar_tokens_per_s"), row.get("ar_tokens_per_s"))):
        if mean is not None and pooled is not None and not pd.isna(mean) and not pd.isna(pooled) and pooled > 0:
            sides.append((abs(mean / pooled - 1), f"{name}'s per-sample mean is {mean / pooled:.2f}× its pooled tok/s"))
    detail = "; ".join(text for _, text in sorted(sides, reverse=True))
    return (f"Spec-Bench's speedup {theirs:.2f}× vs ours {ours:.2f}× ({theirs / ours - 1:+.0%}): speed.py averages "
            "per-sample tok/s, so every answer weighs alike and short answers (where the prompt's prefill is a larger "
            "share of the time) count as much as long ones; ours is the ratio of summed tokens over summed time"
            + (f" ({detail})" if detail else ""))
