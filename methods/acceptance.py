"""Acceptance rules shared by every drafting decoder (Jacobi, lookahead, speculative, CLLM).

Written once so that every method verifies the same way.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def greedy_accept(guess: Sequence[int] | torch.Tensor, preds: Sequence[int] | torch.Tensor) -> int:
    """Length of the prefix of `guess` (n,) that matches the model's greedy `preds` (n+1,).

    preds[i] is the model's argmax after the committed text plus guess[:i]; guess[i] is accepted while
    every guess before it was. The caller commits preds[:k+1] (the accepted guesses plus one bonus token).
    """
    if isinstance(guess, torch.Tensor):
        guess = guess.tolist()
    if isinstance(preds, torch.Tensor):
        preds = preds.tolist()
    k = 0
    for g, p in zip(guess, preds):
        if g != p:
            break
        k += 1
    return k


def sample(logits: torch.Tensor, temperature: float) -> int:
    """Greedy argmax at temperature 0, else a draw from softmax(logits / temperature). logits: (V,)."""
    if temperature <= 0:
        return int(logits.argmax())
    return int(torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1))


def rejection_accept(draft: Sequence[int], q: torch.Tensor | None, logits: torch.Tensor,
                     temperature: float) -> tuple[int, int]:
    """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): the committed tokens follow the
    target's distribution exactly, whatever the drafter proposed.

    draft (d,) proposed tokens; q (d, V) the drafter's probabilities for them, or None for a deterministic
    drafter (a point mass on each draft token); logits (d+1, V) the target's logits after each draft prefix.
    Returns (a, token): the first a draft tokens are accepted and `token` is committed after them.
    """
    p = torch.softmax(logits.float() / temperature, -1)  # (d+1, V)
    for i, x in enumerate(draft):
        qx = float(q[i, x]) if q is not None else 1.0
        if float(torch.rand(())) * qx < float(p[i, x]):  # accept with probability min(1, p/q)
            continue
        residual = p[i].clone()
        if q is not None:
            residual = (residual - q[i].float()).clamp_(min=0)
        else:
            residual[x] = 0
        total = residual.sum()
        residual = residual / total if total > 0 else p[i]
        return i, int(torch.multinomial(residual, 1))
    return len(draft), int(torch.multinomial(p[len(draft)], 1))
