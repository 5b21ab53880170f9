"""`-O key=auto`: a method's options chosen for this hardware before a run, by the method itself.

    cfg, made_from = resolve(cfg, model)     # cfg.options with every `auto` value replaced
The harness asks the run's method (Decoder.resolve_auto) with an AutoContext: forward costs t(w)/t(1) measured on
demand on the run's engine and model (harness profile's `measure`, 200 cached tokens), checkpoint cards through the
loader. What the choice was made from goes into run.json (`auto`), so a reader sees why the run used its settings,
and a resumed run keeps the choice (`chosen`).
"""
from __future__ import annotations

import dataclasses

from harness import HarnessError
from harness.engine.models import cllm_card
from harness.engine.session import RunConfig
from harness.orchestration.profile import measure
from methods import get_method
from methods.base import AutoContext, OptionError

CONTEXT = 200  # cached tokens the costs are measured after (a GSM8K prompt and some answer)


def resolve(cfg: RunConfig, model, echo=print) -> tuple[RunConfig, dict | None]:
    """cfg with the method's `auto` options resolved, and {"chosen": the options it set, "context": CONTEXT, **what
    the method made the choice from}; (cfg, None) where no option is `auto`."""
    if "auto" not in cfg.options.values():
        return cfg, None

    def cost(widths):
        table = measure(model, CONTEXT, widths=sorted(set(widths)), repeats=10, engines=(cfg.engine,))
        return dict(zip(table["width"].astype(int), table["break_even_tokens_per_step"].astype(float)))

    ctx = AutoContext(cost=cost, card=cllm_card, say=lambda m: echo(f"{m} (on the {cfg.engine} engine)"))
    try:
        options, made_from = get_method(cfg.method).resolve_auto(dict(cfg.options), ctx)
    except (OptionError, ValueError) as e:
        raise HarnessError(f"method {cfg.method}: {e}") from None
    left = [k for k, v in options.items() if v == "auto"]
    if left:
        raise HarnessError(f"method {cfg.method}: option {left[0]}=auto is not something this method can choose; "
                           "pass a value")
    chosen = {k: v for k, v in options.items() if cfg.options.get(k) != v}
    return dataclasses.replace(cfg, options=options), {"chosen": chosen, "context": CONTEXT, **(made_from or {})}


def resumed(cfg: RunConfig, info: dict) -> RunConfig:
    """A resumed run keeps the options its first start chose (run.json's `auto`; `auto_block_size` before it)."""
    old = info.get("auto") or ({"chosen": {"block_size": str(info["auto_block_size"]["block_size"])}}
                               if "auto_block_size" in info else None)
    return dataclasses.replace(cfg, options={**cfg.options, **old["chosen"]}) if old else cfg
