"""`harness tune`: each parallel method's size settings chosen for the machine at hand, from `harness profile`'s
forward costs and the tokens per step each setting commits on pilot questions. Reproducible, not hand-picked.

    harness tune --engine compiled --profile results/local/profile  # then: harness bench --tuned results/local/tuning.json
A step of a method that runs one target forward of w tokens and commits tokens_per_step tokens is expected to run
tokens_per_step / (t(w) / t(1)) times as fast as AR (AR: one token per one-token forward). For every candidate of
the methods' tuning spaces (`grid`: each method declares its own), tokens/step is counted (untimed: greedy decoding
is deterministic, so the count does not depend on the engine or the clock) on the first --limit GSM8K *train*
questions, never on the test questions a sweep reports; t(w)/t(1) is measured on --engine after 200 cached tokens,
or read from a `harness profile` CSV of this machine (--profile: a CSV, or a folder of profiles, where the one
measured on this hardware is used; no compiling here; a width between two measured ones is interpolated linearly).
The best candidate per method is written with the whole table. A method whose step is more than one target forward
(a drafter with forwards of its own) is outside this cost model and declares no tuning space.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harness import LOCAL_DIR, HarnessError
from harness.evaluation.tasks import prompts_for
from harness.engine.generate import Stopper, generate
from harness.engine.models import load_model, resolve_device
from harness.engine.provenance import hardware
from harness.engine.records import check_writable_dir, make_dir, write_json_atomic
from harness.engine.session import build_decoder, encode, eos_ids
from harness.orchestration.profile import measure, profile_for, profile_label
from methods.specs import format_options

log = logging.getLogger(__name__)
CONTEXT = 200
def grid() -> tuple[tuple[str, dict[str, str]], ...]:
    """(method, options) candidates: every installed method's own tuning space (Decoder.tuning_space: Jacobi's block,
    lookahead's window and n-gram size, the n-gram drafter's draft length, a plug-in's), in registry order."""
    from methods import available_methods, get_method

    return tuple((name, dict(options)) for name in available_methods() for options in get_method(name).tuning_space())


@dataclass(frozen=True)
class TuneConfig:
    out: str = LOCAL_DIR + "/tuning.json"  # the committed results/tuning.json is `make results`'s
    model: str = "smollm2-135m"
    engine: str = "eager"
    limit: int = 5
    max_new_tokens: int = 128
    data_dir: str | None = None
    device: str = "auto"
    profile: str | None = None  # a `harness profile` CSV with rows for `engine`: costs read, not measured


def profile_costs(path: str, engine: str) -> dict[int, float]:
    """{width: t(w)/t(1)} from a `harness profile` CSV's rows for `engine` (read before any pilot work, so a bad
    file fails at once)."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
        rows = table[table["engine"] == engine]
        known = dict(zip(rows["width"].astype(int), rows["break_even_tokens_per_step"].astype(float)))
    except (OSError, ValueError, KeyError) as e:
        raise HarnessError(f"--profile {path}: not a `harness profile` CSV ({e})") from None
    if not known:
        raise HarnessError(f"--profile {path} has no rows for the {engine} engine (harness profile --engines {engine})")
    return known


def choose_profile(path: str, label: str, model: str, echo=print) -> str:
    """--profile as a CSV: a folder of profiles gives the one measured for `model` on this hardware (`label`), never
    the newest; a CSV measured on other hardware is used as asked, with a warning."""
    if Path(path).is_dir():
        found = profile_for(path, label, model)
        if found is None:
            raise HarnessError(f"--profile {path}: no profile of {model} on this hardware ({label}); measure one: "
                               f"harness profile --model {model} --engines eager,compiled --out {path}")
        return str(found)
    measured = profile_label(path)
    if measured is not None and measured != label:
        echo(f"warning: --profile {path} was measured on {measured}, not on this hardware ({label})")
    return path


def tuning_hardware(path: str) -> str | None:
    """The hardware label a tuning file was made on (None when it does not say)."""
    try:
        return json.loads(Path(path).read_text())["hardware"]["label"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def interpolate_costs(known: dict[int, float], widths, path: str = "the profile") -> dict[int, float]:
    """Costs at `widths`, linear between the nearest measured widths; outside the measured span it is a HarnessError
    (extrapolating a cost curve would decide on a guess)."""
    measured = sorted(known)
    outside = [w for w in widths if not measured[0] <= w <= measured[-1]]
    if outside:
        raise HarnessError(f"--profile {path}: width {outside[0]} is outside the measured widths {measured}; measure it: "
                           f"harness profile --widths {','.join(map(str, sorted(set(measured) | set(outside))))}")
    return {w: float(np.interp(w, measured, [known[m] for m in measured])) for w in widths}


def tune(cfg: TuneConfig, echo=print) -> dict:
    if cfg.limit < 1:
        raise HarnessError(f"--limit must be at least 1 (got {cfg.limit})")
    out = Path(cfg.out)
    check_writable_dir(out.parent, "--out")
    label = hardware(resolve_device(cfg.device))["label"]
    profile = choose_profile(cfg.profile, label, cfg.model, echo) if cfg.profile else None
    known = profile_costs(profile, cfg.engine) if profile else None
    lm = load_model(cfg.model, cfg.device)
    prompts = [torch.tensor([encode(lm, [{"role": "user", "content": text}], lm.chat)], device=lm.device)
               for _, text in prompts_for("gsm8k", "train", cfg.data_dir, lm.chat, cfg.limit)]
    stopper = Stopper(eos_ids(lm), (), lm.tokenizer)
    rows = []
    for name, options in tqdm(grid(), desc="tune", unit="setting"):
        decoder, _ = build_decoder(name, options, lm.model)  # eager: counts only
        tokens = steps = 0
        for ids in prompts:
            g = generate(decoder, ids, cfg.max_new_tokens, stopper)
            tokens, steps = tokens + len(g.tokens), steps + len(g.step_tokens)
        rows.append({"method": name, "options": format_options(options), "width": max(decoder.widths()),
                     "tokens_per_step": tokens / steps})
    widths = sorted({r["width"] for r in rows})
    if known is not None:
        cost = interpolate_costs(known, widths, profile)
    else:
        echo(f"measuring forward costs on the {cfg.engine} engine")
        costs = measure(lm.model, CONTEXT, widths=widths, repeats=10, engines=(cfg.engine,))
        cost = dict(zip(costs["width"].astype(int), costs["break_even_tokens_per_step"].astype(float)))
    for r in rows:
        r["cost_vs_width_1"] = round(cost[r["width"]], 3)
        r["expected_speedup"] = round(r["tokens_per_step"] / cost[r["width"]], 3)
        r["tokens_per_step"] = round(r["tokens_per_step"], 3)
    best = {}
    for r in rows:
        if r["method"] not in best or r["expected_speedup"] > best[r["method"]]["expected_speedup"]:
            best[r["method"]] = r
    result = {"model": cfg.model, "engine": cfg.engine, "hardware": hardware(lm.device), "pilot": {
        "task": "gsm8k", "split": "train", "limit": cfg.limit, "max_new_tokens": cfg.max_new_tokens},
        "context": CONTEXT, "costs_from": profile or "measured", "candidates": rows,
        "tuned": [f"{m}:{r['options']}" for m, r in best.items()]}
    make_dir(out.parent)
    write_json_atomic(out, result)
    for r in rows:
        mark = " <- tuned" if best[r["method"]] is r else ""
        echo(f"{r['method']:12s} {r['options']:38s} w={r['width']:2d} {r['tokens_per_step']:.2f} tok/step / "
             f"{r['cost_vs_width_1']:.2f} = {r['expected_speedup']:.2f}x{mark}")
    return result


def tuned_specs(path: str, alongside=(), echo=print) -> list[str]:
    """The tuned `METHOD:options` specs of a tuning file (for bench --tuned), less those that resolve to the same
    settings as a spec in `alongside` (a tuned setting equal to a method's defaults is run once, with a note)."""
    from methods import get_method
    from methods.specs import parse_specs

    try:
        specs = list(json.loads(Path(path).read_text())["tuned"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HarnessError(f"{path} is not a tuning file from `harness tune` ({e})") from None

    def resolved(spec) -> tuple:
        name, opts = spec
        cls = get_method(name)
        defaults = {f.name: str(f.default) for f in fields(cls.Options)} if cls else {}
        return name, tuple(sorted({**defaults, **dict(opts)}.items()))

    have = {resolved(s) for s in parse_specs(alongside)}
    out = []
    for text in specs:
        if resolved(parse_specs([text])[0]) in have:
            echo(f"tuned {text}: the same settings as a method already in the sweep; run once")
        else:
            out.append(text)
    return out
