"""Autoregressive greedy decoding with a KV cache: the baseline every speedup is measured against.

Each step is one forward of one token (the first step is the prompt's prefill) and commits one token.
"""
from __future__ import annotations

from typing import Iterator

import torch

from methods.base import Decoder, Step
from methods.kv import forward, new_cache


class AR(Decoder):
    description = "autoregressive greedy decoding with a KV cache (the baseline)"

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, max_new_tokens: int) -> Iterator[Step]:
        cache = new_cache(self.model)
        x = input_ids  # (1, T) for the prefill, then (1, 1)
        for _ in range(max_new_tokens):
            logits = forward(self.model, x, cache, keep=1)  # (1, 1, V)
            tok = logits[0, -1].argmax()
            yield Step(tokens=(int(tok),))
            x = tok.view(1, 1)
