"""Forward-cost profile: what one forward of w new tokens costs after a cached context of C tokens, relative to
one token, on this hardware. A parallel method whose forwards are w tokens wide beats AR only if it commits
more than t(w)/t(1) tokens per step (`break_even_tokens_per_step`).

    table = measure(lm.model, context=256, widths=(1, 2, 4, 8, 16, 32), repeats=20)   # a DataFrame
    harness profile --model smollm2-135m     # writes results/local/profile/<hardware>--<model>.{csv,json,png}
    harness profile --engines eager,compiled # both engines side by side (compiling takes minutes per width)
"""
from __future__ import annotations

import io
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from harness import LOCAL_DIR, HarnessError
from harness.text import positive_ints
from harness.engine.generate import sync

DEFAULT_WIDTHS = (1, 2, 4, 8, 16, 32)
COLUMNS = ["engine", "width", "ms_median", "ms_p10", "ms_p90", "break_even_tokens_per_step", "vs_first_engine_w1"]


def parse_widths(text: str) -> tuple[int, ...]:
    """"1,2,4" -> (1, 2, 4), sorted and unique; anything but positive integers is a HarnessError."""
    return positive_ints(text, "--widths", "1,2,4,8 (tokens per forward)")


@dataclass(frozen=True)
class ProfileConfig:
    model: str = "smollm2-135m"
    context: int = 256  # C: tokens already in the cache before each timed forward
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    device: str = "auto"
    dtype: str = "auto"
    repeats: int = 20  # timed forwards per width
    warmup: int = 3  # untimed forwards per width first
    out: str = LOCAL_DIR + "/profile"  # the committed reference's profile (results/profile) is `make results`'s
    seed: int = 0
    engines: tuple[str, ...] = ("eager",)  # methods.engine kinds, measured in turn on the same model

    def __post_init__(self):
        if self.context < 1:
            raise HarnessError(f"--context must be at least 1 token (got {self.context})")
        if self.repeats < 1:
            raise HarnessError(f"--repeats must be at least 1 (got {self.repeats})")
        if self.warmup < 0:
            raise HarnessError(f"warmup must be 0 or more (got {self.warmup})")
        if not self.widths or min(self.widths) < 1:
            raise HarnessError(f"every width must be a positive integer (got {self.widths})")
        from methods.engine import ENGINES

        bad = [e for e in self.engines if e not in ENGINES]
        if bad or not self.engines:
            raise HarnessError(f"--engines {','.join(self.engines)!r}: choose from {', '.join(ENGINES)}")


@torch.inference_mode()
def measure(model: torch.nn.Module, context: int, widths=DEFAULT_WIDTHS, repeats: int = 20, warmup: int = 3,
            seed: int = 0, engines=("eager",), progress=None, autotune: bool = True) -> pd.DataFrame:
    """One row per engine and width: the median (and 10th/90th percentile) time of one forward of `width` tokens
    after `context` cached tokens, t(width)/t(1) on the same engine, and t(width) over the first engine's t(1).
    Every timed forward runs on the same prefilled cache and is rolled back after; widths take turns (rotating
    order) so that a noisy moment hits them all alike. A compiled engine compiles every width first (untimed)."""
    from methods.engine import make_engine

    device = next(model.parameters()).device
    widths = sorted(set(widths) | {1})  # the ratio needs t(1)
    vocab = model.config.get_text_config().vocab_size
    rows = []
    for name in engines:
        gen = torch.Generator().manual_seed(seed)  # the same tokens for every engine
        draw = lambda n, gen=gen: torch.randint(0, vocab, (1, n), generator=gen).to(device)  # noqa: E731
        engine = make_engine(name, model, max_len=context + max(widths), autotune=autotune)
        engine.warm_up(widths, progress=progress)
        cache = engine.new_cache()  # recording: every timed forward is rolled back
        engine.forward(draw(context), cache, keep=1)  # (1, C) prefill
        inputs = {w: draw(w) for w in widths}  # (1, w) each
        times = {w: [] for w in widths}
        for r in range(warmup + repeats):
            shift = r % len(widths)
            for w in widths[shift:] + widths[:shift]:
                sync(device)
                t0 = time.perf_counter()
                engine.forward(inputs[w], cache, keep=w)  # logits for every position, as a verifying forward needs
                sync(device)
                if r >= warmup:
                    times[w].append(time.perf_counter() - t0)
                engine.rollback(cache, w)
        for w in widths:
            ms = [1000 * t for t in times[w]]
            q = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else [ms[0]] * 9
            rows.append({"engine": name, "width": w, "ms_median": statistics.median(ms), "ms_p10": q[0], "ms_p90": q[-1]})
    table = pd.DataFrame(rows, columns=COLUMNS[:5])
    one = table[table["width"] == 1].set_index("engine")["ms_median"]
    return table.assign(break_even_tokens_per_step=table["ms_median"] / table["engine"].map(one),
                        vs_first_engine_w1=table["ms_median"] / one[engines[0]])


def run_profile(cfg: ProfileConfig, progress=None) -> tuple[pd.DataFrame, dict, dict[str, Path]]:
    """Load the model, measure, write <out>/<hardware>--<model>.csv, .json (conditions) and .png.
    Returns (table, conditions, {"csv"|"json"|"png": path})."""
    from harness.engine.models import load_model
    from harness.analysis.plots import slug
    from harness.engine.provenance import hardware, versions
    from harness.engine.records import write_atomic

    lm = load_model(cfg.model, cfg.device, cfg.dtype, seed=cfg.seed)
    longest = cfg.context + max(cfg.widths)
    if longest > lm.context_length:
        raise HarnessError(f"--context {cfg.context} + the widest forward ({max(cfg.widths)}) = {longest} tokens "
                           f"exceeds the context length of {cfg.model} ({lm.context_length})")
    table = measure(lm.model, cfg.context, cfg.widths, cfg.repeats, cfg.warmup, cfg.seed, cfg.engines, progress)
    hw = hardware(lm.device)
    conditions = {"hardware": hw, "model": cfg.model, "model_info": lm.describe(), "dtype": str(lm.dtype).replace("torch.", ""),
                  "device": str(lm.device), "context": cfg.context, "repeats": cfg.repeats, "warmup": cfg.warmup,
                  "engines": list(cfg.engines),
                  "created": time.strftime("%Y-%m-%d %H:%M"), "versions": versions(),
                  "definition": "t(w) = median time of one forward of w new tokens after `context` cached tokens "
                                "(device-synced, perf_counter); break_even_tokens_per_step = t(w) / t(1) on the "
                                "same engine; vs_first_engine_w1 = t(w) / t(1) of the first engine listed"}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{slug(hw['label'])}--{slug(cfg.model)}"
    paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
    write_atomic(paths["csv"], table.to_csv(index=False, float_format="%.4f"))
    write_atomic(paths["json"], json.dumps(conditions, indent=2, default=str) + "\n")
    write_atomic(paths["png"], plot(table, conditions))
    return table, conditions, paths


def profile_for(folder: str | Path, label: str, model: str) -> Path | None:
    """The CSV in `folder` that `harness profile` wrote for `model` on the hardware labelled `label` (read from each
    profile's .json, never from file dates or names); None when this hardware has none there."""
    for meta in sorted(Path(folder).glob("*.json")):
        try:
            cond = json.loads(meta.read_text())
            found = cond["hardware"]["label"] == label and cond["model"] == model
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a profile's conditions file
        if found and meta.with_suffix(".csv").is_file():
            return meta.with_suffix(".csv")
    return None


def profile_label(csv: str | Path) -> str | None:
    """The hardware label a profile CSV was measured on (from the .json beside it), or None when unknown."""
    try:
        return json.loads(Path(csv).with_suffix(".json").read_text())["hardware"]["label"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plot(table: pd.DataFrame, conditions: dict) -> bytes:
    """PNG bytes: ms per forward and t(w)/t(1) against w, one line per engine, with 10th-90th percentile bars."""
    from harness.analysis.plots import plt  # the Agg backend: files only

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, part in table.groupby("engine", sort=False):
        w = part["width"]
        err = [part["ms_median"] - part["ms_p10"], part["ms_p90"] - part["ms_median"]]
        left.errorbar(w, part["ms_median"], yerr=err, marker="o", capsize=3, label=name)
        one = part.loc[w == 1, "ms_median"].iloc[0]
        right.errorbar(w, part["break_even_tokens_per_step"], yerr=[e / one for e in err], marker="o", capsize=3,
                       label=f"{name}: t(w) / t(1)")
    w = sorted(table["width"].unique())
    right.plot(w, w, ls=":", color="grey", label="t(w) = w t(1)")
    left.set(xscale="log", xlabel="tokens per forward (w)", ylabel="ms per forward (median, p10-p90)")
    right.set(xscale="log", yscale="log", xlabel="tokens per forward (w)",
              ylabel="tokens/step needed to break even with AR")
    for ax in (left, right):
        ax.set_xticks(list(w), [str(x) for x in w])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Forward cost after {conditions['context']} cached tokens: {conditions['model']} "
                 f"({conditions['dtype']}) on {conditions['hardware']['label']}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def format_table(table: pd.DataFrame) -> str:
    """The profile as plain text for the terminal."""
    first = table["engine"].iloc[0]
    lines = [f"{'engine':>9}{'width':>6}{'ms median':>11}{'ms p10':>9}{'ms p90':>9}{'break-even tokens/step':>24}"
             f"{'vs ' + first + ' t(1)':>16}"]
    for r in table.itertuples():
        lines.append(f"{r.engine:>9}{r.width:>6}{r.ms_median:>11.2f}{r.ms_p10:>9.2f}{r.ms_p90:>9.2f}"
                     f"{r.break_even_tokens_per_step:>24.2f}{r.vs_first_engine_w1:>16.2f}")
    return "\n".join(lines)
