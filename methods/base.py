"""The one decoder interface every method implements.

A decoder is built from a model and its options, then `decode(input_ids, max_new_tokens)` yields one
`Step` per target-model forward pass. The harness owns the clock, stopping and recording; a decoder
never looks at EOS, stop strings or time.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from collections.abc import Callable, Iterator, Sequence

import torch

from methods.engine import Engine
from methods.registry import suggestion
from methods.specs import OptionError  # noqa: F401  (re-exported: decoders raise it)

class ModelLoader(Protocol):
    """Loads a second model (a CLLM checkpoint, a draft model) from a spec (alias, hub id, directory, .gguf) onto the
    device and dtype of the model given as `like`, and reads a trained checkpoint's card (its recipe and
    measurements; None for a model without one). The harness passes one in; decoders never import the harness."""

    def __call__(self, spec: str, like: torch.nn.Module) -> torch.nn.Module: ...

    def card(self, spec: str) -> dict | None: ...


@dataclass(frozen=True)
class AutoContext:
    """What a method may consult to resolve its `auto` options before a run (Decoder.resolve_auto): `cost(widths)`
    gives {w: t(w)/t(1)}, the cost of a w-token forward in one-token forwards on the run's model and engine (measured
    when asked), `card(spec)` a checkpoint's card, and `say` reports progress."""

    cost: Callable[[Sequence[int]], dict[int, float]]
    card: Callable[[str], dict | None]
    say: Callable[[str], None] = lambda message: None


@dataclass(frozen=True)
class Step:
    """What one target-model forward pass committed."""

    tokens: tuple[int, ...]  # committed token ids, at least one
    drafted: int = 0  # tokens proposed for verification in this forward
    accepted: int = 0  # of those, how many were accepted
    draft_forwards: int = 0  # forwards of a separate drafter spent on this step
    stationary: int = 0  # Jacobi: unverified guess tokens the forward left unchanged (CLLM's stationary tokens)


@dataclass(frozen=True)
class BatchStep:
    """What one target-model forward over a batch committed, row by row: a Step, or None for a row that
    committed nothing in this forward (it has reached its token budget)."""

    rows: tuple[Step | None, ...]


@dataclass(frozen=True)
class NoOptions:
    pass


def _convert(value: str, kind: Any, key: str) -> Any:
    if kind in (bool, "bool"):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise OptionError(f"option {key}={value!r}: expected true or false")
    for typ, name in ((int, "int"), (float, "float")):
        if kind in (typ, name):
            try:
                return typ(value)
            except ValueError:
                raise OptionError(f"option {key}={value!r}: expected a number ({name})") from None
    return value


class Decoder:
    """Base class: subclasses set `description`, `Options` (a frozen dataclass) and `decode`."""

    description: ClassVar[str] = ""
    lossless: ClassVar[bool] = True  # greedy output must equal AR's token for token
    Options: ClassVar[type] = NoOptions

    def __init__(self, model: torch.nn.Module, options: Any = None, loader: ModelLoader | None = None,
                 engine: Engine | None = None):
        self.model = model
        self.options = options if options is not None else self.Options()
        self.loader = loader
        self.engine = engine if engine is not None else Engine(model)  # eager unless the harness passes another

    @classmethod
    def tuning_space(cls) -> tuple[dict[str, str], ...]:
        """The option sets `harness tune` tries: each one's tokens/step on pilot questions over the cost of its widest
        forward. Empty: not tuned (nothing to size, or a step that is more than one target forward)."""
        return ()

    @classmethod
    def resolve_auto(cls, options: dict[str, str], ctx: AutoContext) -> tuple[dict[str, str], dict | None]:
        """`options` with every `auto` value replaced by a choice made from `ctx` (forward costs, checkpoint cards),
        and what the choice was made from (recorded in run.json); (options, None) where nothing is `auto`."""
        return options, None

    @classmethod
    def planned(cls, options: Any, card: Callable[[str], dict | None]) -> tuple[tuple[int, ...], float | None]:
        """For a plan without a model (`--dry-run`): the forward widths a run of `options` will use and the tokens/step
        it expects, from the options and `card(spec)`, a checkpoint's card; None where it cannot say."""
        return cls.forward_widths(options), None

    def card(self, spec: str) -> dict | None:
        """A checkpoint's card through the loader (None without a loader that reads cards)."""
        return self.loader.card(spec) if self.loader is not None and hasattr(self.loader, "card") else None

    def widths(self) -> tuple[int, ...]:
        """The widths of the forwards `decode` runs after the prefill (a compiled engine builds one graph for
        each, and pads a narrower forward to the next one). Empty: not known in advance."""
        return self.forward_widths(self.options)

    @classmethod
    def forward_widths(cls, options: Any) -> tuple[int, ...]:
        """`widths` from the options alone, with no model (what `--dry-run` plans with). Empty: not known in advance."""
        return ()

    def reserve(self, positions: int, fit: bool = False) -> bool:
        """Make room for a request of `positions` in every engine this decoder runs on (a CLLM checkpoint's and a
        draft model's are engines of their own); True when one changed size (then warm up again). fit=True sizes
        them to it (Engine.reserve)."""
        return self.engine.reserve(positions, fit)

    def warm_up(self, progress=None) -> float:
        """Compile every forward this decoder will run (an eager engine does nothing); seconds spent."""
        return self.engine.warm_up(self.widths(), progress=progress)

    def engines(self) -> dict[str, Engine]:
        """{role: engine} for every engine this decoder runs forwards on (recorded in run.json)."""
        return {"target": self.engine}

    def load_second_model(self, spec: str) -> torch.nn.Module:
        """A second model from `spec`, on this model's device and dtype, through the loader passed in."""
        if self.loader is None:
            raise ValueError(f"{type(self).__name__} needs a model loader for {spec!r}; build it with "
                             "loader=... (the harness passes its own)")
        return self.loader(spec, self.model)

    @classmethod
    def parse_options(cls, pairs: dict[str, str]) -> Any:
        """Build validated options from strings; unknown keys and bad values raise OptionError."""
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(pairs) - set(fields))
        if unknown:
            allowed = ", ".join(sorted(fields)) or "none"
            raise OptionError(f"unknown option {unknown[0]!r} for this method{suggestion(unknown[0], fields)} "
                              f"(allowed: {allowed})")
        values = {k: _convert(v, fields[k].type, k) for k, v in pairs.items()}
        try:
            return cls.Options(**values)
        except (TypeError, ValueError) as e:
            raise OptionError(str(e)) from None

    def decode(self, input_ids: torch.Tensor, max_new_tokens: int) -> Iterator[Step]:
        """input_ids: (1, T) on the model's device. Yields Steps until max_new_tokens are committed."""
        raise NotImplementedError

    def decode_batch(self, prompts: Sequence[torch.Tensor], max_new_tokens: int | Sequence[int]) -> Iterator[BatchStep]:
        """prompts: B tensors (1, T_i) on the model's device, decoded together; max_new_tokens: one budget for
        every row or one per row. Yields one BatchStep per target forward until every row has its budget.
        Greedy output of each row equals `decode`'s for that prompt (docs/batching.md)."""
        raise NotImplementedError(f"method {type(self).__name__} has no batched decoding (decode_batch)")

    @classmethod
    def batched(cls) -> bool:
        """Whether this method implements decode_batch."""
        return cls.decode_batch is not Decoder.decode_batch

    def warm_up_batch(self, batch_size: int, progress=None) -> float:
        """Compile every batched forward of `batch_size` rows (an eager engine does nothing); seconds spent."""
        return self.engine.warm_up_batch(batch_size, self.widths(), progress=progress)
