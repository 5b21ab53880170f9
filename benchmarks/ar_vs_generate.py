"""Is our AR baseline as fast as transformers' generate()? And what do Jacobi's steps buy on this machine?

    python benchmarks/ar_vs_generate.py [--model smollm2-135m] [--limit 10] [--max-new-tokens 128] [--repeats 2]
Measures, in one process on the same HumanEval prompts, tokens/s of the `ar` decoder and of greedy
`model.generate()` (alternating which runs first, after warm-up), checks that their outputs are identical,
and prints the ratio (ours / generate; must be >= 0.95). Then Jacobi's tokens/step and speedup vs `ar`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.engine.generate import generate, sync
from harness.engine.models import load_model
from harness.engine.session import RunConfig, build_decoder, prepare
from harness.evaluation.tasks import get_task


def time_generate(lm, p) -> tuple[list[int], float]:
    eos = sorted(p.stopper.eos_ids)
    sync(lm.device)
    t0 = time.perf_counter()
    out = lm.model.generate(p.input_ids, attention_mask=torch.ones_like(p.input_ids), do_sample=False,
                            max_new_tokens=p.max_new_tokens, eos_token_id=eos, pad_token_id=eos[0])
    sync(lm.device)
    return out[0, p.input_ids.shape[1]:].tolist(), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes over the prompts")
    ap.add_argument("--block-size", default="16", help="Jacobi block size")
    args = ap.parse_args()

    cfg = RunConfig(method="ar", task="humaneval", model=args.model, limit=args.limit, max_new_tokens=args.max_new_tokens)
    lm = load_model(cfg.model)
    prepared = prepare(lm, get_task("humaneval").requests(args.limit), cfg)
    ar, _ = build_decoder("ar", {}, lm.model)
    jacobi, _ = build_decoder("jacobi", {"block_size": args.block_size}, lm.model)
    print(f"model {args.model} on {lm.device} ({torch.get_num_threads()} threads), {len(prepared)} prompts, "
          f"{args.max_new_tokens} new tokens, {args.repeats} passes")

    # warm-up
    generate(ar, prepared[0].input_ids, 16, prepared[0].stopper)
    generate(jacobi, prepared[0].input_ids, 16, prepared[0].stopper)
    lm.model.generate(prepared[0].input_ids, do_sample=False, max_new_tokens=16)

    totals = {"ar": 0.0, "generate": 0.0, "jacobi": 0.0}
    tokens = {"ar": 0, "generate": 0, "jacobi": 0}
    jacobi_steps, mismatches, ratios = 0, 0, []
    for rep in range(args.repeats):
        for i, p in enumerate(prepared):
            runs = {}
            order = ["ar", "generate", "jacobi"] if (i + rep) % 2 == 0 else ["jacobi", "generate", "ar"]
            for name in order:
                if name == "generate":
                    runs[name] = time_generate(lm, p)
                else:
                    g = generate(ar if name == "ar" else jacobi, p.input_ids, p.max_new_tokens, p.stopper)
                    runs[name] = (g.tokens, g.wall_time_s)
                    if name == "jacobi":
                        jacobi_steps += len(g.step_tokens)
            if not (runs["ar"][0] == runs["generate"][0] == runs["jacobi"][0]):
                mismatches += 1
            for name, (toks, t) in runs.items():
                totals[name] += t
                tokens[name] += len(toks)
            ratios.append(runs["generate"][1] / runs["ar"][1])

    tps = {k: tokens[k] / totals[k] for k in totals}
    print(f"{'decoder':<10}{'tokens':>8}{'time_s':>9}{'tok/s':>8}")
    for k in totals:
        print(f"{k:<10}{tokens[k]:>8}{totals[k]:>9.2f}{tps[k]:>8.1f}")
    print(f"ar / generate tokens/s ratio: {tps['ar'] / tps['generate']:.3f} "
          f"(per-request median {statistics.median(ratios):.3f}; must be >= 0.95)")
    print(f"jacobi: {tokens['jacobi'] / jacobi_steps:.3f} tokens/step, speedup vs ar {totals['ar'] / totals['jacobi']:.3f}")
    print(f"outputs identical across ar, generate and jacobi: {len(prepared) * args.repeats - mismatches}"
          f"/{len(prepared) * args.repeats}")


if __name__ == "__main__":
    main()
