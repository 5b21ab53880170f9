"""Our speculative decoding vs transformers' assisted generation, same settings, same prompts, one process.

    python benchmarks/speculative_vs_transformers.py --data-dir ../shared/data --limit 10 --max-new-tokens 128
1. `speculative -O draft=ngram -O k=K -O ngram=N` vs `generate(prompt_lookup_num_tokens=K, max_matching_ngram_size=N)`;
2. `speculative -O draft=DIR -O k=K` vs `generate(assistant_model=..., num_assistant_tokens=K, constant schedule,
   no confidence early-stop)`, where DIR is a draft model made here: the target's first L layers saved as a model.
Prints tokens/s of each, the ratio (ours / transformers, must be >= 1.0) and how many outputs are identical.
GSM8K test questions from --data-dir, else $HARNESS_DATA_DIR, else ../shared/data.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM

from compare_methods import default_data_dir, gsm8k_requests  # a sibling script: run as python benchmarks/...
from harness.engine.generate import generate, sync
from harness.engine.models import load_model
from harness.engine.session import RunConfig, build_decoder, prepare
from methods.drafters import truncated_view


def hf_generate(lm, p, **kwargs):
    eos = sorted(p.stopper.eos_ids)
    sync(lm.device)
    t0 = time.perf_counter()
    out = lm.model.generate(p.input_ids, attention_mask=torch.ones_like(p.input_ids), do_sample=False,
                            max_new_tokens=p.max_new_tokens, eos_token_id=eos, pad_token_id=eos[0], **kwargs)
    sync(lm.device)
    return out[0, p.input_ids.shape[1]:].tolist(), time.perf_counter() - t0


def duel(lm, prepared, ours, theirs: dict, label: str):
    generate(ours, prepared[0].input_ids, 16, prepared[0].stopper)  # warm-up both
    hf_generate(lm, prepared[0], **theirs)
    t_ours = t_hf = 0.0
    n_ours = n_hf = same = steps = drafted = accepted = 0
    for i, p in enumerate(prepared):
        for side in (("ours", "hf") if i % 2 == 0 else ("hf", "ours")):
            if side == "ours":
                g = generate(ours, p.input_ids, p.max_new_tokens, p.stopper)
                toks_ours, t = g.tokens, g.wall_time_s
                t_ours, n_ours = t_ours + t, n_ours + len(g.tokens)
                steps, drafted, accepted = steps + len(g.step_tokens), drafted + g.drafted, accepted + g.accepted
            else:
                toks_hf, t = hf_generate(lm, p, **theirs)
                t_hf, n_hf = t_hf + t, n_hf + len(toks_hf)
        same += toks_ours == toks_hf
    print(f"{label}: ours {n_ours / t_ours:.1f} tok/s ({n_ours / steps:.2f} tok/step, acceptance "
          f"{accepted / max(drafted, 1):.2f}), transformers {n_hf / t_hf:.1f} tok/s, "
          f"ratio {(n_ours / t_ours) / (n_hf / t_hf):.3f}, identical outputs {same}/{len(prepared)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--ngram", type=int, default=2)
    ap.add_argument("--draft-layers", type=int, default=6,
                    help="layers of the target kept in the draft model (at most all but one)")
    args = ap.parse_args(argv)

    lm = load_model(args.model, args.device, args.dtype)
    draft_layers = min(args.draft_layers, lm.model.config.num_hidden_layers - 1)
    cfg = RunConfig(method="ar", model=args.model, max_new_tokens=args.max_new_tokens)
    prepared = prepare(lm, gsm8k_requests(args.data_dir, args.limit), cfg)
    print(f"model {args.model}, {len(prepared)} GSM8K questions, {args.max_new_tokens} new tokens, k={args.k}", flush=True)

    ours, _ = build_decoder("speculative", {"draft": "ngram", "k": str(args.k), "ngram": str(args.ngram)}, lm.model)
    duel(lm, prepared, ours, {"prompt_lookup_num_tokens": args.k, "max_matching_ngram_size": args.ngram},
         f"prompt lookup (k={args.k}, ngram={args.ngram})")

    with tempfile.TemporaryDirectory() as draft_dir:
        truncated_view(lm.model, draft_layers).save_pretrained(draft_dir)
        lm.tokenizer.save_pretrained(draft_dir)
        ours, _ = build_decoder("speculative", {"draft": draft_dir, "k": str(args.k)}, lm.model)
        assistant = AutoModelForCausalLM.from_pretrained(draft_dir, dtype=lm.dtype).to(lm.device).eval()
        duel(lm, prepared, ours, {"assistant_model": assistant, "num_assistant_tokens": args.k,
                                  "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.0},
             f"draft model (first {draft_layers} of the target's {lm.model.config.num_hidden_layers} layers, k={args.k})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
