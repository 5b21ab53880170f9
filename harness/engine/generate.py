"""One timed request: drive a decoder's step stream, stop on EOS / stop strings / the token budget.

The harness owns the clock: the decoder never sees it. Each request is bracketed by a device sync and
`perf_counter`; a step that overshoots a stop condition is truncated, so every method's output is cut
at exactly the place AR's would be, and its drafted/accepted counts are clipped to match (`truncated_counts`).
`generate_batch` runs B requests as one batch (docs/batching.md) with the same per-row stopping.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch

from methods.base import Decoder, Step

STOP_MARGIN_CHARS = 8  # characters a stop-string check decodes before the ones it must see (Stopper._window)
REPEAT_RUN = 10  # an output holding one token this many times in a row counts as looping (repeat_share)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Stopper:
    """Where a generation ends: just after an EOS token, or at the first token whose text holds a stop string.

    `cut` is called once per step and costs O(new tokens): it decodes only a tail window of the tokens (see
    `_window`), never the whole output, so checking stop strings adds no per-step cost that grows with length.
    """

    eos_ids: frozenset[int]
    stop_strings: tuple[str, ...] = ()
    tokenizer: object = None  # needed only for stop strings

    def cut(self, tokens: list[int], start: int) -> tuple[int, str] | None:
        """If tokens[start:] ends the generation, return (length to keep, reason).

        tokens[:start] were checked by earlier calls (their text holds no stop string); tokens[start:] are new.
        """
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
        """The shortest prefix tokens[:j] (j >= start) whose text holds a stop string, decoding tokens[lo:] only.

        The text of tokens[:start] holds no stop string, so one in the text of tokens[:j] must overlap the
        text that tokens[start:j] changed: in the window, what follows its common prefix with the old text.
        """
        if "" in self.stop_strings:  # held by every text
            return max(start, 1)
        lo, old = self._window(tokens, start)

        def holds_new_stop(j: int) -> bool:
            text = self.tokenizer.decode(tokens[lo:j])
            same = len(os.path.commonprefix([old, text]))
            return any(text.find(s, max(0, same - len(s) + 1)) >= 0 for s in self.stop_strings)

        if not holds_new_stop(len(tokens)):
            return None
        for j in range(max(start, 1), len(tokens) + 1):
            if holds_new_stop(j):
                return j
        return len(tokens)

    def _window(self, tokens: list[int], start: int) -> tuple[int, str]:
        """(lo, text of tokens[lo:start]) with the text at least L + STOP_MARGIN_CHARS characters long (L: the
        longest stop string), or lo = 0.

        A stop string that the new tokens complete starts at most L - 1 characters before the text they change,
        which starts at most 3 characters before the end of the old text (a character split between tokens,
        spaces cleaned up); the window's own first characters may differ from the full text's (at most 3 for a
        character split at lo, or a SentencePiece leading space), which the margin keeps clear of any match
        that counts. L + margin tokens usually hold that many characters; 4 times as many always do when every
        token decodes to at least one byte (a character is at most 4 bytes of UTF-8).
        """
        need = max(map(len, self.stop_strings)) + STOP_MARGIN_CHARS
        for lookback in (need, 4 * need):
            lo = max(0, start - lookback)
            old = self.tokenizer.decode(tokens[lo:start])
            if lo == 0 or len(old) >= need:
                break
        return lo, old

    def text(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.stop_strings if s in text]
        return text[: min(cuts)] if cuts else text


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)  # tokens committed by each step, after truncation
    step_drafted: list[int] = field(default_factory=list)  # tokens proposed for verification, per step (clipped)
    step_accepted: list[int] = field(default_factory=list)  # of those, accepted, per step (clipped)
    step_draft_forwards: list[int] = field(default_factory=list)  # drafter forwards, per step
    step_stationary: list[int] = field(default_factory=list)  # Jacobi/CLLM stationary tokens, per step (clipped)

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
            if not out.tokens:
                sync(device)
                out.ttft_s = time.perf_counter() - t0
            if take(out, step, max_new_tokens, stopper, decoder):
                break
    finally:
        steps.close()
    sync(device)
    out.wall_time_s = time.perf_counter() - t0
    return out


def longest_run(tokens: list[int]) -> int:
    """The length of the longest run of one repeated token (0 for no tokens): a looping model commits many
    tokens per Jacobi step cheaply, so reports show the share of outputs with a run >= REPEAT_RUN."""
    best = run = 0
    for i, t in enumerate(tokens):
        run = run + 1 if i and t == tokens[i - 1] else 1
        best = max(best, run)
    return best


def take(out: Generation, step: Step, max_new_tokens: int, stopper: Stopper, decoder=None) -> bool:
    """Add one step's tokens to `out`, cut at a stop condition (recording the reason); True when it stopped."""
    if not step.tokens:
        raise RuntimeError(f"{type(decoder).__name__} yielded a step that commits no token")
    start = len(out.tokens)
    out.tokens.extend(step.tokens)
    keep, reason = len(out.tokens), None
    hit = stopper.cut(out.tokens, start)
    if hit:
        keep, reason = hit
    if keep >= max_new_tokens and (reason is None or keep > max_new_tokens):
        keep, reason = max_new_tokens, "max_new_tokens"
    del out.tokens[keep:]
    kept = len(out.tokens) - start
    drafted, accepted, stationary = truncated_counts(step, kept)
    out.step_tokens.append(kept)
    out.step_drafted.append(drafted)
    out.step_accepted.append(accepted)
    out.step_draft_forwards.append(step.draft_forwards)
    out.step_stationary.append(stationary)
    if reason:
        out.stop_reason = reason
    return reason is not None


def generate_batch(decoder: Decoder, prompts: list[torch.Tensor], max_new_tokens: list[int],
                   stoppers: list[Stopper]) -> tuple[list[Generation], float]:
    """Run B requests as one batch (decoder.decode_batch); returns each row's Generation and the batch's wall time.

    The batch is timed as a whole; each row stops on its own EOS / stop strings / budget and ignores the steps
    after that, and the batch ends when every row has stopped (static batching: a row that stopped keeps costing
    compute until then). Every row's ttft_s is the batch's first step (the prefill of every prompt)."""
    outs = [Generation() for _ in prompts]
    stopped = [False] * len(prompts)
    device = prompts[0].device
    sync(device)
    t0 = time.perf_counter()
    steps = decoder.decode_batch(prompts, max_new_tokens)
    try:
        for batch_step in steps:
            if len(batch_step.rows) != len(prompts):
                raise RuntimeError(f"{type(decoder).__name__} yielded a batch step of {len(batch_step.rows)} rows "
                                   f"for {len(prompts)} prompts")
            for b, step in enumerate(batch_step.rows):
                if step is None or stopped[b]:
                    continue
                if not outs[b].tokens:
                    sync(device)
                    outs[b].ttft_s = time.perf_counter() - t0
                stopped[b] = take(outs[b], step, max_new_tokens[b], stoppers[b], decoder)
            if all(stopped):
                break
    finally:
        steps.close()
    sync(device)
    wall = time.perf_counter() - t0
    for out in outs:
        out.wall_time_s = wall
    return outs, wall


def truncated_counts(step: Step, kept: int) -> tuple[int, int, int]:
    """(drafted, accepted, stationary) of a step of which only the first `kept` tokens are committed.

    A step that is not cut keeps its own counts. A cut step is counted as the decoder would have counted it
    had it known where the output ends (as a decoder that drafts no further than the token budget does):
    the kept tokens are accepted drafts followed by one bonus token, the last kept one, so
    accepted = min(accepted, kept - 1) and drafted = min(drafted, kept - 1) (the draft positions before
    the last kept token; none of them was rejected, or the step would have committed no token past it);
    stationary tokens lie past the bonus token, hence past the cut: 0. Drafter forwards are kept as they
    are: that work was done.
    """
    if kept >= len(step.tokens):
        return step.drafted, step.accepted, step.stationary
    return min(step.drafted, kept - 1), min(step.accepted, kept - 1), 0
