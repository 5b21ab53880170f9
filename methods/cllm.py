"""CLLM decoding (Kou et al. 2024): Jacobi decoding on a consistency-trained checkpoint.

    harness run --method cllm --task gsm8k                        # the shipped checkpoint for smollm2-135m
    harness run --method cllm -O checkpoint=ckpt/ --model BASE    # ckpt/ from `harness cllm train`, a hub id...
The checkpoint comes through the loader the harness passes in; the runner's model (--model) is the base, so the paired AR
baseline is AR on the base model: `speedup` is against it and `lossless_rate` is agreement with it.
Each step records the paper's counts: fast-forwarded tokens (accepted) and stationary tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

from methods.jacobi import Jacobi, JacobiOptions

DEFAULT_CHECKPOINT = "smollm2-135m-cllm"


@dataclass(frozen=True)
class CLLMOptions(JacobiOptions):
    checkpoint: str = DEFAULT_CHECKPOINT  # alias, LoRA checkpoint dir, model dir, hub id (cllm/consistency-llm-7b-math)


class CLLM(Jacobi):
    description = "Jacobi decoding on a CLLM checkpoint (-O checkpoint=...), paired with AR on the base model"
    lossless = False  # the checkpoint is a different model: its output may differ from the base's
    Options = CLLMOptions

    def __init__(self, model, options=None, loader=None, engine=None):
        super().__init__(model, options, loader, engine)
        checkpoint = self.load_second_model(self.options.checkpoint)
        if checkpoint.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"checkpoint {self.options.checkpoint} has a vocabulary of {checkpoint.config.vocab_size} "
                             f"tokens, the base model {model.config.vocab_size}; pass the checkpoint's base as --model")
        self.model = checkpoint  # Jacobi decoding runs on the checkpoint, on an engine of the same kind
        self.engine = self.engine.like(checkpoint)
