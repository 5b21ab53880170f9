"""Compare several methods/option sets against AR in one process, on the same GSM8K test questions.

    python benchmarks/compare_methods.py --data-dir ../shared/data --limit 20 --max-new-tokens 256 \
        --spec lookahead:window=4,ngram=3,guess_set=4 --spec jacobi --spec speculative:draft=ngram [--engine compiled]
For each question every spec and AR run back to back (the order rotates per question), after warm-up.
Prints tokens/step, acceptance rate (accepted / drafted tokens), tokens/s, speedup (ratio of total
times vs AR) and how many outputs are token-identical to AR's. Without --spec: jacobi. The data directory
is --data-dir, else $HARNESS_DATA_DIR, else ../shared/data (the file read is gsm8k/test.jsonl). Every decoder,
AR included, runs on --engine (eager, or compiled: its graphs are compiled before the first timed request).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.engine.generate import generate
from harness.engine.models import load_model
from harness.engine.session import Request, RunConfig, build_decoder, prepare
from methods.engine import ENGINES, make_engine
from methods.specs import parse_specs, spec_text


def default_data_dir() -> str:
    return os.environ.get("HARNESS_DATA_DIR") or "../shared/data"  # as the harness CLI's --data-dir


def gsm8k_requests(data_dir: str, limit: int) -> list[Request]:
    path = Path(data_dir) / "gsm8k" / "test.jsonl"
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist; pass --data-dir (the folder holding gsm8k/test.jsonl)")
    rows = [json.loads(line) for line in path.read_text().splitlines()[:limit]]
    return [Request(doc_id=f"gsm8k/{i}", prompt=f"Question: {r['question']}\nAnswer:",
                    chat_prompt=f"{r['question']}\nSolve it step by step.") for i, r in enumerate(rows)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--spec", action="append", help="method[:key=value,...], repeatable (default: jacobi)")
    ap.add_argument("--engine", choices=ENGINES, default="eager")
    args = ap.parse_args(argv)

    lm = load_model(args.model, args.device, args.dtype)
    cfg = RunConfig(method="ar", model=args.model, max_new_tokens=args.max_new_tokens)
    prepared = prepare(lm, gsm8k_requests(args.data_dir, args.limit), cfg)
    longest = max(p.input_ids.shape[1] + p.max_new_tokens for p in prepared)
    engine = make_engine(args.engine, lm.model, max_len=longest + 64)
    decoders = {"ar": build_decoder("ar", {}, lm.model, engine=engine)[0]}
    for spec in parse_specs(args.spec or ["jacobi"], flag="--spec"):
        decoders[spec_text(spec)] = build_decoder(spec[0], dict(spec[1]), lm.model, engine=engine)[0]
    print(f"model {args.model}, {len(prepared)} GSM8K test questions, {args.max_new_tokens} new tokens, "
          f"{len(decoders)} decoders, {args.engine} engine", flush=True)
    for name, d in decoders.items():  # warm-up: compile every width (compiled engine), then one short request
        seconds = d.warm_up(progress=lambda msg, name=name: print(f"  compiling {name}: {msg}", flush=True))
        generate(d, prepared[0].input_ids, 16, prepared[0].stopper)
        if seconds:
            print(f"  {name}: warm-up {seconds:.1f} s", flush=True)

    stats = {k: dict(time=0.0, tokens=0, steps=0, drafted=0, accepted=0, draft_forwards=0, same=0) for k in decoders}
    names = list(decoders)
    for i, p in enumerate(prepared):
        order = names[i % len(names):] + names[: i % len(names)]
        outs = {}
        for k in order:
            g = generate(decoders[k], p.input_ids, p.max_new_tokens, p.stopper)
            s = stats[k]
            s["time"] += g.wall_time_s
            s["tokens"] += len(g.tokens)
            s["steps"] += len(g.step_tokens)
            s["drafted"] += g.drafted
            s["accepted"] += g.accepted
            s["draft_forwards"] += g.draft_forwards
            outs[k] = g.tokens
        for k in names:
            stats[k]["same"] += outs[k] == outs["ar"]
        print(f"  {i + 1}/{len(prepared)} done", flush=True)

    print(f"{'spec':<44}{'tok/step':>9}{'accept':>8}{'drafts/step':>12}{'tok/s':>8}{'speedup':>9}{'same':>6}")
    for k, s in stats.items():
        acc = s["accepted"] / s["drafted"] if s["drafted"] else float("nan")
        print(f"{k:<44}{s['tokens'] / s['steps']:>9.2f}{acc:>8.2f}{s['draft_forwards'] / s['steps']:>12.2f}"
              f"{s['tokens'] / s['time']:>8.1f}{stats['ar']['time'] / s['time']:>9.2f}{s['same']:>4}/{len(prepared)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
