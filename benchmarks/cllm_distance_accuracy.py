"""How well does a model predict past a wrong token? The quantity CLLM training must raise.

    python benchmarks/cllm_distance_accuracy.py --data traj.jsonl --first 40 --limit 8 \
        --model smollm2-135m --model ckpt/ [--timing]
For every Jacobi state of the chosen samples of a trajectory file, takes the first wrong token and the
tokens after it (distance d = 1..--horizon), and counts how often the model's argmax at each is the fixed
point's next token, exactly as Jacobi verification would. Distance 1 is what decides whether a Jacobi
step commits more than one token. Use samples the checkpoint was not trained on: without --data, the
first model's trajectories are collected here from GSM8K *test* questions (--data-dir, else
$HARNESS_DATA_DIR, else ../shared/data; --limit questions, --max-new-tokens, --block-size). --timing also
prints the cost of a 1-token and a (block + 1)-token forward (harness.orchestration.profile) and the tokens/step a 1.3x
speedup needs on this machine. Models default to smollm2-135m and the shipped smollm2-135m-cllm.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


from harness.cllm.study import accuracy_by_distance
from harness.cllm.train import group_samples
from harness.cllm.trajectories import CollectConfig, collect, read_trajectories
from harness.engine.models import load_model
from harness.orchestration.profile import measure


def held_out_trajectories(args, folder: str) -> str:
    """Trajectories of the first model on the first --limit GSM8K test questions (never trained on)."""
    out = str(Path(folder) / "trajectories.jsonl")
    collect(CollectConfig(out=out, model=args.model[0], task="gsm8k", split="test", data_dir=args.data_dir,
                          limit=args.first + args.limit, block_size=args.block_size,
                          max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype), echo=print)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="base model or CLLM checkpoint, repeatable "
                    "(default: smollm2-135m and smollm2-135m-cllm)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--data", help="trajectory file (harness cllm collect); default: collect held-out ones here")
    ap.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR") or "../shared/data",
                    help="GSM8K for collecting (without --data)")
    ap.add_argument("--first", type=int, default=0, help="first sample (in file order) to use")
    ap.add_argument("--limit", type=int, default=8, help="samples to use")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="answer length when collecting")
    ap.add_argument("--block-size", type=int, default=16, help="Jacobi block size when collecting")
    ap.add_argument("--horizon", type=int, default=4)
    ap.add_argument("--timing", action="store_true", help="also time forwards of 1 and block+1 tokens")
    args = ap.parse_args(argv)
    args.model = args.model or ["smollm2-135m", "smollm2-135m-cllm"]

    with tempfile.TemporaryDirectory() as tmp:
        header, records, _ = read_trajectories(args.data or held_out_trajectories(args, tmp))
    samples = group_samples(records)[args.first: args.first + args.limit]
    for name in args.model:
        lm = load_model(name, args.device, args.dtype)
        acc, n = accuracy_by_distance(lm.model, samples, args.horizon)
        line = "  ".join(f"d{d + 1} {a:.3f}" for d, a in enumerate(acc))
        print(f"{name}: {len(samples)} samples, {n} states: argmax right at {line}", flush=True)
    if args.timing:
        w = header["block_size"] + 1
        cost = measure(lm.model, context=200, widths=(1, w), repeats=10).set_index("width")["ms_median"]
        print(f"forward over a cached 200-token prompt: 1 token {cost[1]:.1f} ms, {w} tokens {cost[w]:.1f} ms "
              f"(x{cost[w] / cost[1]:.2f}): a 1.3x speedup needs {1.3 * cost[w] / cost[1]:.2f} tokens/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
