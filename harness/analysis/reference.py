"""The committed reference sweep's settings (`make results`, results/README.md), and the one line that says where
a run's settings differ from them, so that a figure measured otherwise is not read against the committed table.

    note = reference_note({"this run": differences({"engine": "eager", "max_new_tokens": "default"})})
Settings are leaderboard.settings() values (text); the cache follows from the engine.
"""
from __future__ import annotations

REFERENCE = {"engine": "compiled", "max_new_tokens": "256", "batch_size": "1"}
CACHE = {"eager": "dynamic KV cache", "compiled": "static KV cache"}
SWEEP = "--engine compiled (static KV cache), --max-new-tokens 256, batch size 1"


def engine_label(engine: str) -> str:
    """`compiled (static KV cache)`: the engine that made a number, and the cache it decodes on."""
    return f"{engine} ({CACHE[engine]})" if engine in CACHE else str(engine)


def differences(settings: dict) -> list[str]:
    """The settings (as `name value`) in which one run differs from the committed sweep."""
    out = []
    engine = str(settings.get("engine", "eager"))
    if engine != REFERENCE["engine"]:
        out.append(f"engine {engine_label(engine)}")
    budget = str(settings.get("max_new_tokens", "default"))
    if budget != REFERENCE["max_new_tokens"]:
        out.append("max new tokens: the task's default" if budget in ("default", "None") else f"max new tokens {budget}")
    batch = str(settings.get("batch_size", "1"))
    if batch != REFERENCE["batch_size"]:
        out.append(f"batch size {batch}")
    return out


def reference_note(named: dict[str, list[str]]) -> str | None:
    """One line: who differs from the committed sweep, and in what; None where nothing does."""
    parts = [f"{who}: {', '.join(dict.fromkeys(diffs))}" for who, diffs in named.items() if diffs]
    if not parts:
        return None
    return (f"note: the committed results (results/README.md) were measured with {SWEEP}; "
            f"not comparable with them, since measured otherwise: {'; '.join(parts)}")
