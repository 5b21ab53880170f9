"""Property: the windowed stop-string check (Stopper.cut, O(new tokens) per step) cuts exactly where the old
full-decode check did, step by step as generate() calls it, on random token streams and stop strings."""
from __future__ import annotations

import random

import pytest

from harness.engine.generate import STOP_MARGIN_CHARS, Stopper
from harness.engine.models import byte_tokenizer

ALPHABET = "ab c\n.:é€😀<>/"  # 1-, 2-, 3- and 4-byte characters, and the pieces of special tokens' text


class FullDecodeStopper(Stopper):
    """The reference: the original check, which decodes the whole output and then every prefix (quadratic)."""

    def _stop_string_cut(self, tokens, start):
        text = self.tokenizer.decode(tokens)
        if not any(s in text for s in self.stop_strings):
            return None
        for j in range(max(start, 1), len(tokens) + 1):
            prefix = self.tokenizer.decode(tokens[:j])
            if any(s in prefix for s in self.stop_strings):
                return j
        return len(tokens)


def run_steps(stopper: Stopper, tokens: list[int], sizes: list[int]) -> tuple[int, str | None, list]:
    """Feed `tokens` in steps of `sizes` as generate() does; (kept length, reason, every call's result)."""
    out, calls = [], []
    for size in sizes:
        start = len(out)
        out.extend(tokens[start: start + size])
        hit = stopper.cut(out, start)
        calls.append(hit)
        if hit:
            return hit[0], hit[1], calls
        if len(out) == len(tokens):
            break
    return len(out), None, calls


def random_case(rng: random.Random, tok) -> tuple[list[int], tuple[str, ...], list[int], frozenset[int]]:
    text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 60)))
    tokens = tok(text, add_special_tokens=False)["input_ids"]
    for _ in range(rng.randint(0, 3)):  # stray bytes (broken characters) and special tokens
        tokens.insert(rng.randint(0, len(tokens)), rng.choice([0x80, 0xC3, 0xE2, 0xF0, tok.eos_token_id, tok.bos_token_id]))
    decoded = tok.decode(tokens)
    stops = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.7 and decoded:  # a piece of the text itself, so that most cases stop somewhere
            i = rng.randrange(len(decoded))
            stops.append(decoded[i: i + rng.randint(1, 12)])
        elif rng.random() < 0.02:
            stops.append("")  # held by every text
        else:
            stops.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4))))
    sizes = [rng.choice([1, 1, 2, 3, 5, 8, 17]) for _ in range(len(tokens))]
    eos = frozenset({tok.eos_token_id}) if rng.random() < 0.3 else frozenset()
    return tokens, tuple(stops), sizes, eos


def test_windowed_cut_equals_full_decode_on_random_streams():
    tok = byte_tokenizer()
    rng = random.Random(0)
    stopped = long_windows = 0
    for _ in range(600):
        tokens, stops, sizes, eos = random_case(rng, tok)
        new = run_steps(Stopper(eos, stops, tok), tokens, sizes)
        ref = run_steps(FullDecodeStopper(eos, stops, tok), tokens, sizes)
        assert new == ref, (tokens, stops, sizes)
        stopped += new[1] == "stop_string"
        long_windows += new[0] > 4 * (max(map(len, stops)) + STOP_MARGIN_CHARS)  # the window started past token 0
        cut = new[0]
        assert Stopper(eos, stops, tok).text(tokens[:cut]) == FullDecodeStopper(eos, stops, tok).text(tokens[:cut])
    assert stopped > 200 and long_windows > 20  # most cases stop, many of them past the look-back window


@pytest.mark.parametrize("step", ["char", 1, 3, 64])
def test_stop_string_far_into_a_long_output(step):
    """The window starts long after token 0, yet the cut is where the full decode puts it."""
    tok = byte_tokenizer()
    text = "é€😀 abc\n" * 40 + "STOP€😀 tail"
    tokens = tok(text, add_special_tokens=False)["input_ids"]
    # "char": every step commits whole characters, so no step ends inside one, while the window often
    # starts inside one (alone, its bytes decode to U+FFFD, which the text never holds)
    sizes = [len(c.encode()) for c in text] if step == "char" else [step] * len(tokens)
    for stops in [("STOP",), ("😀 abc\nSTOP€",), ("€😀 t",), ("\n\n",), ("\ufffd",)]:
        new = run_steps(Stopper(frozenset(), stops, tok), tokens, sizes)
        assert new == run_steps(FullDecodeStopper(frozenset(), stops, tok), tokens, sizes)
        if stops[0] in text:
            assert new[1] == "stop_string" and stops[0] in tok.decode(tokens[: new[0]])
            assert stops[0] not in tok.decode(tokens[: new[0] - 1])
        elif step == "char":
            assert new[:2] == (len(tokens), None)


def test_model_outputs_cut_alike(loopy):
    """The stop-string cases of the lossless tests (every 2-character piece of a tiny model's AR output)."""
    from harness.engine.generate import generate
    from methods import get_method
    from tests.conftest import PROMPTS, encode

    model, tok = loopy
    ar = get_method("ar")(model)
    cases = 0
    for prompt in PROMPTS:
        tokens = generate(ar, encode(tok, prompt), 40, Stopper(frozenset())).tokens
        text = tok.decode(tokens)
        for i in range(len(text) - 1):
            for sizes in ([1] * len(tokens), [7] * len(tokens)):
                stops = (text[i: i + 2],)
                assert run_steps(Stopper(frozenset(), stops, tok), tokens, sizes) == \
                    run_steps(FullDecodeStopper(frozenset(), stops, tok), tokens, sizes)
                cases += 1
    assert cases > 100


@pytest.mark.slow
def test_windowed_cut_equals_full_decode_on_the_embedded_tokenizer():
    """The same property on SmolLM2's byte-level BPE tokenizer, whose tokens hold several bytes."""
    from transformers import AutoTokenizer

    from harness.engine.models import embedded_gguf_path, gguf_cache_dir

    tok = AutoTokenizer.from_pretrained(gguf_cache_dir(embedded_gguf_path("smollm2-135m")))
    rng = random.Random(1)
    stopped = 0
    for _ in range(300):
        tokens, stops, sizes, eos = random_case(rng, tok)
        assert run_steps(Stopper(eos, stops, tok), tokens, sizes) == \
            run_steps(FullDecodeStopper(eos, stops, tok), tokens, sizes), (tokens, stops, sizes)
        stopped += run_steps(Stopper(eos, stops, tok), tokens, sizes)[1] == "stop_string"
    assert stopped > 100
