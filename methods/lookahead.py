"""Lookahead decoding (Fu et al. 2024, arXiv 2402.02057), greedy and lossless.

Each step is ONE forward over: the pending committed tokens, the lookahead branch (a window of W columns
× N−1 levels of the Jacobi trajectory) and the verification branch (up to G n-grams from the pool whose
key is the last committed token), with a 4D mask so that the branches do not see each other. N-grams
read off the trajectory's diagonals feed the pool; level 0 (a causal chain from the last token) is
verified too, so with N=2 and G=0 this is exactly Jacobi decoding with a block of W−1.
`decode_batch` runs one tree per request in one forward (rows padded to the widest tree; docs/batching.md).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Iterator

import functools

import torch

from methods.acceptance import greedy_accept
from methods.base import BatchStep, Decoder, Step
from methods.batch import budgets, prefill
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

    @classmethod
    def tuning_space(cls):
        # the window with as many guesses, and the n-gram size: forwards of ~3 to ~17 tokens
        return tuple({"window": str(w), "ngram": str(n), "guess_set": str(w)} for w in (2, 4, 6) for n in (2, 3))

    @classmethod
    def forward_widths(cls, options):
        """The tree forward's width: W·(N−1) with nothing pending and no candidates, up to N pending tokens
        plus G candidates of N−1 tokens."""
        W, N, G = options.window, options.ngram, options.guess_set
        return tuple(sorted({W * (N - 1), N + (W - 1) + (N - 2) * W + G * (N - 1)}))

    def warm_up(self, progress=None) -> float:
        return self.engine.warm_up(self.widths(), tree=True, progress=progress)

    def _tree(self, levels: list[list[int]], pending: list[int], pool: NgramPool, device):
        """One forward's input: (tokens [pending | lookahead branch | verification branch], allowed (q, q),
        offsets (q,), the candidate n-grams)."""
        last = levels[0][0] = pending[-1]
        cands = pool.get(last)[: self.options.guess_set]
        allowed, offsets = self._layout(len(pending), tuple(map(len, cands)), device)
        tokens = pending + levels[0][1:] + [t for lv in levels[1:] for t in lv] + [t for c in cands for t in c]
        return tokens, allowed, offsets, cands

    def _advance(self, out: list[int], levels, pending, cands, room: int, pool: NgramPool, fill):
        """Steps 3-6 of a forward for one request: out[k] predicts the token after input P-1+k; room: tokens left
        in the budget. Returns (step, kept: the new slots that stay cached, the next pending tokens and levels)."""
        W, L = self.options.window, self.options.ngram - 1
        P = len(pending)
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
        committed = best_preds[: min(best_k + 1, room)]
        # 4. Collect n-grams along the trajectory's diagonals: levels 0..L-1 at column f, then the new output.
        new_level = out[:W] if L == 1 else out[W + (L - 2) * W : W + (L - 1) * W]
        if self.options.guess_set:
            for f in range(W):
                pool.add(levels[0][f], tuple(levels[j][f] for j in range(1, L)) + (new_level[f],))
        # 5. Keep the KV of the pending tokens (and of an accepted level-0 chain); drop the rest.
        kept = P + (len(committed) - 1 if best_is_chain else 0)
        pending = committed[-1:] if best_is_chain else committed
        step = Step(tokens=tuple(committed), drafted=W - 1 + sum(map(len, cands)), accepted=len(committed) - 1)
        # 6. Advance the window one Jacobi iteration, then re-align it to the new last token.
        levels = levels[1:] + [list(new_level)]
        shift = len(committed) - 1
        if shift:
            levels = [(lv[shift:] + fill(min(shift, W), committed[-1]))[:W] for lv in levels]
        return step, kept, pending, levels

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
            # 2. One forward over pending | lookahead branch | verification branch.
            tokens, allowed, offsets, cands = self._tree(levels, pending, pool, device)
            P, start = len(pending), self.engine.length(cache)
            x = torch.tensor([tokens], device=device)  # (1, q)
            logits = self.engine.tree_forward(x, cache, allowed, offsets + start + P - 1, keep=len(tokens) - P + 1)
            out = logits[0].argmax(-1).tolist()  # out[k] predicts the token after input P-1+k
            # 3.-6. Verify, collect n-grams, roll back what is not kept, move the window.
            step, kept, pending, levels = self._advance(out, levels, pending, cands, max_new_tokens - produced, pool, fill)
            self.engine.rollback(cache, len(tokens) - kept)
            produced += len(step.tokens)
            yield step

    @torch.inference_mode()
    def decode_batch(self, prompts, max_new_tokens) -> Iterator[BatchStep]:
        o, B = self.options, len(prompts)
        W, L, device = o.window, o.ngram - 1, prompts[0].device
        budget = budgets(max_new_tokens, B)
        fills = [guess_filler(o.init, p[0].tolist(), o.seed) for p in prompts]
        pools = [self._pool if o.pool else NgramPool(o.guess_set) for _ in prompts]
        # 1. Prefill: every prompt in one forward commits each row's first token.
        bc, logits = prefill(self.engine, prompts)
        first = logits.argmax(-1).tolist()
        yield BatchStep(tuple(Step(tokens=(t,)) for t in first))
        pending, produced = [[t] for t in first], [1] * B
        levels = [[[t] + fills[b](W - 1, t)] + [fills[b](W, t) for _ in range(L - 1)] for b, t in enumerate(first)]
        while any(p < m for p, m in zip(produced, budget)):
            # 2. Every active row's tree, padded to the widest (a padding token sees itself and the context);
            #    a row that has its budget feeds its last token and keeps nothing.
            trees = [self._tree(levels[b], pending[b], pools[b], device) if produced[b] < budget[b] else None
                     for b in range(B)]
            q = max(len(t[0]) for t in trees if t)
            starts = bc.lengths().tolist()
            ids = torch.zeros(B, q, dtype=torch.long)
            positions = torch.zeros(B, q, dtype=torch.long)
            allowed = torch.eye(q, dtype=torch.bool).repeat(B, 1, 1)  # (B, q, q)
            for b, t in enumerate(trees):
                tokens, a, offsets, _ = t if t else ([pending[b][-1]], None, torch.zeros(1, dtype=torch.long), None)
                n, P = len(tokens), len(pending[b])
                ids[b, :n], ids[b, n:] = torch.tensor(tokens), tokens[-1]
                positions[b, :n] = offsets.cpu() + starts[b] + P - 1
                positions[b, n:] = positions[b, n - 1] + 1 + torch.arange(q - n)
                if a is not None:
                    allowed[b, :n, :n] = a.cpu()
            logits = self.engine.batch_forward(bc, ids.to(device), positions.to(device), allowed.to(device))
            out_all = logits.argmax(-1).tolist()  # (B, q)
            # 3.-6. Each row verifies, collects n-grams and moves its window as in decode.
            steps, kept = [], []
            for b, t in enumerate(trees):
                if t is None:
                    steps.append(None)
                    kept.append(0)
                    continue
                tokens, _, _, cands = t
                out = out_all[b][len(pending[b]) - 1: len(tokens)]
                step, k, pending[b], levels[b] = self._advance(out, levels[b], pending[b], cands,
                                                               budget[b] - produced[b], pools[b], fills[b])
                produced[b] += len(step.tokens)
                steps.append(step)
                kept.append(k)
            self.engine.batch_commit(bc, kept)
            yield BatchStep(tuple(steps))
