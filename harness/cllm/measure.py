"""Tokens per step of a CLLM checkpoint at several block sizes, on held-out questions: what `-O block_size=auto` reads.

    harness cllm measure --checkpoint smollm2-135m-cllm --block-sizes 4,8,16 --limit 40 --out m.jsonl [--write-card]
Decodes the first --limit *test* questions of the task (prompts built by the same lm-eval config as a run) with Jacobi
on the checkpoint at each block size, untimed: tokens per step is a count, the clock plays no part. One JSONL row per
(block size, question) is appended as it is produced, so an interrupted measurement resumes where it stopped; rows made
with other settings are refused. The table printed at the end (and, with --write-card, `tokens_per_step` in the
checkpoint's cllm.json, with the conditions under `tokens_per_step_on`) gives per block size: tokens/step, and the share
of outputs with a run of 10+ repeated tokens (a looping model commits many tokens per step cheaply). Each row records
the sha256 of the checkpoint's weights: a checkpoint retrained into the same folder is not credited with the old rows.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from harness import HarnessError
from harness.evaluation.tasks import prompts_for
from harness.engine.generate import REPEAT_RUN, Stopper, generate, longest_run
from harness.engine.models import _resolve, load_model, weights_sha256
from harness.engine.records import check_writable_dir, jsonl_lines, make_dir, write_json_atomic
from harness.engine.session import build_decoder, encode, eos_ids
from methods.engine import make_engine

SETTINGS = ("checkpoint", "model", "task", "split", "max_new_tokens", "engine")


@dataclass(frozen=True)
class MeasureConfig:
    out: str
    checkpoint: str = "smollm2-135m-cllm"
    model: str = "smollm2-135m"  # the checkpoint's base (the runner's --model in a run)
    block_sizes: tuple[int, ...] = (4, 8, 16)
    task: str = "gsm8k"
    split: str = "test"
    limit: int = 40
    max_new_tokens: int = 256
    data_dir: str | None = None
    engine: str = "eager"
    device: str = "auto"
    write_card: bool = False


def read_rows(path: Path, cfg: MeasureConfig, weights: str | None) -> list[dict]:
    """Rows already measured with these settings and weights; a row made otherwise is an error (pass a new --out)."""
    if not path.exists():
        return []
    lines, rows = jsonl_lines(path), []
    for i, (n, text) in enumerate(lines):
        try:
            rows.append(json.loads(text))
        except ValueError:
            if i < len(lines) - 1:
                raise HarnessError(f"{path}:{n}: not valid JSON; pass a new --out") from None
            path.write_text("".join(t + "\n" for _, t in lines[:-1]))  # a row cut short by an interruption: redone
    want = {k: getattr(cfg, k) for k in SETTINGS}
    for r in rows:
        if {k: r.get(k) for k in SETTINGS} != want:
            raise HarnessError(f"{path} holds rows measured with other settings ({ {k: r.get(k) for k in SETTINGS} }); "
                               "pass a new --out or the same settings")
        if r.get("weights_sha256") != weights:
            raise HarnessError(f"{path} holds rows measured on other weights than {cfg.checkpoint}'s now (retrained?); "
                               "pass a new --out")
    return rows


def table(rows: list[dict]) -> pd.DataFrame:
    """Per block size: questions, tokens/step (Σ tokens / Σ steps) and the share of looping outputs."""
    df = pd.DataFrame(rows)
    g = df.groupby("block_size")
    return pd.DataFrame({"n": g.size(), "tokens_per_step": g["new_tokens"].sum() / g["steps"].sum(),
                         "repeat_share": g.apply(lambda x: float((x["max_repeat_run"] >= REPEAT_RUN).mean()),
                                                 include_groups=False)}).reset_index()


def measure(cfg: MeasureConfig, echo=print) -> pd.DataFrame:
    if not cfg.block_sizes or min(cfg.block_sizes) < 1:
        raise HarnessError("--block-sizes must be positive numbers, e.g. 4,8,16")
    if cfg.limit < 1:
        raise HarnessError(f"--limit must be at least 1 (got {cfg.limit})")
    source, folder = _resolve(cfg.checkpoint)
    if cfg.write_card and source != "cllm":
        raise HarnessError(f"--write-card needs a CLLM checkpoint folder (with cllm.json); {cfg.checkpoint} is a {source} model")
    out = Path(cfg.out)
    check_writable_dir(out.parent, "--out")
    weights = weights_sha256(cfg.checkpoint)
    rows = read_rows(out, cfg, weights)
    done = {(r["block_size"], r["sample_id"]) for r in rows}
    lm = load_model(cfg.model, cfg.device)
    prompts = prompts_for(cfg.task, cfg.split, cfg.data_dir, lm.chat, cfg.limit)
    stopper = Stopper(eos_ids(lm), (), lm.tokenizer)
    todo = [(n, sid, text) for n in cfg.block_sizes for sid, text in prompts if (n, sid) not in done]
    if done:
        echo(f"resuming {out}: {len(done)} of {len(done) + len(todo)} decodes already measured")
    make_dir(out.parent)
    decoders = {}
    ids = {text: encode(lm, [{"role": "user", "content": text}], lm.chat) for _, _, text in todo}
    longest = max(map(len, ids.values()), default=0)
    with open(out, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc="measure", unit="question") as bar:
        for n, sid, text in todo:
            if n not in decoders:  # one checkpoint load per block size (the loader caches nothing)
                decoders = {n: build_decoder("cllm", {"checkpoint": cfg.checkpoint, "block_size": str(n)}, lm.model,
                                             engine=make_engine(cfg.engine, lm.model))[0]}
                decoders[n].reserve(longest + cfg.max_new_tokens + max(decoders[n].widths()), fit=True)
                decoders[n].warm_up()
            g = generate(decoders[n], torch.tensor([ids[text]], device=lm.device), cfg.max_new_tokens, stopper)
            row = {**{k: getattr(cfg, k) for k in SETTINGS}, "block_size": n, "sample_id": sid,
                   "new_tokens": len(g.tokens), "steps": len(g.step_tokens), "max_repeat_run": longest_run(g.tokens),
                   "weights_sha256": weights}
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
            rows.append(row)
            bar.update()
    result = table([r for r in rows if r["block_size"] in cfg.block_sizes])
    if cfg.write_card:
        card_path = Path(folder) / "cllm.json"
        card = json.loads(card_path.read_text())
        card["tokens_per_step"] = {str(int(r.block_size)): round(float(r.tokens_per_step), 4) for r in result.itertuples()}
        card["tokens_per_step_on"] = {k: v for k, v in asdict(cfg).items() if k in ("task", "split", "limit", "max_new_tokens")}
        write_json_atomic(card_path, card)
        echo(f"{card_path}: tokens_per_step {card['tokens_per_step']}")
    return result
