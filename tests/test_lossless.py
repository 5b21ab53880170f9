"""Property: every registered lossless method reproduces AR greedy output token for token (fp32),
for many prompts, option sets and lengths, on tiny models of two architectures, including EOS and
stop strings that land inside an accepted block."""
from __future__ import annotations

import functools

import pytest
import torch

from harness.engine.generate import Stopper, generate
from harness.engine.models import model_loader
from methods import available_methods, get_method
from tests.conftest import PROMPTS, _model, encode

# Option sets each lossless method is checked under; a method not listed is checked at its defaults.
OPTION_SETS = {
    "jacobi": [{"block_size": str(b), "init": i} for b in (1, 2, 3, 5, 8, 16) for i in ("prompt", "repeat")],
    "lookahead": [{"window": w, "ngram": n, "guess_set": g, "pool": p}
                  for w, n, g, p in [("1", "2", "2", "false"), ("2", "2", "0", "false"), ("3", "3", "3", "false"),
                                     ("4", "3", "4", "true"), ("5", "4", "2", "false"), ("2", "5", "5", "true"),
                                     ("6", "2", "6", "false"), ("4", "6", "1", "true")]],
    "speculative": [{"draft": "ngram", "k": "1"}, {"draft": "ngram", "k": "3", "ngram": "1"},
                    {"draft": "ngram", "k": "8", "ngram": "3", "adaptive": "true"},
                    {"draft": "layerskip:1", "k": "3"}, {"draft": "layerskip:1", "k": "2", "adaptive": "true"},
                    {"draft": "tiny-random", "k": "4"}, {"draft": "tiny-random", "k": "1", "adaptive": "true"}],
}
LOSSLESS = sorted(n for n in available_methods() if n != "ar" and get_method(n).lossless)
CASES = [(m, o) for m in LOSSLESS for o in OPTION_SETS.get(m, [{}])]
MAX_NEW = 40
NO_STOP = Stopper(frozenset())


def decoder(name, options, model):
    cls = get_method(name)
    return cls(model, cls.parse_options(options), loader=model_loader())


def ar_tokens(model, ids, n):
    return generate(decoder("ar", {}, model), ids, n, NO_STOP).tokens


@functools.cache
def reference(name: str, prompt: str) -> list[int]:
    """AR's MAX_NEW greedy tokens for a tiny model and prompt, computed once for every case that needs them."""
    model, tok = _model(name)
    return ar_tokens(model, encode(tok, prompt), MAX_NEW)


def test_some_lossless_method_is_registered():
    assert "jacobi" in LOSSLESS


@pytest.mark.parametrize("method,options", CASES, ids=[f"{m}-{'-'.join(o.values())}" for m, o in CASES])
def test_greedy_equals_ar(tiny, method, options):
    name, model, tok = tiny
    for prompt in PROMPTS:
        ids = encode(tok, prompt)
        ref = reference(name, prompt)
        for n in (1, 7, MAX_NEW):  # the first step alone, a budget that cuts a block, and the full length
            got = generate(decoder(method, options, model), ids, n, NO_STOP).tokens
            assert got == ref[:n], f"{method} {options} on {name!r}, prompt {prompt!r}, max_new_tokens={n}"


def _raw_steps(method, options, model, ids, n):
    return [s.tokens for s in decoder(method, options, model).decode(ids, n)]


# Option sets for the EOS/stop-string tests: defaults, plus a model drafter for speculative decoding (an
# n-gram drafter only proposes tokens already in the text, so it never commits a new token mid-step).
STOP_OPTIONS = {"speculative": [{}, {"draft": "layerskip:1", "k": "4"}]}


@pytest.mark.parametrize("method", LOSSLESS)
def test_eos_inside_an_accepted_block(method):
    """EOS at every position of AR's output: the method stops exactly where AR does."""
    mid_block = 0
    for options, model_name in [(o, m) for o in STOP_OPTIONS.get(method, [{}])
                                for m in ("llama-loopy", "llama-loopy-b", "mistral-sliding-loopy")]:
        model, tok = _model(model_name)
        for prompt in PROMPTS:
            ids = encode(tok, prompt)
            ref = reference(model_name, prompt)
            steps = _raw_steps(method, options, model, ids, MAX_NEW)
            for pos in range(1 + len(prompt) % 2, len(ref), 2):  # every other position (offset by prompt)
                eos = ref[pos]
                first = ref.index(eos)
                stop = Stopper(frozenset({eos}))
                g = generate(decoder(method, options, model), ids, MAX_NEW, stop)
                assert g.tokens == ref[: first + 1] and g.stop_reason == "eos"
                assert sum(g.step_tokens) == len(g.tokens)
                # was the EOS committed together with tokens after it (so the step had to be truncated)?
                end = 0
                for s in steps:
                    end += len(s)
                    if end > first:
                        mid_block += (end - 1 > first) and len(s) > 1
                        break
    assert mid_block > 0, "no case put EOS inside a multi-token step: the test would prove nothing"


@pytest.mark.parametrize("method", LOSSLESS)
def test_stop_string_inside_an_accepted_block(method):
    truncated = 0
    for options, model_name in [(o, m) for o in STOP_OPTIONS.get(method, [{}]) for m in ("llama-loopy", "llama-loopy-b")]:
        model, tok = _model(model_name)
        for prompt in PROMPTS:
            ids = encode(tok, prompt)
            ref = reference(model_name, prompt)
            text = tok.decode(ref)
            for start in range(1, len(text) - 2, 3):
                stop = Stopper(frozenset(), (text[start : start + 2],), tok)
                a = generate(decoder("ar", {}, model), ids, MAX_NEW, stop)
                b = generate(decoder(method, options, model), ids, MAX_NEW, stop)
                assert b.tokens == a.tokens and b.stop_reason == a.stop_reason == "stop_string"
                assert stop.text(b.tokens) == stop.text(a.tokens)
                assert text[start : start + 2] not in stop.text(b.tokens)
                truncated += len(b.tokens) < len(ref)
    assert truncated > 0


def test_jacobi_commits_many_tokens_per_step_on_a_loopy_model(loopy):
    """Guards the tests above: on these models Jacobi really accepts multi-token blocks."""
    model, tok = loopy
    ids = encode(tok, "hello world")
    steps = list(decoder("jacobi", {"block_size": "8", "init": "repeat"}, model).decode(ids, 64))
    assert max(len(s.tokens) for s in steps) > 4
    assert len(steps) < 32


@pytest.mark.parametrize("block_size", [1, 3, 7])
def test_lookahead_with_n2_and_no_pool_is_jacobi(tiny, block_size):
    """N=2, G=0: the lookahead branch is one Jacobi level; the steps must equal Jacobi's one for one."""
    _, model, tok = tiny
    for prompt in PROMPTS:
        ids = encode(tok, prompt)
        for init in ("prompt", "repeat"):
            jac = decoder("jacobi", {"block_size": str(block_size), "init": init}, model).decode(ids, 1000)
            look = decoder("lookahead", {"window": str(block_size + 1), "ngram": "2", "guess_set": "0", "init": init},
                           model).decode(ids, 1000)
            for _, a, b in zip(range(12), jac, look):  # well before the budget, where Jacobi trims its block
                assert (a.tokens, a.drafted, a.accepted) == (b.tokens, b.drafted, b.accepted)


def test_lookahead_pool_persists_across_requests_only_when_asked(loopy):
    model, tok = loopy
    ids = encode(tok, "Once upon a time")
    ref = ar_tokens(model, ids, MAX_NEW)
    for pool in ("false", "true"):
        d = decoder("lookahead", {"window": "3", "ngram": "4", "guess_set": "4", "pool": pool}, model)
        runs = [list(d.decode(ids, MAX_NEW)) for _ in range(2)]
        for steps in runs:
            assert [t for s in steps for t in s.tokens] == ref
        if pool == "false":
            assert [s.tokens for s in runs[0]] == [s.tokens for s in runs[1]]  # a fresh pool each request
        else:
            # the second request starts with the first one's n-grams, so it has more candidates to verify
            assert sum(s.drafted for s in runs[1]) > sum(s.drafted for s in runs[0])


def test_fp32_is_what_the_tests_use(tiny):
    assert next(tiny[1].parameters()).dtype == torch.float32
