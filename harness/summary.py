"""Pure summary of samples rows: per-method throughput, tokens per step, and paired speedup vs AR.

`speedup` is the ratio of total times, sum(AR wall time) / sum(method wall time), over the requests
where both succeeded; `speedup_geomean` is the geometric mean of the per-request ratios.
"""
from __future__ import annotations

import math

import pandas as pd

BASELINE = "ar"


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def method_stats(ok: pd.DataFrame) -> dict:
    steps, new, wall = ok["steps"].sum(), ok["new_tokens"].sum(), ok["wall_time_s"].sum()
    drafted = ok["drafted_tokens"].sum() if "drafted_tokens" in ok else 0
    accepted = ok["accepted_tokens"].sum() if "accepted_tokens" in ok else 0
    draft_forwards = ok["draft_forwards"].sum() if "draft_forwards" in ok else 0
    stationary = ok["stationary_tokens"].fillna(0).sum() if "stationary_tokens" in ok else 0
    return {"n": int(len(ok)), "new_tokens": int(new), "steps": int(steps),
            "tokens_per_step": float(new / steps) if steps else None,
            "tokens_per_s": float(new / wall) if wall else None,
            "wall_time_s": float(wall),
            "drafted_tokens": int(drafted), "accepted_tokens": int(accepted),
            "acceptance_rate": float(accepted / drafted) if drafted else None,
            "draft_forwards_per_step": float(draft_forwards / steps) if steps else None,
            # CLLM's two counts: tokens fast-forwarded past the first in a step, and stationary guess tokens
            "fast_forwarded_per_step": float(accepted / steps) if steps else None,
            "stationary_per_step": float(stationary / steps) if steps else None}


def pair(method: pd.DataFrame, base: pd.DataFrame, on: tuple[str, ...] = ("doc_id", "turn")) -> pd.DataFrame:
    """The method's successful rows side by side with AR's on the same request: AR's columns get `_ar`."""
    return method.merge(base, on=list(on), suffixes=("", "_ar"))


def paired_stats(method: pd.DataFrame, base: pd.DataFrame) -> dict:
    pairs = pair(method, base)
    if pairs.empty:
        return {"n_paired": 0, "speedup": None, "speedup_geomean": None, "lossless_rate": None}
    ratio = pairs["wall_time_s_ar"] / pairs["wall_time_s"]
    return {"n_paired": int(len(pairs)),
            "speedup": _finite(float(pairs["wall_time_s_ar"].sum() / pairs["wall_time_s"].sum())),
            "speedup_geomean": _finite(float(math.exp(ratio.map(math.log).mean()))),
            "lossless_rate": float((pairs["output_sha1"] == pairs["output_sha1_ar"]).mean())}


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
                     {"n_paired": int(len(ok)), "speedup": 1.0, "speedup_geomean": 1.0, "lossless_rate": 1.0})
        stats.update(acc.get(name) or {"accuracy": None, "metric": metric, "n_scored": 0, "metrics": {}})
        out[name] = stats
    return out


def format_table(summary: dict[str, dict]) -> str:
    head = (f"{'method':<14}{'n':>5}{'tok/step':>10}{'accept':>8}{'tok/s':>9}{'speedup':>9}{'geomean':>9}"
            f"{'lossless':>10}{'accuracy':>10}{'errors':>8}")
    lines = [head, "-" * len(head)]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for name, s in summary.items():
        lines.append(f"{name:<14}{s['n']:>5}{fmt(s['tokens_per_step'], '.2f'):>10}"
                     f"{fmt(s['acceptance_rate'], '.1%'):>8}{fmt(s['tokens_per_s'], '.1f'):>9}"
                     f"{fmt(s['speedup'], '.2f'):>9}{fmt(s['speedup_geomean'], '.2f'):>9}"
                     f"{fmt(s['lossless_rate'], '.0%'):>10}{fmt(s.get('accuracy'), '.3f'):>10}{s['n_errors']:>8}")
    return "\n".join(lines)
