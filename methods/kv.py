"""KV-cache helpers: one forward with a cache, and rollback of rejected positions.

transformers >= 5 changed `DynamicCache.crop` to take a negative count of tokens to remove (it used to
take the length to keep); `rollback` hides that. Caches that cannot drop recent tokens get a clear error.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache


class CacheRollbackError(RuntimeError):
    pass


def new_cache(model: torch.nn.Module) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    # Sliding-window and recurrent layers keep only what the next forward needs unless told to record
    # the past; drafting decoders must be able to undo a forward, so record it.
    cache.activate_past_recording()
    return cache


def rollback(cache: DynamicCache, n: int) -> None:
    """Drop the last `n` positions from every layer of the cache."""
    if n <= 0:
        return
    try:
        cache.crop(-n)
    except (RuntimeError, ValueError, NotImplementedError) as e:
        raise CacheRollbackError(
            f"this model's cache cannot roll back rejected tokens ({e}); use --method ar for it"
        ) from None


def forward(model: torch.nn.Module, input_ids: torch.Tensor, cache: DynamicCache, keep: int) -> torch.Tensor:
    """Run the model on input_ids (1, t) after the cached positions; return the last `keep` logits (1, keep, V)."""
    return model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=keep).logits
