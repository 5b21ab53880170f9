"""What the compiled engine's static-cache size costs per forward (figures for docs/engine.md, "The cache's size").

    python benchmarks/cache_size.py [--model smollm2-135m] [--sizes 448,1024] [--context 250] [--widths 1,5]
                                    [--rounds 12] [--repeats 10] [--device cpu] [--dtype auto]
One compiled engine per cache size on the same model, each warmed up for every width; then `--rounds` rounds, each
timing `--repeats` forwards of every width after `--context` cached tokens on every engine, alternating which
engine goes first (so that drift of the machine falls on both alike). Prints the median per size and width, and
each size's cost over the first (the smallest). `--limit` and `--max-new-tokens` are accepted and ignored (the
benchmarks' common smoke-test interface).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's harness
from harness import HarnessError  # noqa: E402
from harness.engine.generate import sync  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.text import positive_ints  # noqa: E402
from methods.engine import make_engine  # noqa: E402


def ints(text: str) -> tuple[int, ...]:
    try:
        return positive_ints(text, "a list", "1,5")
    except HarnessError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sizes", type=ints, default=(448, 1024), help="static cache sizes (positions)")
    ap.add_argument("--context", type=int, default=250, help="tokens cached before each timed forward")
    ap.add_argument("--widths", type=ints, default=(1, 5))
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=10, help="timed forwards per round, width and size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--no-autotune", action="store_true", help="compile without max-autotune (quick, less faithful)")
    ap.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--max-new-tokens", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = list(args.sizes)  # sorted
    if sizes[0] < args.context + max(args.widths):
        ap.error(f"--sizes: {sizes[0]} positions cannot hold --context {args.context} + a {max(args.widths)}-token forward")
    lm = load_model(args.model, args.device, args.dtype, seed=0)
    engines = {n: make_engine("compiled", lm.model, max_len=n, autotune=not args.no_autotune) for n in sizes}
    for n, engine in engines.items():
        print(f"{n} positions: compiled widths {args.widths} in {engine.warm_up(args.widths):.0f} s", flush=True)
    vocab = lm.model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(0)
    context = torch.randint(0, vocab, (1, args.context), generator=g).to(lm.device)
    times = {(n, w): [] for n in sizes for w in args.widths}
    with torch.inference_mode():
        for r in range(args.rounds):
            for n in sizes if r % 2 == 0 else sizes[::-1]:
                engine = engines[n]
                for w in args.widths:
                    cache = engine.new_cache()
                    engine.forward(context, cache, keep=1)
                    x = torch.randint(0, vocab, (1, w), generator=g).to(lm.device)
                    engine.forward(x, cache, keep=w)  # untimed: the first call after a prefill
                    engine.rollback(cache, w)
                    for _ in range(args.repeats):
                        sync(lm.device)
                        t = time.perf_counter()
                        engine.forward(x, cache, keep=w)
                        sync(lm.device)
                        times[n, w].append(time.perf_counter() - t)
                        engine.rollback(cache, w)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{args.model}, forwards after {args.context} cached tokens, median of {args.rounds * args.repeats}:")
    print("| forward | " + " | ".join(f"{n} positions" for n in sizes) + " | " +
          " | ".join(f"{n} / {sizes[0]}" for n in sizes[1:]) + " |")
    print("|---" * (2 * len(sizes)) + "|")
    for w in args.widths:
        print(f"| {w} token{'s' if w > 1 else ''} | " + " | ".join(f"{med[n, w]:.1f} ms" for n in sizes) + " | " +
              " | ".join(f"{med[n, w] / med[sizes[0], w]:.2f}x" for n in sizes[1:]) + " |")
    if len(args.widths) > 1:
        lo, hi = min(args.widths), max(args.widths)
        print(f"t({hi})/t({lo}): " + ", ".join(f"{n} positions {med[n, hi] / med[n, lo]:.2f}" for n in sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
