"""Speculative decoding: drafters, the rejection-sampling distribution, drafter registry, rollback errors."""
from __future__ import annotations

import pytest
import torch

from harness.engine.generate import Stopper, generate
from harness.engine.models import model_loader, tiny_random
from harness.engine.provenance import content_hash
from methods import get_method
from methods.drafters import DRAFTERS, Drafter, ModelDrafter, NgramDrafter, make_drafter, truncated_view
from methods.kv import CacheRollbackError, rollback
from methods.registry import RegistryError
from tests.conftest import PROMPTS, _model, encode
from tests.test_registry import install_plugin

NO_STOP = Stopper(frozenset())


def decoder(name, options, model):
    cls = get_method(name)
    return cls(model, cls.parse_options(options), loader=model_loader())


def test_ngram_drafter_is_prompt_lookup():
    d = NgramDrafter(None, "2")
    #            0  1  2  3  4  5  6  7
    committed = [5, 6, 7, 8, 9, 1, 5, 6]
    assert d.propose(committed, 3, 0.0) == ([7, 8, 9], None, 0)  # "5 6" occurred at 0: continue from 2
    assert d.propose(committed + [2], 3, 0.0) == ([], None, 0)  # 2 never occurred before
    assert d.propose([4, 1, 2, 3, 1], 10, 0.0)[0] == [2, 3, 1]  # falls back to the 1-gram, stops at the end


def test_local_model_directory_as_draft(tmp_path, loopy):
    model, tok = loopy
    draft, _ = tiny_random(seed=7, arch="llama", initializer_range=0.1, tie_word_embeddings=True)
    draft.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cls, loaded = get_method("speculative"), []  # what the harness's loader loaded goes into run.json
    spec = cls(model, cls.parse_options({"draft": str(tmp_path), "k": "3"}), loader=model_loader(loaded))
    assert [m["sha256"] for m in loaded] == [content_hash(tmp_path)["sha256"]]
    cls(model, cls.parse_options({"draft": "ngram"}), loader=model_loader(loaded))
    assert len(loaded) == 1  # prompt lookup loads nothing
    ar = decoder("ar", {}, model)
    for prompt in PROMPTS[:4]:
        ids = encode(tok, prompt)
        g = generate(spec, ids, 40, NO_STOP)
        assert g.tokens == generate(ar, ids, 40, NO_STOP).tokens
        assert g.draft_forwards == g.drafted > 0 and 0 <= g.accepted <= g.drafted


def test_draft_with_another_vocabulary_is_refused(loopy):
    model, _ = loopy
    with pytest.raises(ValueError, match="must share the target's tokenizer"):
        make_drafter("tiny-random", tiny_random(vocab_size=300)[0], loader=model_loader())


def test_layerskip_view_runs_the_first_layers_and_shares_weights():
    model, tok = tiny_random(seed=3, num_hidden_layers=4)
    view = truncated_view(model, 2)
    ids = encode(tok, "layer skip")
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[2]  # after 2 of 4 layers, before the norm
        expected = model.lm_head(model.model.norm(hidden))
        assert torch.allclose(view(ids).logits, expected, atol=1e-5)
    assert view.lm_head.weight is model.lm_head.weight and len(model.model.layers) == 4
    for bad in ("layerskip:0", "layerskip:4", "layerskip:x"):
        with pytest.raises(ValueError, match="layerskip"):
            make_drafter(bad, model)


class SelfDraft(ModelDrafter):
    """The target drafting for itself (a separate cache): every draft token is accepted."""

    def _load(self, spec):
        return self.target


def test_adaptive_k_grows_on_full_acceptance(loopy, monkeypatch):
    monkeypatch.setitem(DRAFTERS.builtins, "self", "tests.test_speculative:SelfDraft")
    model, tok = loopy
    d = decoder("speculative", {"draft": "self", "k": "1", "adaptive": "true"}, model)
    steps = list(d.decode(encode(tok, "abc"), 30))
    assert [s.drafted for s in steps[1:4]] == [1, 3, 5] and all(s.accepted == s.drafted for s in steps[1:4])


def chi2_sf(x: float, dof: int) -> float:
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(x / 2, dtype=torch.float64)))


def exact_second_token(model, ids, temperature):
    """P(second generated token) = sum over t1 of p(t1 | prompt) p(t2 | prompt, t1), over the whole vocabulary."""
    with torch.no_grad():
        p1 = torch.softmax(model(ids).logits[0, -1].double() / temperature, -1)  # (V,)
        V = p1.shape[0]
        batch = torch.cat([ids.repeat(V, 1), torch.arange(V).unsqueeze(1)], dim=1)  # (V, T+1)
        p2 = torch.softmax(model(batch).logits[:, -1].double() / temperature, -1)  # (V, V)
    return p1 @ p2


class ArgmaxOfAnotherModel(Drafter):
    """A deterministic drafter (no q): proposes the greedy tokens of a different tiny model."""

    def __init__(self, target, arg=None, loader=None):
        super().__init__(target, arg, loader)
        self.model = tiny_random(seed=11, initializer_range=0.1, tie_word_embeddings=True)[0]

    def propose(self, committed, k, temperature):
        out, seq = [], list(committed)
        with torch.no_grad():
            for _ in range(k):
                out.append(int(self.model(torch.tensor([seq])).logits[0, -1].argmax()))
                seq.append(out[-1])
        return out, None, k


@pytest.mark.parametrize("draft", ["tiny-random", "layerskip:1", "argmax-of-another"])
def test_sampling_keeps_the_target_distribution(draft, monkeypatch):
    """Chi-square goodness of fit of the second generated token (the first one that can be drafted)
    against the exact marginal, at a fixed seed."""
    monkeypatch.setitem(DRAFTERS.builtins, "argmax-of-another", "tests.test_speculative:ArgmaxOfAnotherModel")
    model, tok = _model("llama-loopy-b")
    ids = encode(tok, "ab")
    T, N = 1.0, 1500
    expected = exact_second_token(model, ids, T) * N
    d = decoder("speculative", {"draft": draft, "k": "2", "temperature": str(T)}, model)
    torch.manual_seed(1234)
    counts = torch.zeros_like(expected)
    drafted = 0
    for _ in range(N):
        g = generate(d, ids, 3, NO_STOP)
        counts[g.tokens[1]] += 1
        drafted += g.drafted
    assert drafted > 0
    p_value, stat, dof = goodness_of_fit(counts, expected)
    assert p_value > 1e-3, f"draft={draft}: chi2={stat:.1f} over {dof} dof, p={p_value:.2g}"


def goodness_of_fit(counts: torch.Tensor, expected: torch.Tensor) -> tuple[float, float, int]:
    """Pearson chi-square test; tokens expected fewer than 5 times are pooled into one bin."""
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    stat = float(((obs - exp) ** 2 / exp).sum())
    return chi2_sf(stat, len(obs) - 1), stat, len(obs) - 1


def test_the_chi_square_check_catches_a_biased_sampler(monkeypatch):
    """Guards the test above: accepting every draft token (no rejection) must fail it."""
    import methods.speculative as spec_module

    monkeypatch.setattr(spec_module, "rejection_accept",
                        lambda draft, q, logits, T: (len(draft), int(torch.multinomial(torch.softmax(logits[-1] / T, -1), 1))))
    with pytest.raises(AssertionError, match="chi2="):
        test_sampling_keeps_the_target_distribution("layerskip:1", monkeypatch)


def test_ar_sampling_matches_the_exact_distribution():
    model, tok = _model("llama-loopy-b")
    ids = encode(tok, "ab")
    N = 1500
    expected = exact_second_token(model, ids, 1.0) * N
    ar = decoder("ar", {"temperature": "1.0"}, model)
    torch.manual_seed(99)
    counts = torch.zeros_like(expected)
    for _ in range(N):
        counts[generate(ar, ids, 2, NO_STOP).tokens[1]] += 1
    p_value, stat, dof = goodness_of_fit(counts, expected)
    assert p_value > 1e-3, f"chi2={stat:.1f} over {dof} dof"


def test_third_party_drafter_via_entry_point(tmp_path, monkeypatch, loopy):
    install_plugin(tmp_path, monkeypatch, "echo", "Echo", """
        from methods.drafters import NgramDrafter
        class Echo(NgramDrafter):
            pass
    """, group="harness.drafters")
    model, tok = loopy
    d = decoder("speculative", {"draft": "echo:3"}, model)
    assert type(d.drafter).__name__ == "Echo" and d.drafter.ngram == 3
    install_plugin(tmp_path / "b", monkeypatch, "broken", "X", "raise ImportError('nope')\n", group="harness.drafters")
    with pytest.raises(RegistryError, match="drafter 'broken'.*failed to load"):
        make_drafter("broken", model)


class Unrollable:
    layers = ()

    def crop(self, n):
        raise RuntimeError("Linear attention layers can only be cropped by passing a negative int")


def test_a_cache_that_cannot_roll_back_is_a_clear_error():
    with pytest.raises(CacheRollbackError, match="cannot roll back rejected tokens.*--method ar"):
        rollback(Unrollable(), 2)
    rollback(Unrollable(), 0)  # nothing to drop: no error
