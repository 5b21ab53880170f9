"""KV helpers on sliding-window and mixed-attention tiny models: a cache that never rolls back (AR's) keeps only
the window, as transformers' own does; a recording one (drafting decoders') is trimmed back by every rollback."""
from __future__ import annotations

import pytest
import torch

from methods.kv import CacheRollbackError, forward, new_cache, rollback
from tests.conftest import _model

WINDOW = 8  # the tiny models' sliding window (tests/conftest.py)


def sliding_lengths(cache) -> list[int]:
    return [layer.keys.shape[-2] for layer in cache.layers if getattr(layer, "is_sliding", False)]


@pytest.mark.parametrize("name", ["mistral-sliding-loopy", "gemma3-mixed-loopy"])
@torch.inference_mode()
def test_caches_keep_the_window_and_agree(name):
    model, _ = _model(name)
    ids = torch.arange(3, 23).unsqueeze(0)  # (1, 20): past the window
    plain, recording = new_cache(model, record_past=False), new_cache(model)
    rollback(recording, 0)  # before any forward (a drafter syncing its empty cache): nothing to do
    a, b = forward(model, ids, plain, keep=1), forward(model, ids, recording, keep=1)
    rollback(recording, 0)
    for t in range(30, 36):
        x = torch.tensor([[t]])
        a, b = forward(model, x, plain, keep=1), forward(model, x, recording, keep=1)
        torch.testing.assert_close(a, b)
        assert sliding_lengths(plain) and set(sliding_lengths(plain)) == {WINDOW - 1}
        assert set(sliding_lengths(recording)) == {WINDOW}  # the new token, until the next rollback
        rollback(recording, 0)
        assert set(sliding_lengths(recording)) == {WINDOW - 1}
    # a recording cache can still undo a forward; the plain one cannot, and says so (a no-op rollback is fine)
    rollback(plain, 0)
    with pytest.raises(CacheRollbackError, match="cannot roll back"):
        rollback(plain, 1)
    block = torch.tensor([[40, 41, 42]])
    before = forward(model, torch.tensor([[50]]), recording, keep=1)
    rollback(recording, 1)
    forward(model, block, recording, keep=3)
    rollback(recording, 3)
    torch.testing.assert_close(forward(model, torch.tensor([[50]]), recording, keep=1), before)
