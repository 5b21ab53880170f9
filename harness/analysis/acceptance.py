"""Acceptance in full: how many tokens each target forward committed, and how far into its draft each was accepted.

    table = acceptance(board, samples)    # tidy: one row per (leaderboard row, kind, k)
`kind` "committed": the share of target forwards that committed k tokens (k = 1, 2, ...; τ = the mean of that
distribution, the bonus token counted). `kind` "position": for methods that draft, the acceptance rate at draft
position k: of the steps whose first k-1 drafted tokens were accepted (and that drafted at least k), the share that
accepted the k-th too. Both from the per-step lists the harness records (`step_tokens`, `step_drafted`,
`step_accepted`), positions up to the longest acceptance seen; definitions: docs/measurement.md#acceptance-in-full.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.leaderboard import SETTINGS, whole

KEY = ["model", "hardware", "task", "method", "options", *SETTINGS]


def _flat(rows: pd.DataFrame, column: str) -> np.ndarray:
    lists = [v for v in rows[column] if isinstance(v, (list, tuple, np.ndarray)) and len(v)] if column in rows else []
    return np.concatenate([np.asarray(v, dtype=int) for v in lists]) if lists else np.zeros(0, dtype=int)


def committed(rows: pd.DataFrame) -> pd.DataFrame:
    """{k, steps, share}: target forwards that committed k tokens."""
    tokens = _flat(rows, "step_tokens")
    if not len(tokens):
        return pd.DataFrame(columns=["k", "steps", "share"])
    counts = np.bincount(tokens)
    ks = np.nonzero(counts)[0]
    return pd.DataFrame({"k": ks, "steps": counts[ks], "share": counts[ks] / counts.sum()})


def by_position(rows: pd.DataFrame) -> pd.DataFrame:
    """{k, steps, rate}: the acceptance rate at draft position k (conditional on positions 1..k-1 accepted), over the
    steps that drafted at least k tokens; empty for a method that never drafts (AR)."""
    drafted, accepted = _flat(rows, "step_drafted"), _flat(rows, "step_accepted")
    if not len(drafted) or len(drafted) != len(accepted) or drafted.max() == 0:
        return pd.DataFrame(columns=["k", "steps", "rate"])
    out = []
    # positions up to the longest acceptance seen: a multi-candidate method (lookahead, Jacobi) counts every
    # candidate token as drafted, so "drafted at least k" cannot tell how long its candidates were
    for k in range(1, int(min(drafted.max(), accepted.max())) + 1):
        reached = (accepted >= k - 1) & (drafted >= k)  # (S,) steps where position k was drafted and still in play
        if reached.sum() == 0:
            break
        out.append({"k": k, "steps": int(reached.sum()), "rate": float((accepted[reached] >= k).mean())})
    return pd.DataFrame(out, columns=["k", "steps", "rate"])


def acceptance(board: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Both distributions for every leaderboard row over all turns and categories, from the samples of its runs."""
    parts = []
    rows = board[whole(board)]
    ok = samples[samples["error"].isna()]
    for _, b in rows.iterrows():
        mine = ok[ok["run_id"].isin(str(b["run_id"]).split(";")) & (ok["method"] == b["method"])]
        key = {k: b[k] for k in KEY}
        parts += [committed(mine).assign(kind="committed", **key), by_position(mine).assign(kind="position", **key)]
    cols = [*KEY, "kind", "k", "steps", "share", "rate"]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True).reindex(columns=cols) if parts else pd.DataFrame(columns=cols)
