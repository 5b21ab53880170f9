"""The CLLM study: block size and training data against tokens/step, on the same held-out questions.

    harness cllm study --checkpoint results/cllm/scaling/b4/n128 --checkpoint ... --limit 40 \
        --profile results/profile/HW--smollm2-135m.csv --out-dir results/cllm/study
For every checkpoint, at the block size its cllm.json records, and for the base model at each of those block sizes
(the zero-data point), on the first --limit GSM8K *test* questions:
  - tokens/step and the share of looping outputs: `harness cllm measure` rows (Jacobi, untimed, one JSONL file per
    checkpoint and weights under OUT/measure/, named by the sha256 of the weights so that a checkpoint retrained into
    the same folder is measured anew; resumable);
  - distance-1..4 hit rates: over every Jacobi state of the base model's trajectories of the same questions (collected
    once per block size under OUT/heldout/), how often the model's argmax at the first wrong token and the 3 after it
    is the fixed point's next token, as Jacobi verification counts it (distance 1 decides whether a step commits more
    than one token);
  - what it was trained on (samples, epochs, steps, minutes: the card's recipe);
  - break-even t(n+1)/t(1) from the hardware's profile and the expected speedup tokens/step / break-even.
Writes study.csv, study.md and study.png (tokens/step and distance-1 hit rate against training samples, a line per
block size, break-even marked). Rerunning with more checkpoints measures only the new ones.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

import pandas as pd
import torch

from harness import HarnessError
from harness.analysis.plots import save_png
from harness.cllm.measure import MeasureConfig, measure
from harness.cllm.train import epochs_trained, group_samples, pack
from harness.cllm.trajectories import CollectConfig, collect, read_trajectories
from harness.engine.models import cllm_card, load_model, weights_sha256
from harness.engine.records import make_dir, write_json_atomic

HORIZON = 4  # distances reported


@dataclass(frozen=True)
class StudyConfig:
    checkpoints: tuple[str, ...]
    out_dir: str
    base: str = "smollm2-135m"
    task: str = "gsm8k"
    limit: int = 40
    max_new_tokens: int = 256
    data_dir: str | None = None
    engine: str = "eager"  # the engine tokens/step are counted on (a count: the clock plays no part)
    profile: str | None = None  # a `harness profile` CSV: break-even and expected speedup
    profile_engine: str = "compiled"
    device: str = "auto"


@torch.inference_mode()
def accuracy_by_distance(model, samples, horizon: int = HORIZON) -> tuple[list[float], int]:
    """Per distance d = 1..horizon past each state's first wrong token: the share of positions where the model's argmax
    is the fixed point's next token; and the number of states counted (distance 1 positions)."""
    hits, counts = [0] * horizon, [0] * horizon
    for sample in samples:
        b = pack(sample, "global", random.Random(0), states_per_block=0, horizon=horizon)
        logits = model(input_ids=b["input_ids"][None].to(model.device),
                       position_ids=b["position_ids"][None].to(model.device),
                       attention_mask=b["mask"][None, None].to(model.device)).logits[0]  # (L, V)
        target = b["input_ids"][b["teacher_index"] + 1]  # the answer token each student position must predict
        right = (logits[b["student_index"].to(model.device)].argmax(-1).cpu() == target).tolist()
        prev, d = None, 0
        for i, ok in zip(b["student_index"].tolist(), right):
            same_state = prev == i - 1 and bool(b["mask"][i, i - 1])  # a state's tokens see each other
            d, prev = (d + 1 if same_state else 0), i
            hits[d] += ok
            counts[d] += 1
    return [h / max(c, 1) for h, c in zip(hits, counts)], counts[0]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


def describe(checkpoint: str, base: str) -> dict:
    """Block size and training recipe of a checkpoint (the base model: no training)."""
    if checkpoint == base:
        return {"samples": 0, "epochs": 0.0, "steps": 0, "train_minutes": 0.0, "schedule": ""}
    card = cllm_card(checkpoint)
    if not card:
        raise HarnessError(f"{checkpoint} is not a CLLM checkpoint (no cllm.json); the study reads its block size "
                           "and recipe from the card")
    r = card["recipe"]
    # a run resumed from a checkpoint older than the training clock timed only its last part: no cost to report
    minutes = round(float(r["train_seconds"]) / 60, 1) if r.get("timed_from_start", True) else float("nan")
    return {"block_size": int(card["block_size"]), "samples": int(r["samples"]), "epochs": epochs_trained(r),
            "steps": int(r["steps"]), "train_minutes": minutes,
            "schedule": "constant" if r.get("snapshots") else "cosine"}


def measure_file(out: Path, checkpoint: str) -> Path:
    digest = weights_sha256(checkpoint)
    return out / "measure" / (f"{slug(checkpoint)}-{digest[:12]}.jsonl" if digest else f"{slug(checkpoint)}.jsonl")


def heldout(cfg: StudyConfig, block: int, echo) -> list[dict]:
    path = Path(cfg.out_dir) / "heldout" / f"{cfg.task}-test-b{block}.jsonl"
    collect(CollectConfig(out=str(path), model=cfg.base, task=cfg.task, split="test", data_dir=cfg.data_dir,
                          limit=cfg.limit, block_size=block, max_new_tokens=cfg.max_new_tokens, clean=False,
                          device=cfg.device), echo=echo)
    return group_samples(read_trajectories(path)[1])


def break_even(cfg: StudyConfig, blocks) -> dict[int, float]:
    if not cfg.profile:
        return {}
    from harness.orchestration.tune import interpolate_costs, profile_costs

    cost = interpolate_costs(profile_costs(cfg.profile, cfg.profile_engine), [n + 1 for n in blocks], cfg.profile)
    return {n: cost[n + 1] for n in blocks}


def study(cfg: StudyConfig, echo=print) -> pd.DataFrame:
    if not cfg.checkpoints:
        raise HarnessError("--checkpoint: give at least one CLLM checkpoint")
    out = Path(cfg.out_dir)
    make_dir(out)
    trained = {c: describe(c, cfg.base) for c in cfg.checkpoints}
    blocks = sorted({d["block_size"] for d in trained.values()})
    entries = [(cfg.base, n, describe(cfg.base, cfg.base)) for n in blocks] + \
              [(c, d["block_size"], d) for c, d in trained.items()]
    cost = break_even(cfg, blocks)
    samples = {n: heldout(cfg, n, echo) for n in blocks}
    rows = []
    for name, n, recipe in entries:
        echo(f"study: {name} at block {n}")
        m = measure(MeasureConfig(out=str(measure_file(out, name)), checkpoint=name, model=cfg.base,
                                  block_sizes=(n,), task=cfg.task, limit=cfg.limit, max_new_tokens=cfg.max_new_tokens,
                                  data_dir=cfg.data_dir, engine=cfg.engine, device=cfg.device), echo=echo).iloc[0]
        hits, states = accuracy_by_distance(load_model(name, cfg.device).model, samples[n])
        row = {"checkpoint": name, "block_size": n, **recipe, "questions": int(m["n"]),
               "tokens_per_step": round(float(m["tokens_per_step"]), 4), "repeat_share": float(m["repeat_share"]),
               **{f"d{d + 1}": round(h, 4) for d, h in enumerate(hits)}, "states": states}
        if n in cost:
            row["break_even"] = round(cost[n], 4)
            row["expected_speedup"] = round(row["tokens_per_step"] / cost[n], 4)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "study.csv", index=False)
    (out / "study.md").write_text(markdown(table, cfg))
    save_png(plot(table), out / "study.png")
    write_json_atomic(out / "study.json", {"config": {k: (list(v) if isinstance(v, tuple) else v)
                                                      for k, v in cfg.__dict__.items()}})
    return table


def markdown(table: pd.DataFrame, cfg: StudyConfig) -> str:
    cols = ["checkpoint", "block_size", "samples", "epochs", "schedule", "train_minutes", "questions",
            "tokens_per_step", "d1", "d2", "d3", "d4", "repeat_share"] + \
           [c for c in ("break_even", "expected_speedup") if c in table]
    t = table.sort_values(["block_size", "samples", "epochs"])[cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    fmt = {"epochs": "{:g}", "train_minutes": "{:.1f}"}
    for r in t.to_dict("records"):
        lines.append("| " + " | ".join(fmt.get(c, "{:.3f}").format(r[c]) if isinstance(r[c], float) else str(r[c])
                                       for c in cols) + " |")
    head = (f"CLLM study: {cfg.limit} {cfg.task} test questions, {cfg.max_new_tokens} new tokens, Jacobi at each "
            f"checkpoint's block size (base model: samples 0). d1..d4: argmax hit rate at distance 1..4 past a state's "
            f"first wrong token. " + (f"break_even: t(n+1)/t(1) on the {cfg.profile_engine} engine from {cfg.profile}."
                                       if cfg.profile else ""))
    return head + "\n\n" + "\n".join(lines) + "\n"


def point_names(checkpoints) -> dict[str, str]:
    """Each checkpoint's folder name, or its whole path where two share a folder name: one legend label each."""
    short = {c: Path(str(c)).name or str(c) for c in checkpoints}
    counts = pd.Series(list(short.values())).value_counts()
    return {c: name if counts[name] == 1 else str(c) for c, name in short.items()}


def plot(table: pd.DataFrame):
    import matplotlib.pyplot as plt  # harness.analysis.plots has chosen the Agg backend

    xs = sorted(table["samples"].unique())
    where = {s: i for i, s in enumerate(xs)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (n, g) in enumerate(table.groupby("block_size")):
        color = f"C{i}"
        # the line: the base and the one-epoch constant-rate trainings (a snapshot run); other recipes (more epochs,
        # a cosine schedule) are points off the line, named in the legend
        on_line = (g["epochs"] <= 1) & (g["schedule"] != "cosine")
        h = g[on_line].sort_values("samples")
        left.plot([where[s] for s in h["samples"]], h["tokens_per_step"], "o-", color=color, label=f"block {n}")
        right.plot([where[s] for s in h["samples"]], h["d1"], "o-", color=color, label=f"block {n}")
        off = g[~on_line]
        names = point_names(off["checkpoint"])
        for marker, (_, r) in zip(cycle("sD^v<>"), off.iterrows()):  # one marker and label per checkpoint
            left.plot([where[r["samples"]]], [r["tokens_per_step"]], marker, color=color, mfc="none", ms=9,
                      label=f"block {n}: {names[r['checkpoint']]} ({r['schedule']}, {r['epochs']:g} epochs)")
            right.plot([where[r["samples"]]], [r["d1"]], marker, color=color, mfc="none", ms=9)
        if "break_even" in g and g["break_even"].notna().any():
            left.axhline(float(g["break_even"].iloc[0]), color=color, ls="--", lw=1,
                         label=f"break-even, block {n}")
    for ax, title in ((left, "tokens per Jacobi step"), (right, "distance-1 hit rate")):
        ax.set_xticks(range(len(xs)), ["base" if s == 0 else str(s) for s in xs])
        ax.set_xlabel("GSM8K train questions trained on")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig

