"""Step accounting and the harness's stopping/truncation, on scripted decoders and tiny models."""
from __future__ import annotations

import pytest

from harness.engine.generate import Stopper, generate
from harness.engine.models import byte_tokenizer
from methods import get_method
from methods.acceptance import greedy_accept
from methods.base import Decoder, Step
from tests.conftest import PROMPTS, encode

import torch


class Scripted(Decoder):
    """Yields a fixed list of steps, ignoring the model."""

    def __init__(self, steps):
        super().__init__(model=None)
        self.steps = steps
        self.closed = False

    def decode(self, input_ids, max_new_tokens):
        try:
            for s in self.steps:
                yield s if isinstance(s, Step) else Step(tokens=tuple(s))
        finally:
            self.closed = True


IDS = torch.tensor([[0]])


def test_eos_mid_step_truncates_and_keeps_eos():
    d = Scripted([(1,), (2, 3, 4), (5, 9, 7), (8,)])
    g = generate(d, IDS, 100, Stopper(frozenset({9})))
    assert g.tokens == [1, 2, 3, 4, 5, 9]
    assert g.step_tokens == [1, 3, 2]
    assert g.stop_reason == "eos"
    assert d.closed  # the harness closes the decoder's generator when it stops


def test_overshooting_max_new_tokens_is_truncated():
    g = generate(Scripted([(1, 2), (3, 4, 5), (6,)]), IDS, 4, Stopper(frozenset()))
    assert g.tokens == [1, 2, 3, 4] and g.step_tokens == [2, 2] and g.stop_reason == "max_new_tokens"


def test_eos_exactly_at_the_limit_counts_as_eos():
    g = generate(Scripted([(1, 2), (3, 9, 5)]), IDS, 4, Stopper(frozenset({9})))
    assert g.tokens == [1, 2, 3, 9] and g.stop_reason == "eos"


def test_counts_of_a_cut_step_are_clipped_to_the_kept_tokens():
    """A step cut after `kept` tokens counts kept - 1 accepted drafts (the last kept token is its bonus), no
    more drafted positions than that, and no stationary tokens (they lie past the bonus); uncut steps and
    drafter forwards are left alone."""
    steps = [Step((1,)),
             Step((2, 3, 4), drafted=5, accepted=2, draft_forwards=3, stationary=2),
             Step((5, 6, 9, 7, 8), drafted=6, accepted=4, draft_forwards=4, stationary=1)]
    g = generate(Scripted(steps), IDS, 100, Stopper(frozenset({9})))  # EOS is the 3rd of 5 tokens
    assert g.tokens == [1, 2, 3, 4, 5, 6, 9] and g.step_tokens == [1, 3, 3]
    assert g.step_accepted == [0, 2, 2] and g.step_drafted == [0, 5, 2] and g.step_stationary == [0, 2, 0]
    assert g.step_draft_forwards == [0, 3, 4]
    for kept_tokens, accepted, drafted in zip(g.step_tokens, g.step_accepted, g.step_drafted):
        assert accepted <= kept_tokens - 1 and accepted <= drafted

    g = generate(Scripted([Step((1,)), Step((2, 3, 4, 5), drafted=4, accepted=3, stationary=1)]), IDS, 2,
                 Stopper(frozenset()))  # the token budget cuts the step after its first token
    assert g.step_tokens == [1, 1] and g.step_accepted == [0, 0] and g.step_drafted == [0, 0]
    assert g.step_stationary == [0, 0] and g.stop_reason == "max_new_tokens"


def test_counts_of_a_step_cut_by_a_stop_string():
    tok = byte_tokenizer()
    ids = tok("ab, cd. ef", add_special_tokens=False)["input_ids"]
    steps = [Step(tuple(ids[:1])), Step(tuple(ids[1:]), drafted=12, accepted=len(ids) - 2, stationary=3)]
    g = generate(Scripted(steps), IDS, 100, Stopper(frozenset(), (". ",), tok))
    assert tok.decode(g.tokens) == "ab, cd. " and g.stop_reason == "stop_string"
    assert g.step_tokens == [1, 7] and g.step_accepted == [0, 6] and g.step_drafted == [0, 6]
    assert g.step_stationary == [0, 0]


def test_empty_step_is_an_error():
    with pytest.raises(RuntimeError, match="commits no token"):
        generate(Scripted([(1,), ()]), IDS, 10, Stopper(frozenset()))


def test_greedy_accept():
    t = torch.tensor
    assert greedy_accept(t([5, 6, 7]), t([5, 6, 7, 8])) == 3
    assert greedy_accept(t([5, 0, 7]), t([5, 6, 7, 8])) == 1
    assert greedy_accept(t([0, 6, 7]), t([5, 6, 7, 8])) == 0
    assert greedy_accept(t([], dtype=torch.long), t([5])) == 0


@pytest.mark.parametrize("block_size", ["1", "4", "16"])
def test_step_accounting(tiny, block_size):
    _, model, tok = tiny
    ar = get_method("ar")(model)
    jac_cls = get_method("jacobi")
    jac = jac_cls(model, jac_cls.parse_options({"block_size": block_size}))
    for prompt in PROMPTS[:4]:
        ids = encode(tok, prompt)
        for n in (1, 5, 33):
            a = generate(ar, ids, n, Stopper(frozenset()))
            assert a.step_tokens == [1] * n  # AR commits exactly one token per step
            steps = list(jac.decode(ids, n))
            assert steps[0].tokens and len(steps[0].tokens) == 1  # the prefill commits one token, as in AR
            for s in steps[1:]:
                assert len(s.tokens) == s.accepted + 1  # accepted guesses plus the bonus token
                assert s.accepted <= s.drafted <= int(block_size)
            assert sum(len(s.tokens) for s in steps) == n  # the decoder never overshoots its budget
            g = generate(jac, ids, n, Stopper(frozenset()))
            assert sum(g.step_tokens) == len(g.tokens) == n
