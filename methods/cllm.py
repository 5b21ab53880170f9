"""CLLM decoding (Kou et al. 2024): Jacobi decoding on a consistency-trained checkpoint.

    harness run --method cllm --task gsm8k                        # the shipped checkpoint for smollm2-135m
    harness run --method cllm -O checkpoint=ckpt/ --model BASE    # ckpt/ from `harness cllm train`, a hub id...
    harness run --method cllm -O block_size=auto                  # the block the hardware's profile favours
The checkpoint comes through the loader the harness passes in; the runner's model (--model) is the base, so the paired AR
baseline is AR on the base model: `speedup` is against it and `lossless_rate` is agreement with it.
The block size defaults to the one the checkpoint was trained for (its card, cllm.json, read through the loader; 16
where it is unknown, as the paper); `auto` is resolved before the decoder is built (`resolve_auto`: the harness asks
every method), from the forward costs measured on the run's engine and the checkpoint's tokens/step per block.
Each step records the paper's counts: fast-forwarded tokens (accepted) and stationary tokens.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from methods.base import AutoContext, OptionError
from methods.jacobi import INITS, Jacobi

DEFAULT_CHECKPOINT = "smollm2-135m-cllm"
UNKNOWN_BLOCK = 16  # a checkpoint that does not say what it was trained for (e.g. a hub model): the paper's n


@dataclass(frozen=True)
class CLLMOptions:
    checkpoint: str = DEFAULT_CHECKPOINT  # alias, LoRA checkpoint dir, model dir, hub id (cllm/consistency-llm-7b-math)
    block_size: str = "checkpoint"  # n, "checkpoint" (the block it was trained for) or "auto" (resolved by the harness)
    init: str = "prompt"  # as Jacobi: fresh guess tokens are random prompt tokens (as CLLM) or the last token
    seed: int = 0

    def __post_init__(self):
        if self.block_size not in ("checkpoint", "auto") and not (str(self.block_size).isdigit() and int(self.block_size) > 0):
            raise ValueError(f"block_size must be a positive number, 'checkpoint' or 'auto', got {self.block_size!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")


class CLLM(Jacobi):
    description = "Jacobi decoding on a CLLM checkpoint (-O checkpoint=...), paired with AR on the base model"
    lossless = False  # the checkpoint is a different model: its output may differ from the base's
    Options = CLLMOptions

    def __init__(self, model, options=None, loader=None, engine=None):
        super().__init__(model, options, loader, engine)
        if self.options.block_size == "auto":
            raise ValueError("block_size=auto is chosen by the harness from forward costs (harness run resolves it); "
                             "pass a number here")
        checkpoint = self.load_second_model(self.options.checkpoint)
        if checkpoint.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"checkpoint {self.options.checkpoint} has a vocabulary of {checkpoint.config.vocab_size} "
                             f"tokens, the base model {model.config.vocab_size}; pass the checkpoint's base as --model")
        n = self.options.block_size
        n = int(n) if n != "checkpoint" else (self.card(self.options.checkpoint) or {}).get("block_size") or UNKNOWN_BLOCK
        self.options = dataclasses.replace(self.options, block_size=n)  # Jacobi's decode reads an int
        self.model = checkpoint  # Jacobi decoding runs on the checkpoint, on an engine of the same kind
        self.engine = self.engine.like(checkpoint)

    @classmethod
    def tuning_space(cls):
        return ()  # its block is the checkpoint's, or `auto` from the checkpoint's own measurements

    @classmethod
    def planned(cls, options, card):
        """The block the checkpoint was trained for when block_size is `checkpoint`, and the tokens/step its card
        measured at the block."""
        found = card(options.checkpoint) or {}
        n = found.get("block_size") if options.block_size == "checkpoint" else options.block_size
        if not str(n).isdigit():
            return (), None
        tps = (found.get("tokens_per_step") or {}).get(str(n))
        return (int(n) + 1,), (float(tps) if tps else None)

    @classmethod
    def resolve_auto(cls, options, ctx: AutoContext):
        """block_size=auto: the block n with the best expected speed here, tokens_per_step(n) / (t(n+1) / t(1)), with
        tokens/step per block from the checkpoint's card (`harness cllm measure --write-card`) and t(w) from ctx."""
        if options.get("block_size") != "auto":
            return options, None
        spec = options.get("checkpoint", DEFAULT_CHECKPOINT)
        card = ctx.card(spec) or {}
        measured = {int(n): float(v) for n, v in (card.get("tokens_per_step") or {}).items()}
        if not measured:
            raise OptionError(f"block_size=auto needs the checkpoint's tokens/step per block size, which {spec} does not "
                              f"record; run `harness cllm measure --checkpoint {spec} --block-sizes 4,8,16 --write-card` "
                              "or pass a number")
        ctx.say(f"block_size=auto: measuring forward costs for widths {sorted(n + 1 for n in measured)}")
        cost = ctx.cost([n + 1 for n in measured])
        n, expected = choose_block(measured, cost)
        ctx.say("block_size=auto: " + ", ".join(f"n={k}: {measured[k]:.2f} tok/step / {cost[k + 1]:.2f} = {v:.2f}x"
                                               for k, v in expected.items()) + f" -> {n}")
        return {**options, "block_size": str(n)}, {
            "block_size": n, "tokens_per_step": measured, "tokens_per_step_on": card.get("tokens_per_step_on"),
            "cost_vs_width_1": {int(w): round(float(c), 3) for w, c in cost.items()},
            "expected_speedup": {k: round(v, 3) for k, v in expected.items()}}

    def engines(self):
        return {"checkpoint": self.engine}  # every forward runs on the checkpoint, none on the base model


def choose_block(tokens_per_step: dict[int, float], cost: dict[int, float]) -> tuple[int, dict[int, float]]:
    """(best n, {n: expected speedup}) from tokens/step per block and the cost t(w)/t(1) of a w-token forward."""
    expected = {n: tps / cost[n + 1] for n, tps in sorted(tokens_per_step.items())}
    return max(expected, key=expected.get), expected
