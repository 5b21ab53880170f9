"""Acceptance rules shared by every drafting decoder (Jacobi, lookahead, speculative, CLLM).

Written once so that every method verifies the same way.
"""
from __future__ import annotations

from typing import Sequence

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
