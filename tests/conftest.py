"""Shared fixtures: tiny seeded models built from a config (no downloads).

"chaotic" models commit one token per Jacobi step (the rejection path); "loopy" ones (tied embeddings,
small init) fall into short cycles, so Jacobi commits many tokens per step (the acceptance path).
"""
from __future__ import annotations

import functools
import json

import pytest

from harness.engine.models import tiny_random


def pytest_report_header(config):
    """The library versions this run tested (CI's log shows what pyproject's ranges were checked against)."""
    import lm_eval
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}, lm-eval {lm_eval.__version__}"

TINY_MODELS = {
    "llama-chaotic": dict(arch="llama", seed=0),
    "llama-loopy": dict(arch="llama", seed=2, initializer_range=0.1, tie_word_embeddings=True),
    "llama-loopy-b": dict(arch="llama", seed=1, initializer_range=0.1, tie_word_embeddings=True),
    "mistral-sliding-loopy": dict(arch="mistral", seed=0, sliding_window=8, initializer_range=0.1,
                                  tie_word_embeddings=True),
    # mixes sliding-window and full layers: per-layer-type masks and DynamicSlidingWindowLayer caches
    "gemma3-mixed-loopy": dict(arch="gemma3_text", seed=0, sliding_window=8, head_dim=16,
                               layer_types=["sliding_attention", "full_attention"], initializer_range=0.1,
                               tie_word_embeddings=True),
}

PROMPTS = ["def f(x):", "hello world", "abc abc abc", "The quick brown fox", "x", "1 2 3 4 5 6 7 8",
           "import torch\nimport numpy as np\n", "Once upon a time, in a land far away,"]


@functools.cache
def _model(name: str):
    return tiny_random(**TINY_MODELS[name])


@pytest.fixture(params=list(TINY_MODELS), scope="session")
def tiny(request):
    """(name, model, tokenizer) for every tiny model."""
    model, tok = _model(request.param)
    return request.param, model, tok


@pytest.fixture(scope="session")
def loopy():
    return _model("llama-loopy")


def encode(tok, prompt):
    return tok(prompt, return_tensors="pt")["input_ids"]


@pytest.fixture(scope="session")
def write_gsm8k():
    """write_gsm8k(root, rows): a --data-dir at root whose gsm8k train and test splits both hold rows."""
    def write(root, rows):
        (root / "gsm8k").mkdir(parents=True)
        for split in ("train", "test"):
            (root / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return root
    return write
