"""Registry of decoding methods: a literal name -> "module:Class" table plus the `harness.methods` entry points.

    from methods import get_method, available_methods
    Jacobi = get_method("jacobi")          # a Decoder subclass
Third-party packages add `[project.entry-points."harness.methods"] name = "pkg.module:Class"`.
Importing this package does not import torch (`check_method` answers a typo at once); `get_method` does.
"""
from __future__ import annotations

from methods.registry import Registry, RegistryError, Spec
from methods.specs import OptionError

BUILTINS: dict[str, str] = {
    "ar": "methods.ar:AR",
    "jacobi": "methods.jacobi:Jacobi",
    "lookahead": "methods.lookahead:Lookahead",
    "speculative": "methods.speculative:Speculative",
    "cllm": "methods.cllm:CLLM",
}
ENTRY_POINT_GROUP = "harness.methods"
METHODS = Registry("method", BUILTINS, ENTRY_POINT_GROUP, "methods.base:Decoder", hint="see `harness methods`")

MethodError = RegistryError
MethodSpec = Spec

__all__ = ["BUILTINS", "Decoder", "MethodError", "MethodSpec", "OptionError", "Step", "available_methods", "check_method",
           "get_method"]


def __getattr__(name: str):  # Decoder and Step import torch: only when asked for
    if name in ("Decoder", "Step"):
        from methods import base

        return getattr(base, name)
    raise AttributeError(f"module 'methods' has no attribute {name!r}")


def available_methods() -> dict[str, Spec]:
    return METHODS.available()


def check_method(name: str) -> Spec:
    """The registered method `name`, without importing it; an unknown name is a MethodError with a suggestion."""
    return METHODS.spec(name)


def get_method(name: str):  # -> type[Decoder]
    return METHODS.get(name)
