"""KV-cache helpers: one forward with a cache, and rollback of rejected positions.

transformers >= 5 changed `DynamicCache.crop` to take a negative count of tokens to remove (it used to
take the length to keep); `rollback` hides that. Caches that cannot drop recent tokens get a clear error.
"""
from __future__ import annotations

import functools
import inspect

import torch
from transformers import DynamicCache


class CacheRollbackError(RuntimeError):
    pass


def new_cache(model: torch.nn.Module, record_past: bool = True) -> DynamicCache:
    """An empty cache for `model`. Sliding-window and recurrent layers keep only what the next forward needs
    unless told to record the past; a decoder that rolls back (`rollback`) needs that record, one that never
    does (AR) passes record_past=False, so that its cache stays as small as transformers' own."""
    cache = DynamicCache(config=model.config)
    if record_past:
        cache.activate_past_recording()
    return cache


def rollback(cache: DynamicCache, n: int) -> None:
    """Drop the last `n` positions from every layer of the cache. With n = 0 (every draft accepted) it still
    trims recording sliding-window layers back to their window, so that their past does not pile up."""
    try:
        if n > 0:
            cache.crop(-n)
        elif n == 0:
            for layer in cache.layers:  # crop(0) on a layer that holds nothing yet would fail
                if getattr(layer, "record_past", False) and getattr(layer, "is_initialized", False):
                    layer.crop(0)
    except (RuntimeError, ValueError, NotImplementedError) as e:
        raise CacheRollbackError(
            f"this model's cache cannot roll back rejected tokens ({e}); use --method ar for it"
        ) from None


@functools.cache
def _cache_kwarg(forward_fn) -> str:
    """The name a model's forward takes its cache under: `cache` (transformers >= 5.24, where
    `past_key_values` is deprecated) or `past_key_values` (earlier releases)."""
    return "cache" if "cache" in inspect.signature(forward_fn).parameters else "past_key_values"


def cache_kwargs(model: torch.nn.Module, cache) -> dict:
    """{cache keyword: cache, "use_cache": True} for `model(...)`, in the form this transformers supports."""
    return {_cache_kwarg(type(model).forward): cache, "use_cache": True}


def forward(model: torch.nn.Module, input_ids: torch.Tensor, cache: DynamicCache, keep: int) -> torch.Tensor:
    """Run the model on input_ids (1, t) after the cached positions; return the last `keep` logits (1, keep, V)."""
    return model(input_ids=input_ids, **cache_kwargs(model, cache), logits_to_keep=keep).logits


def tree_forward(model: torch.nn.Module, input_ids: torch.Tensor, cache: DynamicCache, allowed: torch.Tensor,
                 positions: torch.Tensor, keep: int) -> torch.Tensor:
    """One forward over tokens that are not a single causal chain (lookahead's branches, draft trees).

    input_ids (1, q); allowed (q, q) bool: which new tokens each new token sees (every token sees all cached
    ones, subject to sliding windows); positions (q,) their absolute positions. Returns the last `keep`
    logits (1, keep, V).
    """
    mask = tree_attention_mask(model, cache, allowed, positions)
    return model(input_ids=input_ids, **cache_kwargs(model, cache), attention_mask=mask,
                 position_ids=positions.unsqueeze(0), logits_to_keep=keep).logits


def model_mask(model: torch.nn.Module, ok: torch.Tensor) -> torch.Tensor:
    """A (q, k) bool matrix (True: query i may attend to key j) as the (1, 1, q, k) mask transformers uses
    as-is: bool for sdpa, additive (0 / dtype min) for eager attention; a (B, q, k) one (a batch, one matrix
    per row) gives (B, 1, q, k). The one 4D-mask builder of the lookahead tree, batched decoding
    (methods/batch.py), CLLM trajectory collection and CLLM training."""
    impl = getattr(model.config.get_text_config(), "_attn_implementation", None) or "eager"
    if impl not in ("sdpa", "eager"):
        raise CacheRollbackError(f"a custom attention mask needs attn_implementation sdpa or eager, not {impl}")
    ok = ok[None, None] if ok.dim() == 2 else ok[:, None]
    if impl == "sdpa":
        return ok
    dtype = next(model.parameters()).dtype
    return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(~ok, torch.finfo(dtype).min)


def tree_attention_mask(model, cache: DynamicCache, allowed: torch.Tensor, positions: torch.Tensor):
    """The 4D mask (or {layer type: mask} for models that mix full and sliding layers) that transformers
    uses as-is. Its key axis covers what each cache layer exposes (get_mask_sizes) plus the new tokens."""
    config = model.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    cached = cache.get_seq_length()
    q = allowed.shape[0]

    def build(layer_idx: int, sliding: bool):
        kv_length, _ = cache.get_mask_sizes(q, layer_idx) if cached else (q, 0)
        n_cached = kv_length - q  # the cached keys this layer shows to the new tokens (the most recent ones)
        k_pos = torch.cat([torch.arange(cached - n_cached, cached, device=positions.device), positions])
        ok = torch.cat([torch.ones(q, n_cached, dtype=torch.bool, device=allowed.device), allowed], dim=1)
        if sliding and window:
            ok &= (positions[:, None] - k_pos[None, :]) < window
        return model_mask(model, ok)

    if layer_types:
        return {kind: build(layer_types.index(kind), kind == "sliding_attention") for kind in set(layer_types)}
    return build(0, bool(window))
