"""`harness compare RUN_A RUN_B`: two runs side by side: the conditions that differ, each method's
metrics with B − A and B / A, and how many requests got the same output in both. `speedup` is the ratio of
throughputs against the run's own AR, `length_ratio` the method's output length relative to AR's.

    print(compare(resolve_run("20261121-233427-77a3", "results/runs"), Path("elsewhere/run")))
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness import HarnessError
from harness.engine.records import MANIFEST, read_manifest
from harness.analysis.leaderboard import leaderboard, load_runs, settings
from harness.analysis.reference import differences, engine_label, reference_note
from harness.analysis.summary import BASELINE

QUANTITIES = (("n", "d"), ("n_errors", "d"), ("tokens_per_step", ".3f"), ("tokens_per_s", ".2f"),
              ("speedup", ".3f"), ("speedup_geomean", ".3f"), ("length_ratio", ".3f"), ("acceptance_rate", ".3f"),
              ("lossless_rate", ".3f"), ("accuracy", ".3f"))
SAME_ANYWAY = {"run_id", "created", "config.output_dir"}  # differ between any two runs


def resolve_run(spec: str, output_dir: str) -> Path:
    """A run folder given as a path, or as a run id under output_dir."""
    for path in (Path(spec), Path(output_dir) / spec):
        if (path / MANIFEST).exists():
            return path
    raise HarnessError(f"no run {spec!r}: neither a run folder nor a run id under {output_dir} (no {MANIFEST} found)")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):  # an empty one adds nothing, so {} and a missing key compare equal
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differing_conditions(a: dict, b: dict) -> list[tuple[str, object, object]]:
    fa, fb = flatten(a), flatten(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if k not in SAME_ANYWAY and fa.get(k) != fb.get(k)]


def _fmt(v, spec):
    return "-" if v is None or pd.isna(v) else format(v, spec)


def compare(a: Path, b: Path, warn=None) -> str:
    info = [read_manifest(p / MANIFEST) for p in (a, b)]
    runs = [load_runs([p], warn) for p in (a, b)]
    boards = [leaderboard(r, n_boot=0, warn=warn).set_index("method") for r in runs]
    sets = [settings(i) for i in info]
    lines = [f"{who}: {path}  ({i['method']['name']} on {i['task']['name']}, {i['model']['name']}, "
             f"{i['hardware']['label']}, engine {engine_label(s['engine'])})"
             for who, path, i, s in zip("AB", (a, b), info, sets)]
    note = reference_note({"A": differences(sets[0]), "B": differences(sets[1])})
    lines += [note] if note else []
    diffs = differing_conditions(info[0], info[1])
    if any(k.startswith(("model.name", "hardware.label", "task.name")) for k, _, _ in diffs):
        lines.append("note: the runs differ in model, task or hardware; their speeds are not paired")
    lines += ["conditions that differ:" if diffs else "conditions: the same"]
    lines += [f"  {k}: {va!r} -> {vb!r}" for k, va, vb in diffs]
    head = f"{'method':<14}{'quantity':<18}{'A':>10}{'B':>10}{'B-A':>10}{'B/A':>8}"
    lines += ["", head, "-" * len(head)]
    names = list(dict.fromkeys(n for bd in boards for n in bd.index if n != BASELINE)) + [BASELINE]
    for name in names:
        for i, (q, spec) in enumerate(QUANTITIES):
            va, vb = (bd.loc[name, q] if name in bd.index else None for bd in boards)
            both = va is not None and vb is not None and not pd.isna(va) and not pd.isna(vb)
            diff = _fmt(vb - va, "+" + spec) if both else "-"
            ratio = _fmt(vb / va, ".3f") if both and va else "-"
            lines.append(f"{name if i == 0 else '':<14}{q:<18}{_fmt(va, spec):>10}{_fmt(vb, spec):>10}{diff:>10}{ratio:>8}")
    lines += ["", same_outputs(runs[0].samples, runs[1].samples)]
    return "\n".join(lines)


def same_outputs(sa: pd.DataFrame, sb: pd.DataFrame) -> str:
    """Per method: of the requests both runs completed, how many outputs are token-identical."""
    ok = lambda s: s[s["error"].isna()][["method", "doc_id", "turn", "output_sha1"]]  # noqa: E731
    both = ok(sa).merge(ok(sb), on=["method", "doc_id", "turn"], suffixes=("_a", "_b"))
    if both.empty:
        return "identical outputs: no request completed in both runs"
    groups = sorted(both.groupby("method", sort=False), key=lambda mg: mg[0] == BASELINE)  # AR last
    counts = [f"{m} {int((g['output_sha1_a'] == g['output_sha1_b']).sum())}/{len(g)}" for m, g in groups]
    return "identical outputs (requests completed in both runs): " + ", ".join(counts)
