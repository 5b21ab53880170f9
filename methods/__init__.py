"""Registry of decoding methods: a literal name -> "module:Class" table plus the `harness.methods` entry points.

    from methods import get_method, available_methods
    Jacobi = get_method("jacobi")          # a Decoder subclass
Third-party packages add `[project.entry-points."harness.methods"] name = "pkg.module:Class"`.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from methods.base import Decoder, OptionError, Step

BUILTINS: dict[str, str] = {
    "ar": "methods.ar:AR",
    "jacobi": "methods.jacobi:Jacobi",
    "lookahead": "methods.lookahead:Lookahead",
}
ENTRY_POINT_GROUP = "harness.methods"

__all__ = ["BUILTINS", "Decoder", "MethodError", "MethodSpec", "OptionError", "Step", "available_methods", "get_method"]


class MethodError(LookupError):
    """Unknown method, or one that fails to load; the message says what to do."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    target: str  # "module:Class"
    origin: str  # "builtin" or the distribution that provides the entry point


def available_methods() -> dict[str, MethodSpec]:
    specs = {name: MethodSpec(name, target, "builtin") for name, target in BUILTINS.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in specs:  # built-ins win: a plugin cannot silently replace them
            continue
        dist = getattr(ep, "dist", None)
        specs[ep.name] = MethodSpec(ep.name, ep.value, dist.name if dist else "entry point")
    return specs


def _load(spec: MethodSpec) -> type[Decoder]:
    module_name, _, attr = spec.target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except Exception as e:  # any import-time failure of a plugin is a hard, explained error
        raise MethodError(
            f"method {spec.name!r} ({spec.target}, from {spec.origin}) failed to load: {type(e).__name__}: {e}"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, Decoder)):
        raise MethodError(f"method {spec.name!r} ({spec.target}) is not a subclass of methods.base.Decoder")
    return obj


def get_method(name: str) -> type[Decoder]:
    specs = available_methods()
    if name not in specs:
        close = difflib.get_close_matches(name, list(specs), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise MethodError(f"unknown method {name!r}{hint} (available: {', '.join(sorted(specs))}; see `harness methods`)")
    return _load(specs[name])
