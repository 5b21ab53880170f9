"""Registry of decoding methods: a literal name -> "module:Class" table plus the `harness.methods` entry points.

    from methods import get_method, available_methods
    Jacobi = get_method("jacobi")          # a Decoder subclass
Third-party packages add `[project.entry-points."harness.methods"] name = "pkg.module:Class"`.
"""
from __future__ import annotations

from methods.base import Decoder, OptionError, Step
from methods.registry import Registry, RegistryError, Spec

BUILTINS: dict[str, str] = {
    "ar": "methods.ar:AR",
    "jacobi": "methods.jacobi:Jacobi",
    "lookahead": "methods.lookahead:Lookahead",
    "speculative": "methods.speculative:Speculative",
    "cllm": "methods.cllm:CLLM",
}
ENTRY_POINT_GROUP = "harness.methods"
METHODS = Registry("method", BUILTINS, ENTRY_POINT_GROUP, Decoder, hint="see `harness methods`")

MethodError = RegistryError
MethodSpec = Spec

__all__ = ["BUILTINS", "Decoder", "MethodError", "MethodSpec", "OptionError", "Step", "available_methods", "get_method"]


def available_methods() -> dict[str, Spec]:
    return METHODS.available()


def get_method(name: str) -> type[Decoder]:
    return METHODS.get(name)
