"""Batched decoding (docs/batching.md): every registered lossless method, decoding prompts of different lengths B at
a time with a different token budget per row, gives each row exactly what it gives at batch size 1, which is AR's
output; EOS at different steps in different rows stops each row where AR stops, through the harness's batch path.
On the eager engine and on the compiled one (one static cache per batch size, its cache compacted on the way); the
batch cache's compaction and per-row rollback keep the logits of the next forward unchanged."""
from __future__ import annotations

import functools

import pytest
import torch

from harness.engine.generate import Stopper, generate, generate_batch
from harness.engine.models import model_loader, tiny_random
from methods import available_methods, batch, get_method
from methods.batch import chain_layout, prefill
from methods.drafters import DRAFTERS
from methods.engine import CompiledEngine, Engine
from tests.conftest import PROMPTS, _model, encode

MAX_NEW = 24
NO_STOP = Stopper(frozenset())
# Options per method (one graph width covers them all on the compiled engine: 12 = lookahead's widest tree);
# speculative is checked with every registered drafter and a draft model. A method not listed runs its defaults.
OPTIONS = {"jacobi": [{"block_size": "4"}, {"block_size": "3", "init": "repeat"}],
           "lookahead": [{"window": "3", "ngram": "3", "guess_set": "2"}],
           "speculative": [{"draft": d, "k": "4"} for d in sorted(DRAFTERS.available()) if d != "layerskip"]
           + [{"draft": "layerskip:1", "k": "3"}, {"draft": "tiny-random", "k": "4", "adaptive": "true"}]}
LOSSLESS = sorted(n for n in available_methods() if get_method(n).lossless)
CASES = [(m, o) for m in LOSSLESS for o in OPTIONS.get(m, [{}])]
IDS = [f"{m}-{'-'.join(o.values())}" for m, o in CASES]
BATCHES = {2: ([0, 6], [MAX_NEW, 9]), 3: ([7, 4, 1], [MAX_NEW, 13, 2])}  # prompts (different lengths), budgets


def build(method, options, model, engine=None):
    cls = get_method(method)
    return cls(model, cls.parse_options(options), loader=model_loader(), engine=engine)


@functools.cache
def reference(name: str, prompt: str) -> list[int]:
    model, tok = _model(name)
    return generate(build("ar", {}, model), encode(tok, prompt), MAX_NEW, NO_STOP).tokens


def batch_tokens(decoder, prompts, budgets) -> list[list[int]]:
    rows = [[] for _ in prompts]
    for step in decoder.decode_batch(prompts, budgets):
        assert len(step.rows) == len(prompts) and any(s is not None for s in step.rows)
        for b, s in enumerate(step.rows):
            rows[b] += s.tokens if s is not None else []
    return rows


def test_every_registered_method_has_a_batched_path():
    assert all(get_method(n).batched() for n in available_methods())


@pytest.mark.parametrize("name", ["gemma3-mixed-loopy", "llama-chaotic", "mistral-sliding-loopy"])
@pytest.mark.parametrize("method,options", CASES, ids=IDS)
def test_batch_equals_batch_1_and_ar(name, method, options):
    model, tok = _model(name)
    for B, (which, budgets) in BATCHES.items():
        texts = [PROMPTS[i] for i in which]
        prompts = [encode(tok, t) for t in texts]
        d = build(method, options, model)
        got = batch_tokens(d, prompts, budgets)
        for b, (text, n) in enumerate(zip(texts, budgets)):
            single = generate(d, prompts[b], n, NO_STOP).tokens
            assert got[b] == single == reference(name, text)[:n], f"{method} {options} on {name}, B={B}, row {b}"


@pytest.mark.parametrize("method,options", CASES, ids=IDS)
def test_eos_at_different_steps_in_different_rows(method, options):
    """Each row gets its own EOS token, met at a different step; the harness stops each row there, and the
    batch goes on until the last row stops."""
    name = "llama-loopy"
    model, tok = _model(name)
    texts = [PROMPTS[i] for i in (3, 0, 6)]
    prompts = [encode(tok, t) for t in texts]
    refs = [reference(name, t) for t in texts]
    d = build(method, options, model)
    for shift in range(0, 12, 3):
        eos = [refs[b][min(shift + 5 * b, MAX_NEW - 1)] for b in range(3)]
        stoppers = [Stopper(frozenset({e})) for e in eos]
        gens, wall = generate_batch(d, prompts, [MAX_NEW] * 3, stoppers)
        for b, g in enumerate(gens):
            ar = generate(build("ar", {}, model), prompts[b], MAX_NEW, stoppers[b])
            assert g.tokens == ar.tokens and g.stop_reason == ar.stop_reason == "eos", f"{method} row {b}"
            assert sum(g.step_tokens) == len(g.tokens) and g.wall_time_s == wall > 0
        assert len({len(g.tokens) for g in gens}) > 1  # the rows really stopped at different steps


def test_the_eager_attention_mask_too():
    """The additive mask of eager attention (the tests above run sdpa's boolean one)."""
    model, tok = tiny_random(seed=2, initializer_range=0.1, tie_word_embeddings=True)
    model.set_attn_implementation("eager")
    prompts = [encode(tok, PROMPTS[i]) for i in (0, 6, 7)]
    for method, options in [("ar", {}), ("jacobi", {"block_size": "4"}), ("lookahead", {})]:
        d = build(method, options, model)
        got = batch_tokens(d, prompts, MAX_NEW)
        assert got == [generate(build("ar", {}, model), p, MAX_NEW, NO_STOP).tokens for p in prompts], method


@pytest.fixture(scope="module")
def compiled():
    """One compiled engine for every case: gemma3 mixes sliding and full layers; batch size 3; one graph of
    width 12 serves every forward (narrower ones are padded); its cache is small, so that it is compacted."""
    model, tok = _model("gemma3-mixed-loopy")
    engine = CompiledEngine(model, max_len=72, autotune=False)
    engine.warm_up_batch(3, (12,))
    return model, tok, engine


# The compiled engine's cases: the draft model's graphs cost as much as the target's, so the drafters that run a
# model are represented by layerskip (tiny-random's batched drafting is the same code, checked eagerly above).
COMPILED = [(m, o) for m, o in CASES if o.get("draft") != "tiny-random"]
ROWS, BUDGETS = [3, 4, 1], [40, 13, 30]
COMPACTED = [("jacobi", {"block_size": "4"}), ("lookahead", {"window": "3", "ngram": "3", "guess_set": "2"})]


@pytest.mark.parametrize("method,options", COMPILED, ids=[f"{m}-{'-'.join(o.values())}" for m, o in COMPILED])
def test_batch_on_the_compiled_engine(compiled, method, options, monkeypatch):
    model, tok, engine = compiled
    compactions = []
    monkeypatch.setattr(batch, "compact", lambda bc, static, f=batch.compact: compactions.append(1) or f(bc, static))
    d = build(method, options, model, engine)
    drafter = getattr(getattr(d, "drafter", None), "engine", None)
    if drafter is not None and not drafter.batch_widths:
        drafter.warm_up_batch(3, (2,))
    late = engine.late_compiles + (drafter.late_compiles if drafter else 0)
    prompts = [encode(tok, PROMPTS[i]) for i in ROWS]
    got = batch_tokens(d, prompts, BUDGETS)
    ar = build("ar", {}, model)
    for b, n in enumerate(BUDGETS):
        assert got[b] == generate(ar, prompts[b], n, NO_STOP).tokens, f"{method} {options}, row {b}"
    assert engine.late_compiles + (drafter.late_compiles if drafter else 0) == late
    if (method, options) in COMPACTED:  # (deterministic: the tiny model's outputs are)
        assert compactions, "the static cache was never compacted: the test would not check compaction"


@pytest.mark.parametrize("static", [False, True])
def test_compaction_and_per_row_rollback_keep_the_logits(static, request):
    """Holes (rejected slots), a per-row rollback, then compaction: the next forward's logits are those of a
    cache that only ever held the kept tokens."""
    model, tok = _model("gemma3-mixed-loopy")
    engine = request.getfixturevalue("compiled")[2] if static else Engine(model)
    clean = Engine(model)
    prompts = [encode(tok, PROMPTS[i]) for i in ROWS]
    torch.manual_seed(0)
    with torch.inference_mode():
        bc, _ = prefill(engine, prompts)
        ref, _ = prefill(clean, prompts)
        for keep in ([3, 1, 0], [0, 4, 2], [2, 2, 4]):  # 4 new tokens per row, row b keeps keep[b] of them
            x = torch.randint(0, 200, (3, 4)).tolist()
            engine.batch_forward(bc, *chain_layout(x, bc.lengths())[:3])
            engine.batch_commit(bc, keep)
            ids, pos, allowed, real = chain_layout([r[:k] or r[:1] for r, k in zip(x, keep)], ref.lengths())
            clean.batch_forward(ref, ids, pos, allowed)
            clean.batch_commit(ref, real & torch.tensor([k > 0 for k in keep])[:, None])
        engine.batch_rollback(bc, [n - 1 for n in bc.lengths().tolist()])  # per row: drop the last token
        clean.batch_rollback(ref, [n - 1 for n in ref.lengths().tolist()])
        batch.compact(bc, static)
        assert torch.equal(bc.lengths(), ref.lengths()) and bc.L == int(bc.lengths().max())
        args = chain_layout([[5, 6, 7], [8, 9, 10], [11, 12, 13]], bc.lengths())[:3]
        assert torch.allclose(engine.batch_forward(bc, *args), clean.batch_forward(ref, *args), atol=1e-5)
