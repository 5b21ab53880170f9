"""Vanilla Jacobi decoding over an n-token block, KV-cached (Santilli et al. 2023; the CLLM paper's baseline).

Each forward takes the last committed token plus the current n-token guess, commits the longest guess
prefix that the model's own greedy predictions verify (plus one bonus token), rolls the cache back to
the committed length and keeps the unverified predictions as the next guess. Greedy output equals AR's.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import torch

from methods.acceptance import greedy_accept
from methods.base import Decoder, Step

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

    def widths(self):
        return (self.options.block_size + 1,)  # a short last block is padded to it

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
