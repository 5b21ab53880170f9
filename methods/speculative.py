"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a drafter proposes k tokens, the
target verifies them in one forward and commits the accepted prefix plus one token of its own.

    harness run --method speculative -O draft=ngram -O k=4
    harness run --method speculative -O draft=layerskip:12 -O adaptive=true
Greedy verification is lossless; with temperature > 0 rejection sampling keeps the target's distribution.
`decode_batch` drafts for every row (a model drafter in one batched forward per draft token) and verifies
all rows in one forward, each accepting its own prefix (docs/batching.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import torch

from methods.acceptance import greedy_accept, rejection_accept, sample
from methods.base import BatchStep, Decoder, Step
from methods.batch import budgets, chain_layout, prefill
from methods.drafters import check_draft, make_drafter


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
        check_draft(self.draft)


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

    @classmethod
    def tuning_space(cls):
        # the n-gram drafter's draft length only: a drafter with forwards of its own is outside the one-forward cost model
        return tuple({"draft": "ngram", "k": str(k)} for k in (1, 2, 3, 5, 7))

    @classmethod
    def forward_widths(cls, options):
        # 1: a drafter that found nothing (n-gram lookup) verifies no draft; adaptive k pads to powers of two
        k = options.k
        return (1, k + 1) if not options.adaptive else tuple(sorted({1, 2, 4, 8, 16, k + 1}))

    def reserve(self, positions: int, fit: bool = False) -> bool:
        return bool(super().reserve(positions, fit) | self.drafter.reserve(positions, fit))

    def warm_up(self, progress=None) -> float:
        return super().warm_up(progress) + self.drafter.warm_up(progress)

    def engines(self):
        return {**super().engines(), **self.drafter.engines()}

    def warm_up_batch(self, batch_size, progress=None) -> float:
        return super().warm_up_batch(batch_size, progress) + self.drafter.warm_up_batch(batch_size, progress)

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

    @torch.inference_mode()
    def decode_batch(self, prompts, max_new_tokens) -> Iterator[BatchStep]:
        o, T, B = self.options, self.options.temperature, len(prompts)
        budget = budgets(max_new_tokens, B)
        self.drafter.reset_batch(B)
        # 1. Prefill: every prompt in one forward commits each row's first token.
        bc, logits = prefill(self.engine, prompts)
        last = [sample(logits[b], T) for b in range(B)]
        yield BatchStep(tuple(Step(tokens=(t,)) for t in last))
        committed = [p[0].tolist() + [t] for p, t in zip(prompts, last)]
        produced, k = [1] * B, [o.k] * B
        while any(p < m for p, m in zip(produced, budget)):
            active = [p < m for p, m in zip(produced, budget)]
            # 2. Draft for every active row (never past its budget).
            ks = [min(k[b], budget[b] - produced[b] - 1) if active[b] else 0 for b in range(B)]
            drafts = self.drafter.propose_batch([c if a else None for c, a in zip(committed, active)], ks, T)
            # 3. Verify: one target forward over [last, draft] of every row (right-padded to the longest).
            ids, positions, allowed, _ = chain_layout([[last[b]] + drafts[b][0] for b in range(B)], bc.lengths())
            logits = self.engine.batch_forward(bc, ids, positions, allowed)  # (B, w, V)
            steps, keep = [], []
            for b in range(B):
                if not active[b]:
                    steps.append(None)
                    keep.append(0)
                    continue
                draft, q, draft_forwards = drafts[b]
                d = len(draft)
                if T > 0:
                    a, token = rejection_accept(draft, q, logits[b, : d + 1], T)
                    new = draft[:a] + [token]
                else:
                    preds = logits[b, : d + 1].argmax(-1).tolist()
                    a = greedy_accept(draft, preds)
                    new = preds[: a + 1]
                # 4. Row b's slots [last, draft[:a]] become context.
                keep.append(a + 1)
                committed[b] += new
                produced[b] += len(new)
                last[b] = new[-1]
                steps.append(Step(tokens=tuple(new), drafted=d, accepted=a, draft_forwards=draft_forwards))
                if o.adaptive and d:
                    k[b] = min(k[b] + 2, max(MAX_K, o.k)) if a == d else max(1, k[b] - 1)
            self.engine.batch_commit(bc, keep)
            yield BatchStep(tuple(steps))
