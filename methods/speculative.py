"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a drafter proposes k tokens, the
target verifies them in one forward and commits the accepted prefix plus one token of its own.

    harness run --method speculative -O draft=ngram -O k=4
    harness run --method speculative -O draft=layerskip:12 -O adaptive=true
Greedy verification is lossless; with temperature > 0 rejection sampling keeps the target's distribution.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import torch

from methods.acceptance import greedy_accept, rejection_accept, sample
from methods.base import Decoder, Step
from methods.drafters import make_drafter


MAX_K = 15  # adaptive drafting grows k up to this (forwards of 16 tokens at most), or up to the k given


@dataclass(frozen=True)
class SpeculativeOptions:
    draft: str = "ngram"  # ngram | layerskip:L | a model spec (alias, hub id, local dir, .gguf) | a plugin drafter
    k: int = 4  # draft tokens per step (the starting value when adaptive)
    adaptive: bool = False  # k += 2 after a fully accepted draft, k -= 1 otherwise (transformers' heuristic)
    ngram: int = 2  # longest n-gram the prompt-lookup drafter matches
    temperature: float = 0.0  # 0 = greedy; > 0 samples, with rejection sampling against the draft

    def __post_init__(self):
        if self.k < 1 or self.ngram < 1 or self.temperature < 0:
            raise ValueError("need k >= 1, ngram >= 1 and temperature >= 0")


class Speculative(Decoder):
    description = "speculative decoding with a drafter (ngram, layerskip:L or a model); lossless"
    Options = SpeculativeOptions

    def __init__(self, model, options=None, loader=None, engine=None):
        super().__init__(model, options, loader, engine)
        try:
            self.drafter = make_drafter(self.options.draft, model, default_args={"ngram": str(self.options.ngram)},
                                        loader=loader, engine=self.engine)
        except ValueError as e:
            raise ValueError(f"draft={self.options.draft}: {e}") from None

    def widths(self):
        # 1: a drafter that found nothing (n-gram lookup) verifies no draft; adaptive k pads to powers of two
        k = self.options.k
        return (1, k + 1) if not self.options.adaptive else tuple(sorted({1, 2, 4, 8, 16, k + 1}))

    def warm_up(self, progress=None) -> float:
        return super().warm_up(progress) + self.drafter.warm_up(progress)

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, max_new_tokens: int) -> Iterator[Step]:
        o, T, device = self.options, self.options.temperature, input_ids.device
        cache = self.engine.new_cache()
        self.drafter.reset()
        # 1. Prefill: the prompt's forward commits the first token, exactly as in AR.
        last = sample(self.engine.forward(input_ids, cache, keep=1)[0, -1], T)
        yield Step(tokens=(last,))
        committed, produced, k = input_ids[0].tolist() + [last], 1, o.k
        while produced < max_new_tokens:
            # 2. Draft up to k tokens (never past the budget).
            draft, q, draft_forwards = self.drafter.propose(committed, min(k, max_new_tokens - produced - 1), T)
            d = len(draft)
            # 3. Verify: one target forward over [last, draft] gives its prediction after every draft prefix.
            logits = self.engine.forward(torch.tensor([[last] + draft], device=device), cache, keep=d + 1)[0]  # (d+1, V)
            if T > 0:
                a, token = rejection_accept(draft, q, logits, T)
                new = draft[:a] + [token]
            else:
                preds = logits.argmax(-1).tolist()
                a = greedy_accept(draft, preds)
                new = preds[: a + 1]
            # 4. The cache holds [last, draft]; keep [last, draft[:a]].
            self.engine.rollback(cache, d - a)
            committed += new
            produced += len(new)
            last = new[-1]
            yield Step(tokens=tuple(new), drafted=d, accepted=a, draft_forwards=draft_forwards)
            if o.adaptive and d:
                k = min(k + 2, max(MAX_K, o.k)) if a == d else max(1, k - 1)
