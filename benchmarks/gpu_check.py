"""The GPU check: run whenever a GPU is at hand (no network, only torch and transformers needed; ~5 minutes).

    bash benchmarks/gpu_check.sh                    # = python benchmarks/gpu_check.py --device cuda
    python benchmarks/gpu_check.py --device cpu --model tiny-random --limit 1 --max-new-tokens 8   # smoke run
1. Lossless on this device: every registered lossless method, on the eager and the compiled engine, reproduces
   AR on the same engine token for token on tiny fp32 models built from configs (two architectures).
2. The forward-cost curve (`harness profile`'s measure) of --model, eager and compiled: by default a
   Llama-7B-shaped model with random weights in bf16 (no checkpoint needed; the cost of a forward does not
   depend on the weights' values).
3. Our AR on each engine against `model.generate()` (dynamic and static cache) on the same model.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from harness.engine.generate import Stopper, generate, sync
from harness.engine.models import model_loader, tiny_random
from harness.orchestration.profile import format_table, measure
from methods import available_methods, get_method
from methods.engine import ENGINES, make_engine

LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
TINY = {"llama": dict(arch="llama", seed=2, initializer_range=0.1, tie_word_embeddings=True),
        "gemma3-mixed": dict(arch="gemma3_text", seed=0, sliding_window=8, head_dim=16, initializer_range=0.1,
                             layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True)}
OPTIONS = {"jacobi": {"block_size": "4"}, "lookahead": {"window": "3", "ngram": "3", "guess_set": "2"},
           "speculative": {"draft": "layerskip:1", "k": "4"}}


def big_model(name: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """`llama-7b-shape`: random weights in a Llama-2-7B-shaped model; anything else: the tiny seeded model."""
    if name != "llama-7b-shape":
        return tiny_random(seed=0)[0].to(device=device, dtype=dtype)
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA_7B), dtype=dtype)
    return model.eval()


def check_lossless(device: torch.device, max_new: int, engines) -> bool:
    lossless = sorted(n for n in available_methods() if n != "ar" and get_method(n).lossless)
    ok = True
    print(f"{'model':<14}{'engine':<10}{'method':<13}{'identical':>10}")
    for model_name, overrides in TINY.items():
        model, tok = tiny_random(**overrides)
        model = model.to(device)
        for kind in engines:
            engine = make_engine(kind, model, max_len=256, autotune=False)
            ar = get_method("ar")(model, engine=engine)
            ar.warm_up()
            for name in lossless:
                cls = get_method(name)
                d = cls(model, cls.parse_options(OPTIONS.get(name, {})), loader=model_loader(), engine=engine)
                d.warm_up()
                same = total = 0
                for prompt in ("def f(x):", "hello world", "abc abc abc"):
                    ids = tok(prompt, return_tensors="pt")["input_ids"].to(device)
                    ref = generate(ar, ids, max_new, Stopper(frozenset())).tokens
                    got = generate(d, ids, max_new, Stopper(frozenset())).tokens
                    same, total = same + (got == ref), total + 1
                ok &= same == total
                print(f"{model_name:<14}{kind:<10}{name:<13}{same:>6}/{total}", flush=True)
    return ok


def ar_vs_generate(model, device, max_new: int, engines, repeats: int = 3) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, 128), device=device)
    none = Stopper(frozenset())
    runs = {}
    for kind in engines:
        engine = make_engine(kind, model, max_len=128 + max_new + 8)
        ar = get_method("ar")(model, engine=engine)
        ar.warm_up()
        generate(ar, ids, 8, none)
        runs[f"ar-{kind}"] = lambda ar=ar: generate(ar, ids, max_new, none).tokens
    for static in (False, True):
        extra = {"cache_implementation": "static"} if static else {}
        runs["generate" + ("-static" if static else "")] = lambda extra=extra: model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new, min_new_tokens=max_new,
            pad_token_id=0, temperature=None, top_p=None, top_k=None, **extra)[0, ids.shape[1]:].tolist()
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up (generate-static compiles here)
    for _ in range(repeats):
        for name, fn in runs.items():
            sync(device)
            t0 = time.perf_counter()
            n = len(fn())
            sync(device)
            times[name].append(n / (time.perf_counter() - t0))
    print(f"{'decoder':<18}{'tokens/s (median of ' + str(repeats) + ')':>26}")
    for name, tps in times.items():
        print(f"{name:<18}{sorted(tps)[len(tps) // 2]:>26.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="llama-7b-shape", help="llama-7b-shape (random bf16 weights) or tiny-random")
    ap.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--limit", type=int, default=6, help="profile: the widest forward is 2**(limit-1) tokens")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, of: " + ", ".join(ENGINES))
    args = ap.parse_args(argv)
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    if not engines or set(engines) - set(ENGINES):
        ap.error(f"--engines {args.engines!r}: choose from {', '.join(ENGINES)}")
    device = torch.device(args.device)
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    import transformers

    print(f"gpu_check: {name}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"model {args.model} ({str(dtype).replace('torch.', '')})", flush=True)
    t0 = time.perf_counter()
    print("\n## 1. lossless: every lossless method == AR on the same engine (tiny fp32 models)")
    ok = check_lossless(device, max(args.max_new_tokens // 4, 8), engines)
    print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)

    model = big_model(args.model, device, dtype)
    widths = tuple(2 ** i for i in range(max(args.limit, 1)))
    print(f"\n## 2. forward cost of {args.model}: one forward of w tokens after 256 cached ones")
    table = measure(model, context=256, widths=widths, repeats=10, warmup=2, engines=engines, autotune=False,
                    progress=lambda msg: print(f"   compiling {msg}", flush=True))
    print(format_table(table))
    print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)

    print(f"\n## 3. our AR vs model.generate() on {args.model}, {args.max_new_tokens} new tokens")
    ar_vs_generate(model, device, args.max_new_tokens, engines)
    print(f"\ngpu_check: lossless {'OK' if ok else 'FAILED'}; {time.perf_counter() - t0:.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
