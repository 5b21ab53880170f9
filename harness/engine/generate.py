"""One timed request: drive a decoder's step stream, stop on EOS / stop strings / the token budget.

The harness owns the clock: the decoder never sees it. Each request is bracketed by a device sync and
`perf_counter`; a step that overshoots a stop condition is truncated, so every method's output is cut
at exactly the place AR's would be.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from methods.base import Decoder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Stopper:
    eos_ids: frozenset[int]
    stop_strings: tuple[str, ...] = ()
    tokenizer: object = None  # needed only for stop strings

    def cut(self, tokens: list[int], start: int) -> tuple[int, str] | None:
        """If tokens[start:] ends the generation, return (length to keep, reason)."""
        for i in range(start, len(tokens)):
            if tokens[i] in self.eos_ids:
                tokens_eos = i + 1  # the EOS token is kept: it cost a forward like any other
                break
        else:
            tokens_eos = None
        if self.stop_strings:
            hit = self._stop_string_cut(tokens[:tokens_eos] if tokens_eos else tokens, start)
            if hit is not None:
                return hit, "stop_string"
        return (tokens_eos, "eos") if tokens_eos else None

    def _stop_string_cut(self, tokens: list[int], start: int) -> int | None:
        text = self.tokenizer.decode(tokens)
        if not any(s in text for s in self.stop_strings):
            return None
        for j in range(max(start, 1), len(tokens) + 1):  # shortest prefix whose text holds a stop string
            prefix = self.tokenizer.decode(tokens[:j])
            if any(s in prefix for s in self.stop_strings):
                return j
        return len(tokens)

    def text(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.stop_strings if s in text]
        return text[: min(cuts)] if cuts else text


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)  # tokens committed by each step, after truncation
    step_drafted: list[int] = field(default_factory=list)  # tokens proposed for verification, per step
    step_accepted: list[int] = field(default_factory=list)  # of those, accepted, per step
    step_draft_forwards: list[int] = field(default_factory=list)  # drafter forwards, per step
    step_stationary: list[int] = field(default_factory=list)  # Jacobi/CLLM stationary tokens, per step

    @property
    def drafted(self) -> int:
        return sum(self.step_drafted)

    @property
    def accepted(self) -> int:
        return sum(self.step_accepted)

    @property
    def draft_forwards(self) -> int:
        return sum(self.step_draft_forwards)

    @property
    def stationary(self) -> int:
        return sum(self.step_stationary)

    stop_reason: str = "decoder_ended"  # only if a decoder stops early
    wall_time_s: float = 0.0
    ttft_s: float = 0.0


def generate(decoder: Decoder, input_ids: torch.Tensor, max_new_tokens: int, stopper: Stopper) -> Generation:
    """Run one request; input_ids (1, T) already on the model's device."""
    out = Generation()
    device = input_ids.device
    sync(device)
    t0 = time.perf_counter()
    steps = decoder.decode(input_ids, max_new_tokens)
    try:
        for step in steps:
            if not step.tokens:
                raise RuntimeError(f"{type(decoder).__name__} yielded a step that commits no token")
            start = len(out.tokens)
            out.tokens.extend(step.tokens)
            out.step_drafted.append(step.drafted)
            out.step_accepted.append(step.accepted)
            out.step_draft_forwards.append(step.draft_forwards)
            out.step_stationary.append(step.stationary)
            if start == 0:
                sync(device)
                out.ttft_s = time.perf_counter() - t0
            keep, reason = len(out.tokens), None
            hit = stopper.cut(out.tokens, start)
            if hit:
                keep, reason = hit
            if keep >= max_new_tokens and (reason is None or keep > max_new_tokens):
                keep, reason = max_new_tokens, "max_new_tokens"
            del out.tokens[keep:]
            out.step_tokens.append(len(out.tokens) - start)
            if reason:
                out.stop_reason = reason
                break
    finally:
        steps.close()
    sync(device)
    out.wall_time_s = time.perf_counter() - t0
    return out
