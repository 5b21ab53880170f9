"""Pure summary of samples rows: per-method throughput, tokens per step, and paired speedup vs AR.

`speedup` is the ratio of throughputs over the paired requests (the same doc_id and turn, both finished
with at least one token): (Σ method new_tokens / Σ method wall_time_s) / (Σ AR new_tokens / Σ AR
wall_time_s); `speedup_geomean` is the geometric mean of the per-request throughput ratios; `length_ratio`
is Σ method new_tokens / Σ AR new_tokens. For a lossless method the lengths are equal, so the speedup is
the ratio of times. `bootstrap_speedups` gives 95% intervals by resampling documents (a conversation's
turns together), and none below MIN_DOCS documents. Definitions: docs/measurement.md.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.engine.generate import REPEAT_RUN
from harness.text import repeats_phrase, text_table

from harness import BASELINE  # noqa: F401  (re-exported for the analysis modules)
MIN_DOCS = 10  # fewer documents than this: no bootstrap interval
INTERVALS = ("speedup_lo", "speedup_hi", "speedup_geomean_lo", "speedup_geomean_hi")


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def method_stats(ok: pd.DataFrame) -> dict:
    steps, new, wall = ok["steps"].sum(), ok["new_tokens"].sum(), ok["wall_time_s"].sum()
    drafted = ok["drafted_tokens"].sum() if "drafted_tokens" in ok else 0
    accepted = ok["accepted_tokens"].sum() if "accepted_tokens" in ok else 0
    draft_forwards = ok["draft_forwards"].sum() if "draft_forwards" in ok else 0
    stationary = ok["stationary_tokens"].fillna(0).sum() if "stationary_tokens" in ok else 0
    runs = ok["max_repeat_run"].dropna() if "max_repeat_run" in ok else ok.iloc[:0]  # older runs lack it
    texts = ok["output"].dropna() if "output" in ok else ok.iloc[:0]
    return {"n": int(len(ok)), "new_tokens": int(new), "steps": int(steps),
            "tokens_per_step": float(new / steps) if steps else None,
            "tokens_per_s": float(new / wall) if wall else None,
            "wall_time_s": float(wall),
            "drafted_tokens": int(drafted), "accepted_tokens": int(accepted),
            "acceptance_rate": float(accepted / drafted) if drafted else None,
            "draft_forwards_per_step": float(draft_forwards / steps) if steps else None,
            # CLLM's two counts: tokens fast-forwarded past the first in a step, and stationary guess tokens
            "fast_forwarded_per_step": float(accepted / steps) if steps else None,
            "stationary_per_step": float(stationary / steps) if steps else None,
            # outputs that loop (one token REPEAT_RUN+ times in a row): cheap tokens per step, not a speedup
            "repeat_share": float((runs >= REPEAT_RUN).mean()) if len(runs) else None,
            # outputs that repeat a sentence (harness.text.repeats_phrase): the same cheap win at phrase scale
            "phrase_repeat_share": float(texts.map(repeats_phrase).mean()) if len(texts) else None}


def pair(method: pd.DataFrame, base: pd.DataFrame, on: tuple[str, ...] = ("doc_id", "turn")) -> pd.DataFrame:
    """The method's successful rows side by side with AR's on the same request: AR's columns get `_ar`."""
    return method.merge(base, on=list(on), suffixes=("", "_ar"))


def timed(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs every ratio is taken over: both sides produced at least one token in a positive time."""
    if pairs.empty:
        return pairs
    ok = [pairs[f"{c}{side}"].astype(float) > 0 for c in ("new_tokens", "wall_time_s") for side in ("", "_ar")]
    return pairs[pd.concat(ok, axis=1).all(axis=1)]


def _columns(pairs: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(method tokens, method seconds, AR tokens, AR seconds), one entry per pair."""
    cols = ("new_tokens", "wall_time_s", "new_tokens_ar", "wall_time_s_ar")
    return tuple(pairs[c].to_numpy(dtype=float) for c in cols)


def speedups(pairs: pd.DataFrame) -> dict:
    """`speedup` (ratio of throughputs), `speedup_geomean` (geometric mean of per-request throughput
    ratios) and `length_ratio` (Σ method tokens / Σ AR tokens) over `timed` pairs; None without pairs."""
    if pairs.empty:
        return {"speedup": None, "speedup_geomean": None, "length_ratio": None}
    m_tok, m_s, a_tok, a_s = _columns(pairs)
    per_request = (m_tok / m_s) / (a_tok / a_s)
    return {"speedup": _finite(float((m_tok.sum() / m_s.sum()) / (a_tok.sum() / a_s.sum()))),
            "speedup_geomean": _finite(float(np.exp(np.log(per_request).mean()))),
            "length_ratio": _finite(float(m_tok.sum() / a_tok.sum()))}


def bootstrap_speedups(pairs: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                       min_docs: int = MIN_DOCS) -> dict:
    """The estimates of `speedups` with percentile bootstrap intervals (`speedup_lo`/`_hi`,
    `speedup_geomean_lo`/`_hi`) from resampling documents with replacement (seeded): a document brings
    all its pairs (the turns of a conversation move together). Below `min_docs` documents, or with
    n_boot = 0, the intervals are None and `interval_note` says why. Also returns `n_docs`."""
    out = {**dict.fromkeys(INTERVALS), **speedups(pairs), "n_docs": int(pairs["doc_id"].nunique()) if len(pairs) else 0,
           "interval_note": None}
    if out["speedup"] is None:
        return out
    if out["n_docs"] < min_docs:
        out["interval_note"] = (f"{out['n_docs']} document{'s' * (out['n_docs'] != 1)}, fewer than {min_docs}: "
                                "too few to resample, no interval")
        return out
    if n_boot < 1:
        out["interval_note"] = "no bootstrap (n_boot = 0)"
        return out
    m_tok, m_s, a_tok, a_s = _columns(pairs)
    per_doc = pd.DataFrame({"doc": pairs["doc_id"].to_numpy(), "m_tok": m_tok, "m_s": m_s, "a_tok": a_tok,
                            "a_s": a_s, "log_ratio": np.log((m_tok / m_s) / (a_tok / a_s)), "n": 1.0})
    d = per_doc.groupby("doc", sort=False).sum()  # (D, 6): every column summed over the document's pairs
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))  # (B, D) resampled documents
    col = {c: d[c].to_numpy()[idx].sum(axis=1) for c in d.columns}  # each (B,)
    ratio = (col["m_tok"] / col["m_s"]) / (col["a_tok"] / col["a_s"])
    geo = np.exp(col["log_ratio"] / col["n"])
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    (out["speedup_lo"], out["speedup_hi"]), (out["speedup_geomean_lo"], out["speedup_geomean_hi"]) = (
        map(float, np.percentile(ratio, q)), map(float, np.percentile(geo, q)))
    return out


def paired_stats(method: pd.DataFrame, base: pd.DataFrame) -> dict:
    pairs = pair(method, base)
    ratios = timed(pairs)
    return {"n_paired": int(len(ratios)), "n_docs": int(ratios["doc_id"].nunique()) if len(ratios) else 0,
            **speedups(ratios),
            "lossless_rate": float((pairs["output_sha1"] == pairs["output_sha1_ar"]).mean()) if len(pairs) else None}


def accuracy_stats(scores: list[dict], metric: str | None, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """{method: {"accuracy", "metric", "n_scored", "metrics"}} from scores rows ({"method", "doc_id", "scores"}).
    A metric a task could not compute (MT-bench without a judge: NaN/None) gives accuracy None."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in scores):
        per_doc = [r["scores"] for r in scores if r["method"] == method]
        means = {}
        for name in (metric, *extra):
            values = [d[name] for d in per_doc if d.get(name) is not None]
            means[name] = float(sum(values) / len(values)) if values else None
        out[method] = {"accuracy": means.get(metric), "metric": metric, "n_scored": len(per_doc), "metrics": means}
    return out


def summarize(rows: list[dict], baseline: str = BASELINE, scores: list[dict] | None = None,
              metric: str | None = None, extra_metrics: tuple[str, ...] = ()) -> dict[str, dict]:
    """{method: stats} from samples rows (one per request per method, per turn for conversations)
    and, for tasks with a metric, the per-sample scores."""
    if not rows:
        return {}
    df = pd.DataFrame(rows)
    df["error"] = df.get("error")
    df["turn"] = df["turn"].fillna(1).astype(int) if "turn" in df else 1
    acc = accuracy_stats(scores or [], metric, extra_metrics) if metric else {}
    out = {}
    base = df[(df["method"] == baseline) & df["error"].isna()]
    for name, group in df.groupby("method", sort=False):
        ok = group[group["error"].isna()]
        stats = method_stats(ok)
        stats["n_errors"] = int(len(group) - len(ok))
        stats.update(paired_stats(ok, base) if name != baseline else
                     {"n_paired": int(len(ok)), "n_docs": int(ok["doc_id"].nunique()), "speedup": 1.0,
                      "speedup_geomean": 1.0, "length_ratio": 1.0, "lossless_rate": 1.0})
        stats.update(acc.get(name) or {"accuracy": None, "metric": metric, "n_scored": 0, "metrics": {}})
        out[name] = stats
    return out


def format_table(summary: dict[str, dict]) -> str:
    """The summary as a terminal table (speedup: ratio of throughputs; length: Σ tokens / Σ AR tokens)."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    header = ["method", "n", "tok/step", "accept", "tok/s", "speedup", "geomean", "length", "lossless", "looping",
              "phrases", "accuracy", "errors"]
    rows = [[name, s["n"], fmt(s["tokens_per_step"], ".2f"), fmt(s["acceptance_rate"], ".1%"),
             fmt(s["tokens_per_s"], ".1f"), fmt(s["speedup"], ".2f"), fmt(s["speedup_geomean"], ".2f"),
             fmt(s.get("length_ratio"), ".2f"), fmt(s["lossless_rate"], ".0%"),
             fmt(s.get("repeat_share"), ".0%"), fmt(s.get("phrase_repeat_share"), ".0%"), fmt(s.get("accuracy"), ".3f"),
             s["n_errors"]] for name, s in summary.items()]
    return text_table(header, rows, right=set(range(1, len(header))))
