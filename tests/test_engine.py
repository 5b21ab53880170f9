"""The compiled engine (static cache, one torch.compile graph per width): every lossless method is token-identical
to eager AR on it, warm-up compiles every width a decoder uses (none is compiled inside a request), and the
cache's rollback, padding and growth keep the logits equal to the eager engine's. Tiny models compile without
autotuning, so the suite stays quick; `harness profile` and benchmarks/ measure the real engine (and the
embedded model's outputs on it)."""
from __future__ import annotations

import pytest
import torch

from harness.engine.generate import Stopper, generate
from harness.engine.models import model_loader
from methods import get_method
from methods.engine import CompiledEngine, Engine, make_engine
from tests.conftest import PROMPTS, _model, encode

MAX_NEW = 24
NO_STOP = Stopper(frozenset())
# One option set per lossless method. Their plain forwards share two widths (1 and 5, so the graphs compiled for
# one case serve the next); lookahead adds tree forwards; the draft models run on compiled engines of their own
# (layerskip shares the target's weights, tiny-random has its own).
CASES = [("ar", {}), ("jacobi", {"block_size": "4"}), ("jacobi", {"block_size": "4", "init": "repeat"}),
         ("lookahead", {"window": "3", "ngram": "3", "guess_set": "2"}),
         ("speculative", {"draft": "ngram", "k": "4"}), ("speculative", {"draft": "layerskip:1", "k": "4"}),
         ("speculative", {"draft": "tiny-random", "k": "4"})]


@pytest.fixture(scope="module")
def compiled():
    """(name, model, tokenizer, engine): one compiled engine, shared by every case below, on the tiny model that
    mixes sliding-window and full attention layers (both kinds of mask on a static cache)."""
    model, tok = _model("gemma3-mixed-loopy")
    return "gemma3-mixed-loopy", model, tok, CompiledEngine(model, max_len=128, autotune=False)


def build(method, options, model, engine):
    cls = get_method(method)
    return cls(model, cls.parse_options(options), loader=model_loader(), engine=engine)


@pytest.mark.parametrize("method,options", CASES, ids=[f"{m}-{'-'.join(o.values())}" for m, o in CASES])
def test_lossless_on_the_compiled_engine(compiled, method, options):
    name, model, tok, engine = compiled
    d = build(method, options, model, engine)
    d.warm_up()
    late = engine.late_compiles
    for prompt in PROMPTS[:4]:
        ids = encode(tok, prompt)
        ref = generate(build("ar", {}, model, Engine(model)), ids, MAX_NEW, NO_STOP).tokens
        for n in (1, 7, MAX_NEW):
            got = generate(d, ids, n, NO_STOP).tokens
            assert got == ref[:n], f"{method} {options} on {name}, compiled, prompt {prompt!r}, max_new_tokens={n}"
    assert engine.late_compiles == late, f"{method} {options}: a width was compiled inside a request"


def test_compiled_forward_matches_eager_after_rollback_and_padding(loopy):
    model, _ = loopy
    compiled, eager = CompiledEngine(model, max_len=64, autotune=False), Engine(model)
    compiled.warm_up((1, 4))
    torch.manual_seed(0)
    with torch.inference_mode():
        a, b = compiled.new_cache(), eager.new_cache()
        prompt = torch.randint(0, 200, (1, 9))
        assert torch.allclose(compiled.forward(prompt, a, 1), eager.forward(prompt, b, 1), atol=1e-5)
        for w, back in [(3, 2), (4, 0), (1, 0), (2, 1), (4, 4)]:  # widths 2 and 3 run padded to the graph of 4
            x = torch.randint(0, 200, (1, w))
            assert torch.allclose(compiled.forward(x, a, w), eager.forward(x, b, w), atol=1e-5)
            compiled.rollback(a, back)
            eager.rollback(b, back)
            assert compiled.length(a) == eager.length(b)
    assert sorted(compiled.widths[False]) == [1, 4] and compiled.late_compiles == 0


def test_the_cache_grows_when_a_request_needs_more_room(loopy):
    model, tok = loopy
    engine = CompiledEngine(model, max_len=16, autotune=False)
    assert engine.reserve(40) and engine.max_len >= 40 and not engine.reserve(20)
    d = build("jacobi", {"block_size": "2"}, model, engine)
    d.warm_up()
    ids = encode(tok, "hello world")
    ref = generate(build("ar", {}, model, Engine(model)), ids, 20, NO_STOP).tokens
    assert generate(d, ids, 20, NO_STOP).tokens == ref


def test_a_run_fits_the_cache_to_its_longest_request_smaller_or_bigger(loopy):
    model, tok = loopy
    engine = CompiledEngine(model, max_len=1024, autotune=False)
    assert engine.reserve(70, fit=True) and engine.max_len == 128  # rounded up to CACHE_GRAIN (64)
    assert not engine.reserve(100, fit=True) and not engine.reserve(128)  # same size: the graphs stay
    assert engine.reserve(129) and engine.max_len == 256  # a request that outgrows it grows it
    d = build("jacobi", {"block_size": "2"}, model, engine)
    d.warm_up()
    assert engine.reserve(40, fit=True) and engine.max_len == 64
    assert not engine.widths[False]  # the graphs went with the old cache: no forward may pad to them
    d.warm_up()
    ids = encode(tok, "hello world")
    ref = generate(build("ar", {}, model, Engine(model)), ids, 20, NO_STOP).tokens
    assert generate(d, ids, 20, NO_STOP).tokens == ref and engine.late_compiles == 0


def test_a_decoder_reserves_room_in_its_draft_models_engine_too(loopy):
    model, _ = loopy
    d = build("speculative", {"draft": "layerskip:1"}, model, CompiledEngine(model, max_len=16, autotune=False))
    assert d.reserve(300) and d.engine.max_len >= 300 and d.drafter.engine.max_len >= 300 and not d.reserve(100)
    assert d.reserve(100, fit=True) and d.engine.max_len == d.drafter.engine.max_len == 128


def test_a_request_longer_than_the_cache_is_a_clear_error(loopy):
    model, tok = loopy
    d = build("ar", {}, model, CompiledEngine(model, max_len=8, autotune=False))
    with pytest.raises(RuntimeError, match="cache holds 8 positions"):
        generate(d, encode(tok, "hello world, a prompt"), 4, NO_STOP)


def test_unknown_engine_is_a_clear_error(loopy):
    with pytest.raises(ValueError, match="unknown engine 'fast'.*eager, compiled"):
        make_engine("fast", loopy[0])
