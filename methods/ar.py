"""Autoregressive decoding (greedy by default) with a KV cache: the baseline every speedup is measured against.

Each step is one forward of one token (the first step is the prompt's prefill) and commits one token.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import torch

from methods.acceptance import sample
from methods.base import Decoder, Step


@dataclass(frozen=True)
class AROptions:
    temperature: float = 0.0  # 0 = greedy (the baseline); > 0 samples from softmax(logits / temperature)

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


class AR(Decoder):
    description = "autoregressive decoding with a KV cache (the baseline)"
    Options = AROptions

    def widths(self):
        return (1,)

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, max_new_tokens: int) -> Iterator[Step]:
        cache = self.engine.new_cache(record_past=False)  # AR never rolls back
        x = input_ids  # (1, T) for the prefill, then (1, 1)
        for _ in range(max_new_tokens):
            logits = self.engine.forward(x, cache, keep=1)  # (1, 1, V)
            tok = sample(logits[0, -1], self.options.temperature)
            yield Step(tokens=(tok,))
            x = torch.tensor([[tok]], device=input_ids.device)
