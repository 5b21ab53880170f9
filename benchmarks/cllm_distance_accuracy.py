"""How well does a model predict past a wrong token? The quantity CLLM training must raise.

    python benchmarks/cllm_distance_accuracy.py --data traj.jsonl --first 40 --last 48 smollm2-135m ckpt/ ...
For every Jacobi state of the chosen samples of a trajectory file, takes the first wrong token and the
tokens after it (distance d = 1..--horizon), and counts how often the model's argmax at each is the fixed
point's next token, exactly as Jacobi verification would. Distance 1 is what decides whether a Jacobi
step commits more than one token. Also prints the forward cost of 1 and n+1 tokens (--timing), which
sets the tokens/step that a speedup needs on this machine. Use samples the checkpoint was not trained on.
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from harness.cllm.train import group_samples, pack
from harness.cllm.trajectories import read_trajectories
from harness.engine.models import load_model
from methods.kv import forward, new_cache, rollback


@torch.inference_mode()
def accuracy_by_distance(model, samples, horizon: int) -> tuple[list[float], int]:
    hits, counts = [0] * horizon, [0] * horizon
    for sample in samples:
        b = pack(sample, "global", random.Random(0), states_per_block=0, horizon=horizon)
        logits = model(input_ids=b["input_ids"][None], position_ids=b["position_ids"][None],
                       attention_mask=b["mask"][None, None]).logits[0]  # (L, V)
        target = b["input_ids"][b["teacher_index"] + 1]  # the answer token each student position must predict
        right = (logits[b["student_index"]].argmax(-1) == target).tolist()
        prev, d = None, 0
        for i, ok in zip(b["student_index"].tolist(), right):
            same_state = prev == i - 1 and bool(b["mask"][i, i - 1])  # a state's tokens see each other
            d, prev = (d + 1 if same_state else 0), i
            hits[d] += ok
            counts[d] += 1
    return [h / max(c, 1) for h, c in zip(hits, counts)], counts[0]


@torch.inference_mode()
def forward_ms(model, width: int, context: int = 200, reps: int = 10) -> float:
    cache = new_cache(model)
    forward(model, torch.randint(100, 20000, (1, context)), cache, keep=1)
    x = torch.randint(100, 20000, (1, width))
    times = []
    for _ in range(reps + 3):
        t = time.perf_counter()
        forward(model, x, cache, keep=width)
        times.append(time.perf_counter() - t)
        rollback(cache, width)
    return 1000 * sorted(times[3:])[reps // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="base model and/or CLLM checkpoints")
    ap.add_argument("--data", required=True, help="trajectory file (harness cllm collect)")
    ap.add_argument("--first", type=int, default=0, help="first sample (in file order) to use")
    ap.add_argument("--last", type=int, default=8, help="one past the last sample to use")
    ap.add_argument("--horizon", type=int, default=4)
    ap.add_argument("--timing", action="store_true", help="also time forwards of 1 and block+1 tokens")
    args = ap.parse_args()
    header, records, _ = read_trajectories(args.data)
    samples = group_samples(records)[args.first: args.last]
    for name in args.models:
        lm = load_model(name)
        acc, n = accuracy_by_distance(lm.model, samples, args.horizon)
        line = "  ".join(f"d{d + 1} {a:.3f}" for d, a in enumerate(acc))
        print(f"{name}: {len(samples)} samples, {n} states: argmax right at {line}", flush=True)
    if args.timing:
        w = header["block_size"] + 1
        one, block = forward_ms(lm.model, 1), forward_ms(lm.model, w)
        print(f"forward over a cached 200-token prompt: 1 token {one:.1f} ms, {w} tokens {block:.1f} ms "
              f"(x{block / one:.2f}): a 1.3x speedup needs {1.3 * block / one:.2f} tokens/step")


if __name__ == "__main__":
    main()
