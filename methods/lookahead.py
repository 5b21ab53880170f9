"""Lookahead decoding (Fu et al. 2024, arXiv 2402.02057), greedy and lossless.

Each step is ONE forward over: the pending committed tokens, the lookahead branch (a window of W columns
× N−1 levels of the Jacobi trajectory) and the verification branch (up to G n-grams from the pool whose
key is the last committed token), with a 4D mask so that the branches do not see each other. N-grams
read off the trajectory's diagonals feed the pool; level 0 (a causal chain from the last token) is
verified too, so with N=2 and G=0 this is exactly Jacobi decoding with a block of W−1.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Iterator

import functools

import torch

from methods.acceptance import greedy_accept
from methods.base import Decoder, Step
from methods.jacobi import INITS, guess_filler


@dataclass(frozen=True)
class LookaheadOptions:
    window: int = 6  # W: columns of the lookahead window (defaults: the fastest sweep point on a 2-core CPU, see README)
    ngram: int = 3  # N: n-gram size (N−1 trajectory levels)
    guess_set: int = 6  # G: most candidate n-grams verified per step (and kept per key in the pool)
    pool: bool = False  # keep the n-gram pool across requests (default: reset per request)
    init: str = "prompt"  # fresh window tokens: random prompt tokens, or the last committed token
    seed: int = 0

    def __post_init__(self):
        if self.window < 1 or self.ngram < 2 or self.guess_set < 0:
            raise ValueError("need window >= 1, ngram >= 2 and guess_set >= 0")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")


class NgramPool:
    """key token -> up to G distinct (N−1)-token continuations, oldest dropped first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.table: dict[int, OrderedDict] = {}

    def add(self, key: int, ngram: tuple[int, ...]) -> None:
        bucket = self.table.setdefault(key, OrderedDict())
        bucket.pop(ngram, None)
        bucket[ngram] = None
        while len(bucket) > self.capacity:
            bucket.popitem(last=False)

    def get(self, key: int) -> list[tuple[int, ...]]:
        return list(self.table.get(key, ()))[::-1]  # newest first


class Lookahead(Decoder):
    description = "lookahead decoding: Jacobi trajectory n-grams verified in the same forward (lossless)"
    Options = LookaheadOptions

    def __init__(self, model, options=None, loader=None, engine=None):
        super().__init__(model, options, loader, engine)
        self._pool = NgramPool(self.options.guess_set)  # used across requests only if options.pool

    @functools.lru_cache(maxsize=256)  # noqa: B019  (one decoder per run: its cached layouts live as long as it)
    def _layout(self, P: int, cand_lengths: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor]:
        """(allowed (q, q), offsets (q,)) for [pending(P) | level0 cols 1..W-1 | levels 1..N-2 | candidates];
        offsets are positions relative to the last committed token (pending tokens get -P+1..0)."""
        W, L = self.options.window, self.options.ngram - 1
        q = P + (W - 1) + (L - 1) * W + sum(cand_lengths)
        allowed = torch.zeros(q, q, dtype=torch.bool)
        offsets = torch.zeros(q, dtype=torch.long)
        allowed[:, :P] = True
        allowed[:P, :P] = torch.tril(torch.ones(P, P, dtype=torch.bool))
        offsets[:P] = torch.arange(-P + 1, 1)
        level0 = lambda i: P - 1 + i  # noqa: E731  column 0 is the last committed token
        level = lambda j, i: level0(i) if j == 0 else P - 1 + W + (j - 1) * W + i  # noqa: E731
        for j in range(L):
            for i in range(1 if j == 0 else 0, W):
                a = level(j, i)
                offsets[a] = j + i
                allowed[a, P : level0(i) + 1] = True  # the level-0 chain up to this column
                for jj in range(1, j + 1):
                    allowed[a, level(jj, i)] = True  # this column's earlier levels
        a = level(L - 1, W - 1) + 1 if L > 1 else P - 1 + W
        for n in cand_lengths:
            for m in range(n):
                offsets[a + m] = 1 + m
                allowed[a + m, a : a + m + 1] = True
            a += n
        return allowed.to(device), offsets.to(device)

    def widths(self):
        """The tree forward's width: W·(N−1) with nothing pending and no candidates, up to N pending tokens
        plus G candidates of N−1 tokens."""
        W, N, G = self.options.window, self.options.ngram, self.options.guess_set
        return tuple(sorted({W * (N - 1), N + (W - 1) + (N - 2) * W + G * (N - 1)}))

    def warm_up(self, progress=None) -> float:
        return self.engine.warm_up(self.widths(), tree=True, progress=progress)

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, max_new_tokens: int) -> Iterator[Step]:
        o = self.options
        W, L, device = o.window, o.ngram - 1, input_ids.device
        fill = guess_filler(o.init, input_ids[0].tolist(), o.seed)
        pool = self._pool if o.pool else NgramPool(o.guess_set)
        cache = self.engine.new_cache()
        # 1. Prefill: the prompt's forward commits the first token, exactly as in AR.
        last = int(self.engine.forward(input_ids, cache, keep=1)[0, -1].argmax())
        yield Step(tokens=(last,))
        pending, produced = [last], 1  # committed tokens whose KV is not cached yet (the last one included)
        levels = [[last] + fill(W - 1, last)] + [fill(W, last) for _ in range(L - 1)]  # L levels of W tokens
        while produced < max_new_tokens:
            last = levels[0][0] = pending[-1]
            cands = pool.get(last)[: o.guess_set]
            # 2. One forward over pending | lookahead branch | verification branch.
            P = len(pending)
            allowed, offsets = self._layout(P, tuple(map(len, cands)), device)
            tokens = pending + levels[0][1:] + [t for lv in levels[1:] for t in lv] + [t for c in cands for t in c]
            start = self.engine.length(cache)
            x = torch.tensor([tokens], device=device)  # (1, q)
            logits = self.engine.tree_forward(x, cache, allowed, offsets + start + P - 1, keep=len(tokens) - P + 1)
            out = logits[0].argmax(-1).tolist()  # out[k] predicts the token after input P-1+k
            # 3. Verify the level-0 chain and every candidate; keep the longest accepted prefix.
            best_preds = out[:W]
            best_k, best_is_chain = greedy_accept(levels[0][1:], best_preds), True
            a = W + (L - 1) * W
            for cand in cands:
                preds = [out[0]] + out[a : a + len(cand)]
                k = greedy_accept(cand, preds)
                if k > best_k:
                    best_k, best_preds, best_is_chain = k, preds, False
                a += len(cand)
            committed = best_preds[: min(best_k + 1, max_new_tokens - produced)]
            # 4. Collect n-grams along the trajectory's diagonals: levels 0..L-1 at column f, then the new output.
            new_level = out[:W] if L == 1 else out[W + (L - 2) * W : W + (L - 1) * W]
            if o.guess_set:
                for f in range(W):
                    pool.add(levels[0][f], tuple(levels[j][f] for j in range(1, L)) + (new_level[f],))
            # 5. Keep the KV of the pending tokens (and of an accepted level-0 chain); drop the rest.
            kept = P + (len(committed) - 1 if best_is_chain else 0)
            self.engine.rollback(cache, len(tokens) - kept)
            pending = committed[-1:] if best_is_chain else committed
            produced += len(committed)
            yield Step(tokens=tuple(committed), drafted=W - 1 + sum(map(len, cands)), accepted=len(committed) - 1)
            # 6. Advance the window one Jacobi iteration, then re-align it to the new last token.
            levels = levels[1:] + [list(new_level)]
            shift = len(committed) - 1
            if shift:
                levels = [(lv[shift:] + fill(min(shift, W), committed[-1]))[:W] for lv in levels]
