"""Batched decoding state: B requests in one KV cache, each row with its own committed length (docs/batching.md).

    bc, logits = prefill(engine, prompts)                 # prompts: [(1, T_i)]; logits (B, V) after each prompt
    ids, positions, allowed, real = chain_layout(blocks, bc.lengths())   # one token chain per row, padded
    logits = engine.batch_forward(bc, ids, positions, allowed)           # (B, w, V)
    engine.batch_commit(bc, keep)                         # row b keeps its first keep[b] new slots
The cache has one write pointer L shared by every row (slots 0..L-1 written) and a per-row table `pos` (B, L):
the absolute position of the token in each slot, or -1 for a slot that is not context (a prompt's left padding,
a rejected token, a row's padding). Every forward writes w slots per row and gets an explicit mask built from
`pos` and explicit position ids, so rows that accept different numbers of tokens never fall out of step.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from methods import kv

COMPACT_SLACK = 64  # a growing (eager) cache is compacted when it has more dead slots than this (see needs_compaction)


class BatchCache:
    """A KV cache of B rows (`cache`: every layer full-length, sliding windows applied by the mask) and the
    per-slot positions `pos` (B, L). `capacity`: the most slots it holds (a static cache), None: it grows."""

    def __init__(self, cache, batch_size: int, device, capacity: int | None = None):
        self.cache, self.capacity = cache, capacity
        self.pos = torch.empty(batch_size, 0, dtype=torch.long, device=device)  # (B, L)
        self.pending: torch.Tensor | None = None  # (B, w) positions of the last forward's slots, until commit
        self.compactions = 0

    @property
    def batch_size(self) -> int:
        return self.pos.shape[0]

    @property
    def L(self) -> int:
        """Slots written (the shared write pointer)."""
        return self.pos.shape[1]

    def lengths(self) -> torch.Tensor:
        """(B,) committed tokens with KV per row: the position the row's next token takes."""
        return (self.pos >= 0).sum(1)


def chain_layout(rows: Sequence[Sequence[int]], starts: torch.Tensor, left: bool = False):
    """One causal chain of tokens per row (at least one each), padded to the longest: on the right (the padding
    follows the real tokens, which never see it) or on the left (the padding comes first and no real token
    sees it, so the last column holds every row's last token: a prefill keeps only its logits).

    Returns ids (B, w), positions (B, w) (row b's tokens at starts[b], starts[b]+1, ...), allowed (B, w, w)
    (causal, padding keys hidden) and real (B, w) bool."""
    B, w, device = len(rows), max(map(len, rows)), starts.device
    ids = torch.zeros(B, w, dtype=torch.long)
    real = torch.zeros(B, w, dtype=torch.bool)
    off = torch.zeros(B, dtype=torch.long)
    for b, r in enumerate(rows):
        o = w - len(r) if left else 0
        ids[b] = r[0] if left else r[-1]  # any token: padding is never kept
        ids[b, o: o + len(r)] = torch.tensor(list(r), dtype=torch.long)
        real[b, o: o + len(r)] = True
        off[b] = o
    ids, real, off = ids.to(device), real.to(device), off.to(device)
    positions = starts[:, None] + (torch.arange(w, device=device)[None] - off[:, None]).clamp(min=0)
    allowed = torch.tril(torch.ones(w, w, dtype=torch.bool, device=device))[None] & real[:, None, :]
    return ids, positions, allowed, real


def prefix_mask(keep: Sequence[int], w: int, device) -> torch.Tensor:
    """(B, w) bool: the first keep[b] slots of row b."""
    return torch.arange(w, device=device)[None] < torch.tensor(list(keep), device=device)[:, None]


def prefill(engine, prompts: Sequence[torch.Tensor]):
    """Every prompt (1, T_i) in one forward, left-padded to the longest; returns (bc, logits (B, V) after each
    prompt's last token). Padding slots are never context."""
    device = prompts[0].device
    rows = [p[0].tolist() for p in prompts]
    bc = engine.new_batch(len(rows))
    ids, positions, allowed, real = chain_layout(rows, torch.zeros(len(rows), dtype=torch.long, device=device), left=True)
    logits = engine.batch_forward(bc, ids, positions, allowed, keep=1)[:, -1]  # (B, V)
    engine.batch_commit(bc, real)
    return bc, logits


def attention_mask(model, bc: BatchCache, positions: torch.Tensor, allowed: torch.Tensor | None, K: int):
    """The explicit mask of a forward of w tokens per row after bc's L slots, over K key slots (L + w for a growing
    cache, the capacity for a static one): query i of row b sees slot j < L iff pos[b, j] >= 0, new slot L + j iff
    allowed[b, i, j] (causal when None; a token always sees itself) and, in a sliding-window layer, only keys less
    than the window behind it. A {layer type: mask} dict for models that mix sliding and full layers."""
    B, w = positions.shape
    L, device = bc.L, positions.device
    ok = torch.zeros(B, w, K, dtype=torch.bool, device=device)
    ok[:, :, :L] = (bc.pos >= 0)[:, None, :]
    eye = torch.eye(w, dtype=torch.bool, device=device)
    new = torch.tril(torch.ones(w, w, dtype=torch.bool, device=device)) if allowed is None else allowed
    ok[:, :, L: L + w] = new | eye
    config = model.config.get_text_config()
    window, layer_types = getattr(config, "sliding_window", None), getattr(config, "layer_types", None)

    def build(sliding: bool):
        if not sliding:
            return kv.model_mask(model, ok)
        k_pos = torch.full((B, K), -1, dtype=torch.long, device=device)
        k_pos[:, :L] = bc.pos
        k_pos[:, L: L + w] = positions
        return kv.model_mask(model, ok & ((positions[:, :, None] - k_pos[:, None, :]) < window))

    if layer_types:
        return {kind: build(kind == "sliding_attention" and bool(window)) for kind in set(layer_types)}
    return build(bool(window))


def commit(bc: BatchCache, kept: torch.Tensor | Sequence[int]) -> int:
    """After a forward: the new slots `kept` (B, w) bool (or the first kept[b] of each row) become context, the
    others holes (-1). Returns how many tail slots are holes in every row: the caller drops them from the KV."""
    w = bc.pending.shape[1]
    if not isinstance(kept, torch.Tensor):
        kept = prefix_mask(kept, w, bc.pos.device)
    bc.pos = torch.cat([bc.pos, torch.where(kept, bc.pending, -1)], dim=1)
    bc.pending = None
    return _trim(bc)


def truncate(bc: BatchCache, lengths: Sequence[int]) -> int:
    """Roll row b back to its first lengths[b] committed tokens (their slots stay; the later ones become holes).
    Returns the tail slots now empty in every row, for the caller to drop."""
    for b, n in enumerate(lengths):
        slots = (bc.pos[b] >= 0).nonzero().flatten()
        bc.pos[b, slots[n:]] = -1
    return _trim(bc)


def _trim(bc: BatchCache) -> int:
    used = (bc.pos >= 0).any(0).nonzero()
    L = int(used[-1]) + 1 if len(used) else 0
    trim = bc.L - L
    bc.pos = bc.pos[:, :L]
    return trim


def needs_compaction(bc: BatchCache, w: int) -> bool:
    """Whether to compact before a forward of w slots: a static cache that would overflow, or a growing one whose
    dead slots (L beyond its longest row) exceed COMPACT_SLACK and half its longest row (they cost attention)."""
    if bc.capacity is not None:
        return bc.L + w > bc.capacity
    longest = int(bc.lengths().max()) if bc.L else 0
    return bc.L - longest > max(COMPACT_SLACK, longest // 2)


def compact(bc: BatchCache, static: bool) -> None:
    """Move every row's context slots to the left, in order, in every layer's keys and values (RoPE is already
    applied to stored keys, so a key may move), and the write pointer to the longest row."""
    valid = bc.pos >= 0  # (B, L)
    n = valid.sum(1)
    Lp = int(n.max())
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :Lp]  # (B, Lp) context slots first
    pos = bc.pos.gather(1, order)
    pos[torch.arange(Lp, device=pos.device)[None] >= n[:, None]] = -1
    for layer in bc.cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)  # (B, H, slots, D)
            moved = t.gather(2, order[:, None, :, None].expand(t.shape[0], t.shape[1], Lp, t.shape[3]))
            if static:
                t[:, :, :Lp].copy_(moved)  # in place: compiled graphs hold these tensors' addresses
            else:
                setattr(layer, name, moved)
        if static:
            layer.cumulative_length.fill_(Lp)
    bc.pos = pos
    bc.compactions += 1


def budgets(max_new_tokens: int | Sequence[int], batch_size: int) -> list[int]:
    """Per-row token budgets from one budget for all rows or one per row."""
    if isinstance(max_new_tokens, int):
        return [max_new_tokens] * batch_size
    out = list(max_new_tokens)
    if len(out) != batch_size:
        raise ValueError(f"{len(out)} token budgets for {batch_size} prompts")
    return out
