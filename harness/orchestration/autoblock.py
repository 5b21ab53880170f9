"""CLLM's `-O block_size=auto`: the block size with the best expected speed on this hardware, chosen before a run.

A Jacobi step of block n is one forward of n + 1 tokens that commits tokens_per_step(n) tokens; an AR step is one
forward of one token that commits one. So the expected speedup of block n is

    tokens_per_step(n) / (t(n + 1) / t(1))

with tokens_per_step(n) from the checkpoint's cllm.json (`harness cllm measure --write-card`) and t(w) measured here,
on the run's engine and model (harness profile's `measure`, 200 cached tokens). The choice, the costs and the expected
speedups go into run.json (`auto_block_size`), so a reader sees why the run used its block.
"""
from __future__ import annotations

import dataclasses

from harness import HarnessError
from harness.engine.models import cllm_card
from harness.engine.session import RunConfig
from harness.orchestration.profile import measure

CONTEXT = 200  # cached tokens the costs are measured after (a GSM8K prompt and some answer)


def choose(tokens_per_step: dict[int, float], cost: dict[int, float]) -> tuple[int, dict[int, float]]:
    """(best n, {n: expected speedup}) from tokens/step per block and the cost t(w)/t(1) of a w-token forward."""
    expected = {n: tps / cost[n + 1] for n, tps in sorted(tokens_per_step.items())}
    return max(expected, key=expected.get), expected


def resolve(cfg: RunConfig, model, echo=print) -> tuple[RunConfig, dict | None]:
    """cfg with a cllm `block_size=auto` replaced by the chosen number, and what the choice was made from."""
    if cfg.method != "cllm" or cfg.options.get("block_size") != "auto":
        return cfg, None
    from methods.cllm import DEFAULT_CHECKPOINT

    spec = cfg.options.get("checkpoint", DEFAULT_CHECKPOINT)
    card = cllm_card(spec) or {}
    measured = {int(n): float(v) for n, v in (card.get("tokens_per_step") or {}).items()}
    if not measured:
        raise HarnessError(f"block_size=auto needs the checkpoint's tokens/step per block size, which {spec} does not "
                           f"record; run `harness cllm measure --checkpoint {spec} --block-sizes 4,8,16 --write-card` "
                           "or pass a number")
    echo(f"block_size=auto: measuring forward costs for widths {sorted(n + 1 for n in measured)} on the {cfg.engine} engine")
    costs = measure(model, CONTEXT, widths=[n + 1 for n in measured], repeats=10, engines=(cfg.engine,))
    cost = dict(zip(costs["width"], costs["break_even_tokens_per_step"]))
    n, expected = choose(measured, cost)
    echo("block_size=auto: " + ", ".join(f"n={k}: {measured[k]:.2f} tok/step / {cost[k + 1]:.2f} = {v:.2f}x"
                                          for k, v in expected.items()) + f" -> {n}")
    info = {"block_size": n, "tokens_per_step": measured, "tokens_per_step_on": card.get("tokens_per_step_on"),
            "cost_vs_width_1": {int(w): round(float(c), 3) for w, c in cost.items()},
            "expected_speedup": {k: round(v, 3) for k, v in expected.items()}, "context": CONTEXT}
    return dataclasses.replace(cfg, options={**cfg.options, "block_size": str(n)}), info
