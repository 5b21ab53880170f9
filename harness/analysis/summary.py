"""Pure summary of one run's samples rows: per-method throughput, tokens per step, and the paired figures vs AR.

    summary = summarize(rows, scores=scores, metric="exact_match")   # {method: stats}, as summary.json holds
The paired figures (speedup, per-answer and clean speedups, intervals) come from harness.analysis.paired; every
definition is in docs/measurement.md.
"""
from __future__ import annotations

import pandas as pd

from harness.analysis.paired import FIGURES, MIN_DOCS, paired_statistics
from harness.analysis.specbench import specbench_figures
from harness.engine.generate import REPEAT_RUN
from harness.text import repeats_phrase, text_table

from harness import BASELINE  # noqa: F401  (re-exported for the analysis modules)
INTERVALS = tuple(f"{f}{x}" for f in FIGURES for x in ("_lo", "_hi"))


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


def speedups(pairs: pd.DataFrame) -> dict:
    """`speedup` (ratio of throughputs), `speedup_geomean` (geometric mean of per-request throughput ratios),
    `length_ratio` (Σ method tokens / Σ AR tokens), `speedup_per_answer` (Σ AR time / Σ method time) and
    `speedup_clean` (the speedup over the pairs where both sides ended on their own) over `timed` pairs."""
    out = bootstrap_speedups(pairs, n_boot=0)
    return {k: out[k] for k in ("speedup", "speedup_geomean", "length_ratio", "speedup_per_answer", "speedup_clean",
                                "n_clean", "capped_share")}


def bootstrap_speedups(pairs: pd.DataFrame, n_boot: int = 2000, seed: int = 0, min_docs: int = MIN_DOCS,
                       accuracy: pd.DataFrame | None = None) -> dict:
    """harness.analysis.paired.paired_statistics over `timed` pairs (one run when they carry no `run_id`):
    every figure with its 95% interval from resampling runs, then documents (a conversation's turns together);
    none below `min_docs` documents, and `interval_note` says why."""
    pairs = pairs if "run_id" in pairs or pairs.empty else pairs.assign(run_id="run")
    return paired_statistics(pairs, accuracy, n_boot, seed, min_docs)


def turn_speedups(pairs: pd.DataFrame) -> dict[str, dict]:
    """{turn: speedups} for a conversation task (more than one turn), else {}."""
    turns = sorted(pairs["turn"].unique()) if len(pairs) and "turn" in pairs else []
    return {str(t): speedups(pairs[pairs["turn"] == t]) for t in turns} if len(turns) > 1 else {}


def paired_stats(method: pd.DataFrame, base: pd.DataFrame) -> dict:
    pairs = pair(method, base)
    ratios = timed(pairs)
    turns = turn_speedups(ratios)
    return {"n_paired": int(len(ratios)), "n_docs": int(ratios["doc_id"].nunique()) if len(ratios) else 0,
            **speedups(ratios), **({"turns": turns} if turns else {}),
            "lossless_rate": float((pairs["output_sha1"] == pairs["output_sha1_ar"]).mean()) if len(pairs) else None}


def category_stats(ok: pd.DataFrame, base: pd.DataFrame, method: str, baseline: str, scores: list[dict],
                   metric: str | None) -> dict[str, dict]:
    """{category: figures} for a task whose rows carry a category (Spec-Bench), else {}: per category the pairs,
    tokens/step, our speedup and Spec-Bench's (harness.analysis.specbench), the lossless rate and the accuracy over
    the category's scored documents (None where it has no metric)."""
    if "category" not in ok or ok["category"].isna().all():
        return {}
    out = {}
    for c in dict.fromkeys(ok["category"].dropna()):
        mine = ok[ok["category"] == c]
        docs = set(mine["doc_id"])
        values = [r["scores"].get(metric) for r in scores if r["method"] == method and r["doc_id"] in docs] \
            if metric else []
        values = [v for v in values if v is not None]
        stats = {"n": int(len(mine)), "tokens_per_step": method_stats(mine)["tokens_per_step"],
                 "accuracy": float(sum(values) / len(values)) if values else None}
        if method != baseline:
            pairs = pair(mine, base[base["category"] == c])
            ratios = timed(pairs).assign(run_id="run")
            figures = specbench_figures(ratios, mine)
            stats.update(n_paired=int(len(ratios)), speedup=speedups(ratios)["speedup"] if len(ratios) else None,
                         specbench_speedup=figures["specbench_speedup"],
                         lossless_rate=float((pairs["output_sha1"] == pairs["output_sha1_ar"]).mean()) if len(pairs)
                         else None)
        out[str(c)] = stats
    return out


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
        by_category = category_stats(ok, base, name, baseline, scores or [], metric)
        if by_category:
            stats["categories"] = by_category
        out[name] = stats
    return out


def format_categories(summary: dict[str, dict]) -> str:
    """Per category (a task whose rows carry one), the methods' speedups both ways; "" for other tasks."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    header = ["category", "method", "n", "tok/step", "speedup", "spec-bench", "lossless", "accuracy"]
    rows = [[c, name, s["n"], fmt(s["tokens_per_step"], ".2f"), fmt(s.get("speedup", 1.0), ".2f"),
             fmt(s.get("specbench_speedup", 1.0), ".2f"), fmt(s.get("lossless_rate", 1.0), ".0%"),
             fmt(s["accuracy"], ".3f") if s["accuracy"] is not None else "no metric"]
            for name, stats in summary.items() for c, s in (stats.get("categories") or {}).items()]
    rows.sort(key=lambda r: r[0])
    return text_table(header, rows, right=set(range(2, len(header)))) if rows else ""


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
