"""Method specs as text, in one place: `METHOD[:key=value,...]` (bench --methods, benchmark --spec), `key=value`
pairs (-O), and the canonical option text of records and the leaderboard.

    parse_specs(["jacobi,speculative:draft=layerskip:4,k=3"])  # (("jacobi", ()), ("speculative", (("draft", ...
    format_options({"k": 3, "draft": "ngram"})                  # "draft=ngram,k=3"
Bad text raises methods.base.OptionError with a one-line message.
"""
from __future__ import annotations

import re


class OptionError(ValueError):
    """A bad `-O key=value` option; the message says what is allowed."""

MethodSpec = tuple[str, tuple[tuple[str, str], ...]]  # (name, ((key, value), ...))


def parse_pairs(pairs, flag: str = "-O", given: dict[str, str] | None = None) -> dict[str, str]:
    """["block_size=16", "init=repeat"] -> {"block_size": "16", "init": "repeat"}, added to `given`'s options.
    A key given twice is refused: which of the two values was meant is the user's to say."""
    out = dict(given or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{flag} {pair!r}: options are written key=value, e.g. {flag} block_size=16")
        if key.strip() in out:
            raise OptionError(f"option {key.strip()!r} is given twice ({key.strip()}={out[key.strip()]} and "
                              f"{key.strip()}={value.strip()}); give it once")
        out[key.strip()] = value.strip()
    return out


def parse_specs(values, flag: str = "--methods") -> tuple[MethodSpec, ...]:
    """`METHOD[:k=v,...]` specs, comma-separated and/or repeated: a comma item `k=v` (no `:` before its `=`)
    is one more option of the spec before it; anything else starts a new spec. So
    "jacobi,speculative:draft=layerskip:4,k=3" is jacobi and speculative with draft=layerskip:4 and k=3.
    A spec given twice is kept once."""
    specs: list[tuple[str, dict]] = []
    for value in values:
        for item in (i.strip() for i in value.split(",")):
            if not item:
                continue
            key, eq, _ = item.partition("=")
            if eq and ":" not in key:  # k=v: an option of the spec before it
                if not specs:
                    raise OptionError(f"{flag} {value!r}: option {item!r} comes before any method")
                specs[-1] = (specs[-1][0], parse_pairs([item], flag, specs[-1][1]))
                continue
            name, _, first = item.partition(":")
            if not name or (first and "=" not in first):
                raise OptionError(f"{flag} {value!r}: write each method as METHOD or METHOD:key=value,...")
            specs.append((name.strip(), parse_pairs([first], flag) if first else {}))
    return tuple(dict.fromkeys((name, tuple(opts.items())) for name, opts in specs))


def parse_method(text: str, pairs=()) -> tuple[str, dict[str, str]]:
    """`harness run`'s method: `--method METHOD[:k=v,...]` and its `-O k=v` pairs, as (name, options); a key
    given both ways, or twice, is refused."""
    specs = parse_specs([text], "--method")
    if len(specs) != 1:
        raise OptionError(f"--method {text!r}: one method per run (`harness bench --methods` runs several)")
    name, opts = specs[0]
    return name, parse_pairs(pairs, "-O", dict(opts))


def spec_text(spec: MethodSpec) -> str:
    """The spec back as `METHOD[:k=v,...]`, in its own option order."""
    name, opts = spec
    return name + (":" + ",".join(f"{k}={v}" for k, v in opts) if opts else "")


def format_options(options: dict) -> str:
    """Canonical option text: `k=v` sorted by key and comma-joined (what run records and the leaderboard show)."""
    return ",".join(f"{k}={v}" for k, v in sorted(options.items()))


def parse_options(text: str) -> dict[str, str]:
    """format_options' text back to a dict (a value may itself hold commas: `draft=layerskip:4,k=3`)."""
    parts = re.split(r",(?=[A-Za-z_]\w*=)", text) if text else []
    return dict(p.split("=", 1) for p in parts)
