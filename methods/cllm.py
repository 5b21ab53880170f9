"""CLLM decoding (Kou et al. 2024): Jacobi decoding on a consistency-trained checkpoint.

    harness run --method cllm --task gsm8k                        # the shipped checkpoint for smollm2-135m
    harness run --method cllm -O checkpoint=ckpt/ --model BASE    # ckpt/ from `harness cllm train`, a hub id...
The decoder loads the checkpoint itself; the runner's model (--model) is the base, so the paired AR
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

    def __init__(self, model, options=None):
        from harness.models import load_model

        options = options or CLLMOptions()
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        loaded = load_model(options.checkpoint, device=str(model.device), dtype=dtype)
        if loaded.model.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"checkpoint {options.checkpoint} has a vocabulary of {loaded.model.config.vocab_size} "
                             f"tokens, the base model {model.config.vocab_size}; pass the checkpoint's base as --model")
        self.checkpoint = loaded
        super().__init__(loaded.model, options)

    @property
    def loaded_models(self):
        return {"checkpoint": self.checkpoint}
