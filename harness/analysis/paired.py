"""Paired statistics: a method's rows against AR's on the same requests, as docs/measurement.md defines them.

    out = paired_statistics(pairs, accuracy=acc, n_boot=2000, seed=0)   # {"speedup": ..., "speedup_lo": ..., ...}
`pairs` holds one row per request both sides finished (summary.pair + summary.timed), with `run_id`; every figure
is a function of per-(run, document) sums, so the interval resamples runs (replicates), then documents (a
conversation's turns together), and recomputes every figure from the resampled sums. Pure numpy and pandas.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

MIN_DOCS = 10  # fewer documents than this: no bootstrap interval
ENDED = ("eos", "stop_string")  # a row that ended on its own; "max_new_tokens" hit the token cap
ALPHA = 3.0  # the quality weight's penalty, as d3LLM's AUP: W = min(exp(-ALPHA * (1 - acc / acc_AR)), 1)
LEVEL = 0.95
# figure -> the sums it needs; every figure gets _lo/_hi columns
FIGURES = ("speedup", "speedup_geomean", "speedup_per_answer", "speedup_clean", "accuracy_delta", "speedup_quality")
SUMS = ("m_tok", "m_s", "a_tok", "a_s", "log_ratio", "n", "c_m_tok", "c_m_s", "c_a_tok", "c_a_s", "c_n",
        "m_acc", "a_acc", "n_acc")


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


def ended_on_own(reason: pd.Series) -> pd.Series:
    """True where a row stopped at EOS or a stop string (not at the token cap; unknown counts as not)."""
    return reason.isin(ENDED)


def cell_sums(pairs: pd.DataFrame, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (run_id, doc_id) with SUMS: tokens and seconds of both sides (all pairs, and `c_` over the clean
    pairs, where both ended on their own), the per-pair log throughput ratios and their count, and, where `accuracy`
    ({run_id, doc_id, m_acc, a_acc}: the method's and AR's score of the document) is given, the scores (of every
    document scored on both sides, timed pair or not)."""
    m_tok, m_s = pairs["new_tokens"].to_numpy(float), pairs["wall_time_s"].to_numpy(float)
    a_tok, a_s = pairs["new_tokens_ar"].to_numpy(float), pairs["wall_time_s_ar"].to_numpy(float)
    clean = (ended_on_own(pairs["stop_reason"]) & ended_on_own(pairs["stop_reason_ar"])).to_numpy(float) \
        if "stop_reason" in pairs and "stop_reason_ar" in pairs else np.zeros(len(pairs))
    per = pd.DataFrame({"run_id": pairs["run_id"].to_numpy(), "doc_id": pairs["doc_id"].to_numpy(),
                        "m_tok": m_tok, "m_s": m_s, "a_tok": a_tok, "a_s": a_s,
                        "log_ratio": np.log((m_tok / m_s) / (a_tok / a_s)), "n": 1.0,
                        "c_m_tok": m_tok * clean, "c_m_s": m_s * clean, "c_a_tok": a_tok * clean,
                        "c_a_s": a_s * clean, "c_n": clean})
    cells = per.groupby(["run_id", "doc_id"], sort=False).sum()
    if accuracy is not None and len(accuracy):
        acc = accuracy.set_index(["run_id", "doc_id"])[["m_acc", "a_acc"]].astype(float)
        cells = cells.join(acc.assign(n_acc=1.0), how="outer")  # a scored document may have no timed pair (an error)
    for c in SUMS:
        cells[c] = cells[c].fillna(0.0) if c in cells else 0.0
    return cells[list(SUMS)]


def figures(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every figure from (possibly resampled) sums; each array has the sums' shape. NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        speedup = (s["m_tok"] / s["m_s"]) / (s["a_tok"] / s["a_s"])
        per_answer = s["a_s"] / s["m_s"]  # AR's time per answer over the method's: same requests, whatever the lengths
        clean = (s["c_m_tok"] / s["c_m_s"]) / (s["c_a_tok"] / s["c_a_s"])
        acc_m, acc_a = s["m_acc"] / s["n_acc"], s["a_acc"] / s["n_acc"]
        weight = np.where(acc_a > 0, np.minimum(np.exp(-ALPHA * (1 - acc_m / acc_a)), 1.0), 1.0)
        return {"speedup": speedup, "speedup_geomean": np.exp(s["log_ratio"] / s["n"]),
                "length_ratio": s["m_tok"] / s["a_tok"], "speedup_per_answer": per_answer, "speedup_clean": clean,
                "accuracy_delta": np.where(s["n_acc"] > 0, acc_m - acc_a, np.nan),
                "speedup_quality": np.where(s["n_acc"] > 0, per_answer * weight, np.nan)}


def _dense(cells: pd.DataFrame) -> np.ndarray:
    """(R, D, K): the sums of run r and document d (zeros where the run lacks the document)."""
    runs = list(dict.fromkeys(cells.index.get_level_values(0)))
    docs = list(dict.fromkeys(cells.index.get_level_values(1)))
    out = np.zeros((len(runs), len(docs), len(SUMS)))
    r_at, d_at = {r: i for i, r in enumerate(runs)}, {d: i for i, d in enumerate(docs)}
    for (run, doc), values in zip(cells.index, cells.to_numpy()):
        out[r_at[run], d_at[doc]] = values
    return out


def bootstrap(dense: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Resampled sums, each (n_boot,): runs drawn with replacement, then documents drawn with replacement, and
    every drawn (run, document) cell added (one run: the document bootstrap alone)."""
    rng = np.random.default_rng(seed)
    R, D, _ = dense.shape
    run_w = rng.multinomial(R, [1 / R] * R, size=n_boot).astype(float) if R > 1 else np.ones((n_boot, 1))  # (B, R)
    doc_w = rng.multinomial(D, [1 / D] * D, size=n_boot).astype(float)  # (B, D)
    sums = np.einsum("br,bd,rdk->bk", run_w, doc_w, dense)  # (B, K)
    return {k: sums[:, i] for i, k in enumerate(SUMS)}


def paired_statistics(pairs: pd.DataFrame, accuracy: pd.DataFrame | None = None, n_boot: int = 2000,
                      seed: int = 0, min_docs: int = MIN_DOCS) -> dict:
    """Point estimates of FIGURES and `length_ratio`, 95% percentile intervals (`<figure>_lo`/`_hi`), and the
    counts behind them: `n_runs`, `n_docs`, `n_clean` (clean pairs), `n_clean_docs`, `capped_share` (pairs where
    either side hit the token cap), the spread of `speedup` between runs (`speedup_run_min`/`_max`), and
    `interval_note` / `clean_interval_note` where an interval is left empty and why."""
    out = {**{f"{f}{x}": None for f in FIGURES for x in ("", "_lo", "_hi")}, "length_ratio": None,
           "n_runs": int(pairs["run_id"].nunique()) if len(pairs) else 0,
           "n_docs": int(pairs["doc_id"].nunique()) if len(pairs) else 0, "n_clean": 0, "n_clean_docs": 0,
           "capped_share": None, "speedup_run_min": None, "speedup_run_max": None,
           "interval_note": None, "clean_interval_note": None}
    if pairs.empty:
        return out
    cells = cell_sums(pairs, accuracy)
    total = {k: np.array(v) for k, v in cells.sum().items()}
    out.update({k: _finite(float(v)) for k, v in figures(total).items()})
    out["n_clean"] = int(total["c_n"])
    out["n_clean_docs"] = int(cells.loc[cells["c_n"] > 0].index.get_level_values(1).nunique())
    out["capped_share"] = float(1 - total["c_n"] / total["n"])
    per_run = figures({k: cells[k].groupby(level=0, sort=False).sum().to_numpy() for k in SUMS})["speedup"]
    out["speedup_run_min"], out["speedup_run_max"] = _finite(per_run.min()), _finite(per_run.max())
    if out["n_docs"] < min_docs:
        out["interval_note"] = (f"{out['n_docs']} document{'s' * (out['n_docs'] != 1)}, fewer than {min_docs}: "
                                "too few to resample, no interval")
        return out
    if n_boot < 1:
        out["interval_note"] = "no bootstrap (n_boot = 0)"
        return out
    resampled = figures(bootstrap(_dense(cells), n_boot, seed))
    q = [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2]
    for f in FIGURES:
        values = resampled[f][np.isfinite(resampled[f])]
        if out[f] is not None and len(values) >= 0.9 * n_boot:  # an interval only where nearly every resample has one
            out[f"{f}_lo"], out[f"{f}_hi"] = map(float, np.percentile(values, q))
    if out["n_clean_docs"] < min_docs:
        out["speedup_clean_lo"] = out["speedup_clean_hi"] = None
        out["clean_interval_note"] = (f"{out['n_clean_docs']} document{'s' * (out['n_clean_docs'] != 1)} with clean "
                                      f"pairs, fewer than {min_docs}: no interval for the clean speedup")
    return out
