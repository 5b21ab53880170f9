"""Autoregressive decoding (greedy by default) with a KV cache: the baseline every speedup is measured against.

Each step is one forward of one token (the first step is the prompt's prefill) and commits one token.
`decode_batch` is batched AR, the baseline of a batched run: one token per row per forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import torch

from methods.acceptance import sample
from methods.base import BatchStep, Decoder, Step
from methods.batch import budgets, chain_layout, prefill


@dataclass(frozen=True)
class AROptions:
    temperature: float = 0.0  # 0 = greedy (the baseline); > 0 samples from softmax(logits / temperature)

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


class AR(Decoder):
    description = "autoregressive decoding with a KV cache (the baseline)"
    Options = AROptions

    @classmethod
    def forward_widths(cls, options):
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

    @torch.inference_mode()
    def decode_batch(self, prompts, max_new_tokens) -> Iterator[BatchStep]:
        T, B = self.options.temperature, len(prompts)
        budget = budgets(max_new_tokens, B)
        # 1. Prefill: every prompt in one forward commits each row's first token.
        bc, logits = prefill(self.engine, prompts)  # (B, V)
        tok = [sample(logits[b], T) for b in range(B)]
        yield BatchStep(tuple(Step(tokens=(t,)) for t in tok))
        produced = [1] * B
        while any(p < n for p, n in zip(produced, budget)):
            # 2. One token per row; a row that has its budget feeds its last token again and keeps nothing.
            active = [p < n for p, n in zip(produced, budget)]
            ids, positions, allowed, _ = chain_layout([[t] for t in tok], bc.lengths())  # (B, 1)
            logits = self.engine.batch_forward(bc, ids, positions, allowed)[:, -1]  # (B, V)
            self.engine.batch_commit(bc, [int(a) for a in active])
            steps = []
            for b in range(B):
                if active[b]:
                    tok[b] = sample(logits[b], T)
                    produced[b] += 1
                steps.append(Step(tokens=(tok[b],)) if active[b] else None)
            yield BatchStep(tuple(steps))
