"""Acceptance rules shared by every drafting decoder (Jacobi, lookahead, speculative, CLLM).

Written once so that every method verifies the same way.
"""
from __future__ import annotations

import torch


def greedy_accept(guess: torch.Tensor, preds: torch.Tensor) -> int:
    """Length of the prefix of `guess` (n,) that matches the model's greedy `preds` (n+1,).

    preds[i] is the model's argmax after the committed text plus guess[:i]; guess[i] is accepted while
    every guess before it was. The caller commits preds[:k+1] (the accepted guesses plus one bonus token).
    """
    n = guess.shape[0]
    if n == 0:
        return 0
    match = (guess == preds[:n]).to(torch.int32)  # (n,)
    return int(match.cumprod(0).sum())
