"""A small name -> "module:Class" registry with entry points, used for methods and for drafters.

Built-ins are a literal table; third parties add entry points in the registry's group. Typos get a
suggestion; a requested entry that fails to import is a hard error naming it and its origin.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points


class RegistryError(LookupError):
    """Unknown name, or an entry that fails to load; the message says what to do."""


@dataclass(frozen=True)
class Spec:
    name: str
    target: str  # "module:Class"
    origin: str  # "builtin" or the distribution that provides the entry point


@dataclass(frozen=True)
class Registry:
    kind: str  # "method", "drafter": used in messages
    builtins: dict[str, str]
    group: str  # entry-point group
    base: type | str  # the class every entry must subclass, or its "module:Class" (imported only when one loads)
    hint: str = ""  # where to look, e.g. "see `harness methods`"

    def available(self) -> dict[str, Spec]:
        specs = {name: Spec(name, target, "builtin") for name, target in self.builtins.items()}
        for ep in entry_points(group=self.group):
            if ep.name in specs:  # built-ins win: a plugin cannot silently replace them
                continue
            dist = getattr(ep, "dist", None)
            specs[ep.name] = Spec(ep.name, ep.value, dist.name if dist else "entry point")
        return specs

    def load(self, spec: Spec) -> type:
        module_name, _, attr = spec.target.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except Exception as e:  # any import-time failure of a plugin is a hard, explained error
            raise RegistryError(f"{self.kind} {spec.name!r} ({spec.target}, from {spec.origin}) failed to load: "
                                f"{type(e).__name__}: {e}") from None
        base = self.base
        if isinstance(base, str):
            module_name, _, attr = base.partition(":")
            base = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(f"{self.kind} {spec.name!r} ({spec.target}) is not a subclass of "
                                f"{base.__module__}.{base.__name__}")
        return obj

    def spec(self, name: str) -> Spec:
        """The entry for `name`, without importing it (a typo gets a suggestion)."""
        specs = self.available()
        if name not in specs:
            hint = suggestion(name, specs)
            where = f"; {self.hint}" if self.hint else ""
            raise RegistryError(f"unknown {self.kind} {name!r}{hint} (available: {', '.join(sorted(specs))}{where})")
        return specs[name]

    def get(self, name: str) -> type:
        return self.load(self.spec(name))


def suggestion(name: str, choices, cutoff: float = 0.5) -> str:
    """"; did you mean 'x'?" for the closest of `choices` (difflib's ratio at least `cutoff`), or "" when none is."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""
