"""CLLM decoding (Kou et al. 2024): Jacobi decoding on a consistency-trained checkpoint.

    harness run --method cllm --task gsm8k                        # the shipped checkpoint for smollm2-135m
    harness run --method cllm -O checkpoint=ckpt/ --model BASE    # ckpt/ from `harness cllm train`, a hub id...
    harness run --method cllm -O block_size=auto                  # the block the hardware's profile favours
The checkpoint comes through the loader the harness passes in; the runner's model (--model) is the base, so the paired AR
baseline is AR on the base model: `speedup` is against it and `lossless_rate` is agreement with it.
The block size defaults to the one the checkpoint was trained for (its cllm.json, which the loader puts on the model's
config as `cllm_block_size`; 16 where it is unknown, as the paper); `auto` is resolved by the harness before the decoder
is built (harness.orchestration.autoblock), from measured forward costs and the checkpoint's tokens/step per block.
Each step records the paper's counts: fast-forwarded tokens (accepted) and stationary tokens.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
        n = int(n) if n != "checkpoint" else getattr(checkpoint.config, "cllm_block_size", None) or UNKNOWN_BLOCK
        self.options = dataclasses.replace(self.options, block_size=n)  # Jacobi's decode reads an int
        self.model = checkpoint  # Jacobi decoding runs on the checkpoint, on an engine of the same kind
        self.engine = self.engine.like(checkpoint)

    def engines(self):
        return {"checkpoint": self.engine}  # every forward runs on the checkpoint, none on the base model
