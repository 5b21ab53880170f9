"""Vanilla Jacobi decoding over an n-token block, KV-cached (Santilli et al. 2023; the CLLM paper's baseline).

Each forward takes the last committed token plus the current n-token guess, commits the longest guess
prefix that the model's own greedy predictions verify (plus one bonus token), rolls the cache back to
the committed length and keeps the unverified predictions as the next guess. Greedy output equals AR's.
`decode_batch` runs B requests' blocks in one forward, each row accepting its own prefix (docs/batching.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import torch

from methods.acceptance import greedy_accept
from methods.base import BatchStep, Decoder, Step
from methods.batch import budgets, chain_layout, prefill

INITS = ("prompt", "repeat")


def guess_filler(init: str, prompt: list[int], seed: int):
    """fill(k, last) -> k fresh guess tokens: random prompt tokens (seeded, as CLLM) or `last` repeated."""
    if init == "repeat":
        return lambda k, last: [last] * k
    gen = torch.Generator().manual_seed(seed)
    return lambda k, last: [prompt[i] for i in torch.randint(len(prompt), (k,), generator=gen).tolist()]


@dataclass(frozen=True)
class JacobiOptions:
    block_size: int = 16  # n: guess tokens verified per forward (the forward is n+1 tokens wide)
    init: str = "prompt"  # fresh guess tokens: random prompt tokens (as CLLM) or the last committed token
    seed: int = 0  # seeds the "prompt" init so that runs repeat exactly

    def __post_init__(self):
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")


class Jacobi(Decoder):
    description = "vanilla Jacobi iteration over an n-token block (lossless under greedy)"
    Options = JacobiOptions

    @classmethod
    def tuning_space(cls):
        return tuple({"block_size": str(n)} for n in (1, 3, 7, 15))  # forwards of 2 to 16 tokens

    @classmethod
    def forward_widths(cls, options):
        n = options.block_size  # an int; CLLM's may still be "checkpoint" or "auto" (known once the checkpoint loads)
        return (int(n) + 1,) if str(n).isdigit() else ()  # a short last block is padded to it

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, max_new_tokens: int) -> Iterator[Step]:
        n = self.options.block_size
        filler = guess_filler(self.options.init, input_ids[0].tolist(), self.options.seed)
        fill = lambda k, last: torch.tensor(filler(k, int(last)), dtype=torch.long, device=input_ids.device)  # noqa: E731
        cache = self.engine.new_cache()
        # 1. Prefill: the prompt's forward commits the first token, exactly as in AR.
        last = self.engine.forward(input_ids, cache, keep=1)[0, -1].argmax()  # ()
        yield Step(tokens=(int(last),))
        produced = 1
        guess = fill(n, last)  # (n,)
        while produced < max_new_tokens:
            # 2. Guess no further than the token budget: positions past it could never be committed.
            g = min(n, max_new_tokens - produced - 1)
            x = torch.cat([last.view(1), guess[:g]]).unsqueeze(0)  # (1, g+1)
            preds = self.engine.forward(x, cache, keep=g + 1)[0].argmax(-1)  # (g+1,)
            # 3. Verify: guess[i] stands if it equals the model's prediction given everything before it.
            k = greedy_accept(guess[:g], preds)
            # 4. The cache holds [last, guess[:g]]; only [last, guess[:k]] are committed context.
            self.engine.rollback(cache, g - k)
            stationary = int((preds[k + 1: g] == guess[k + 1: g]).sum())  # unverified yet unchanged
            yield Step(tokens=tuple(preds[: k + 1].tolist()), drafted=g, accepted=k, stationary=stationary)
            produced += k + 1
            last = preds[k]
            # 5. Jacobi update: the unverified predictions become the next guess, topped up to n.
            tail = preds[k + 1 :]
            guess = torch.cat([tail, fill(n - tail.shape[0], last)])

    @torch.inference_mode()
    def decode_batch(self, prompts, max_new_tokens) -> Iterator[BatchStep]:
        n, B = self.options.block_size, len(prompts)
        budget = budgets(max_new_tokens, B)
        fills = [guess_filler(self.options.init, p[0].tolist(), self.options.seed) for p in prompts]
        # 1. Prefill: every prompt in one forward commits each row's first token, exactly as in AR.
        bc, logits = prefill(self.engine, prompts)
        last = logits.argmax(-1).tolist()  # (B,)
        yield BatchStep(tuple(Step(tokens=(t,)) for t in last))
        produced = [1] * B
        guess = [fills[b](n, last[b]) for b in range(B)]
        while any(p < m for p, m in zip(produced, budget)):
            # 2. Each row guesses no further than its budget; a row that has its budget feeds its last token only.
            g = [min(n, budget[b] - produced[b] - 1) if produced[b] < budget[b] else 0 for b in range(B)]
            blocks = [[last[b]] + guess[b][: g[b]] for b in range(B)]
            ids, positions, allowed, _ = chain_layout(blocks, bc.lengths())  # (B, w), right-padded
            preds = self.engine.batch_forward(bc, ids, positions, allowed).argmax(-1).tolist()  # (B, w)
            steps, keep = [], []
            for b in range(B):
                if produced[b] >= budget[b]:
                    steps.append(None)
                    keep.append(0)
                    continue
                # 3. Verify row b's guess; its slots [last, guess[:k]] become context.
                p, gb = preds[b][: g[b] + 1], guess[b][: g[b]]
                k = greedy_accept(gb, p)
                stationary = sum(x == y for x, y in zip(p[k + 1: g[b]], gb[k + 1:]))
                steps.append(Step(tokens=tuple(p[: k + 1]), drafted=g[b], accepted=k, stationary=stationary))
                keep.append(k + 1)
                produced[b] += k + 1
                last[b] = p[k]
                # 4. Jacobi update, as in decode.
                tail = p[k + 1:]
                guess[b] = tail + fills[b](n - len(tail), last[b])
            self.engine.batch_commit(bc, keep)
            yield BatchStep(tuple(steps))
