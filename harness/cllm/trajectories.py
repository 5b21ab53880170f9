"""Jacobi trajectories for CLLM training: the file format, and collection from a target model.

    python -m harness.cli cllm collect --model smollm2-135m --task gsm8k --limit 8 --out traj.jsonl
The file is JSONL: a header line, then one record per block (see FORMAT). Collection is batched
(greedy AR for a batch of prompts) and KV-cached (all blocks of an answer iterate together, each
attending to its own prefix), resumable (finished samples are skipped), with a progress bar.
"""
from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness import HarnessError
from harness.engine.generate import longest_run
from harness.engine.records import check_writable_dir, jsonl_lines, make_dir
from harness.evaluation.tasks import prompts_for
from methods.kv import cache_kwargs, model_mask, new_cache, rollback

log = logging.getLogger(__name__)
FORMAT = "harness-cllm-trajectories"
VERSION = 1
# Header: {"format", "version", "model", "vocab_size", "block_size", "max_new_tokens", "task", "split",
#          "chat", "eos_ids", "clean", "augment", "seed"}
# Record (one per block of one sample's answer):
#   {"sample_id": str, "block": int (0-based), "n_blocks": int,
#    "prompt_ids": [int] (the prompt, chat template applied), "prefix_ids": [int] (answer before this block),
#    "states": [[int]] (Jacobi states y(0..k-1) of this block, y(0) = random prompt tokens; augmented states follow),
#    "fixed_point": [int] (y*, the converged block = the greedy answer's tokens), "n_jacobi": int (k, states
#    before augmentation)}
# A block is at most block_size tokens; the last one of an answer may be shorter.


@dataclass(frozen=True)
class CollectConfig:
    out: str
    model: str = "smollm2-135m"
    task: str = "gsm8k"
    split: str = "train"
    data_dir: str | None = None
    limit: int | None = None
    block_size: int = 16
    max_new_tokens: int = 256
    batch_size: int = 8
    augment: int = 0  # extra states per Jacobi state with some wrong tokens overwritten by the fixed point's
    clean: bool = True  # drop samples whose answer repeats one token 10 or more times in a row
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    chat_template: bool = True


@torch.inference_mode()
def greedy_batch(model, prompts: list[list[int]], max_new: int, eos: set[int], pad: int) -> list[list[int]]:
    """Greedy answers for a batch of prompts (left-padded, KV-cached); each cut after its first EOS."""
    device = next(model.parameters()).device
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                         eos_token_id=sorted(eos), pad_token_id=pad, top_p=None, top_k=None, temperature=None)
    answers = []
    for row in out[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        answers.append(row[:cut])
    return answers


@torch.inference_mode()
def jacobi_blocks(model, prompt: list[int], answer: list[int], n: int, rng: random.Random) -> list[dict]:
    """Every block's Jacobi trajectory given the (fixed) answer before it, all blocks iterating together.

    One forward over prompt + answer fills the cache and gives each block's first token; then each
    iteration is one forward over every unconverged block's state, each attending to the cache up to its
    own start and causally within itself. A block stops when an iteration leaves its state unchanged.
    """
    device = next(model.parameters()).device
    P, T = len(prompt), len(answer)
    starts = list(range(0, T, n))
    cache = new_cache(model)
    full = torch.tensor([prompt + answer], device=device)
    logits = model(input_ids=full, **cache_kwargs(model, cache)).logits[0]  # (P+T, V)
    first = logits[P - 1 + torch.tensor(starts, device=device)].argmax(-1).tolist()  # each block's first token
    states = {j: [prompt[rng.randrange(P)] for _ in range(min(n, T - s))] for j, s in enumerate(starts)}
    history = {j: [list(states[j])] for j in states}
    active = list(states)
    for _ in range(n + 1):  # a block of m tokens converges within m iterations
        if not active:
            break
        # 1. Query tokens: state[0..m-2] of each active block (its last token predicts past the block).
        tokens, pos, owner = [], [], []
        for j in active:
            m = len(states[j])
            tokens += states[j][: m - 1]
            pos += range(P + starts[j], P + starts[j] + m - 1)
            owner += [j] * (m - 1)
        new = {j: [first[j]] for j in active}
        if tokens:
            q = len(tokens)
            owner_t = torch.tensor(owner, device=device)
            pos_t = torch.tensor(pos, device=device)
            start_t = torch.tensor([P + starts[j] for j in owner], device=device)
            sees_cache = torch.arange(P + T, device=device)[None, :] < start_t[:, None]  # (q, P+T)
            sees_new = (owner_t[:, None] == owner_t[None, :]) & (pos_t[None, :] <= pos_t[:, None])  # (q, q)
            mask = model_mask(model, torch.cat([sees_cache, sees_new], dim=1))  # (1, 1, q, P+T+q)
            preds = model(input_ids=torch.tensor([tokens], device=device), **cache_kwargs(model, cache),
                          attention_mask=mask, position_ids=pos_t[None]).logits[0].argmax(-1).tolist()
            rollback(cache, q)
            for j, p in zip(owner, preds):
                new[j].append(p)
        # 2. The Jacobi update; a block whose state did not change has reached its fixed point.
        still = []
        for j in active:
            if new[j] == states[j]:
                continue
            states[j] = new[j]
            history[j].append(list(new[j]))
            still.append(j)
        active = still
    blocks = []
    for j, s in enumerate(starts):
        target = answer[s: s + n]
        if states[j] != target:  # batched AR and Jacobi disagree (float rounding): trust the answer
            log.debug("block %d converged to %s, not the greedy answer %s", j, states[j], target)
        trail = history[j][:-1] if history[j][-1] == target else history[j]
        blocks.append({"block": j, "n_blocks": len(starts), "prefix_ids": answer[:s], "states": trail or [target],
                       "fixed_point": target, "n_jacobi": len(trail)})
    return blocks


def augment(states: list[list[int]], target: list[int], k: int, rng: random.Random) -> list[list[int]]:
    """k extra states per state: a random part of its wrong tokens overwritten with the fixed point's."""
    out = []
    for s in states:
        wrong = [i for i, (a, b) in enumerate(zip(s, target)) if a != b]
        for _ in range(k if len(wrong) > 1 else 0):
            fix = rng.sample(wrong, rng.randint(1, len(wrong) - 1))
            out.append([target[i] if i in fix else t for i, t in enumerate(s)])
    return out


def read_trajectories(path: Path, repair: bool = False) -> tuple[dict | None, list[dict], list[str]]:
    """(header, block records, ids of samples dropped by cleaning). A malformed line is an error naming
    file and line; with repair=True a torn last line (an interrupted collection) is dropped instead."""
    path = Path(path)
    if not path.exists():
        return None, [], []
    lines = jsonl_lines(path, errors="replace")
    last = lines[-1][0] if lines else 0
    header, records, dropped = None, [], []
    for lineno, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if repair and lineno == last:
                log.warning("%s:%d: dropping a torn last line", path, lineno)
                _truncate_last_line(path)
                break
            raise HarnessError(f"{path}:{lineno}: not valid JSON ({e.msg}); is this a trajectory file?") from None
        if lineno == 1:
            if not isinstance(row, dict) or row.get("format") != FORMAT:
                raise HarnessError(f"{path}:1: not a CLLM trajectory file (no {FORMAT!r} header); "
                                   "make one with `harness cllm collect`")
            if row.get("version") != VERSION:
                raise HarnessError(f"{path}:1: trajectory format version {row.get('version')}, this harness reads {VERSION}")
            header = row
            continue
        if isinstance(row, dict) and "dropped" in row:
            dropped.append(str(row.get("sample_id")))
            continue
        check_record(row, header, f"{path}:{lineno}")
        records.append(row)
    if header is None:
        raise HarnessError(f"{path} is empty; make a trajectory file with `harness cllm collect`")
    return header, records, dropped


def check_record(row, header: dict, where: str) -> None:
    def bad(msg):
        raise HarnessError(f"{where}: {msg}")

    if not isinstance(row, dict):
        bad("expected a JSON object")
    for key in ("sample_id", "block", "prompt_ids", "prefix_ids", "states", "fixed_point"):
        if key not in row:
            bad(f"missing field {key!r}")
    fp, vocab = row["fixed_point"], header["vocab_size"]
    ids = [*row["prompt_ids"], *row["prefix_ids"], *fp, *(t for s in row["states"] for t in s)]
    if not all(isinstance(t, int) and 0 <= t < vocab for t in ids):
        bad(f"token ids must be integers below the vocabulary size {vocab}")
    if not fp or len(fp) > header["block_size"] or not row["states"]:
        bad(f"fixed_point must hold 1..{header['block_size']} tokens and states at least one state")
    if any(len(s) != len(fp) for s in row["states"]):
        bad("every state must have as many tokens as fixed_point")
    if not row["prompt_ids"]:
        bad("empty prompt_ids")


def _truncate_last_line(path: Path) -> None:
    data = path.read_bytes()
    cut = data.rstrip(b"\n").rfind(b"\n")
    path.write_bytes(data[: cut + 1] if cut >= 0 else b"")


def collect(cfg: CollectConfig, echo=print) -> Path:
    from harness.engine.models import load_model
    from harness.engine.session import encode, eos_ids

    if cfg.block_size < 2:
        raise HarnessError(f"--block-size must be at least 2 (got {cfg.block_size})")
    out = Path(cfg.out)
    check_writable_dir(out.parent, "--out")  # before the model loads
    lm = load_model(cfg.model, cfg.device, cfg.dtype, seed=cfg.seed)
    chat = lm.chat and cfg.chat_template
    prompts = prompts_for(cfg.task, cfg.split, cfg.data_dir, chat, cfg.limit)
    header = {"format": FORMAT, "version": VERSION, "model": cfg.model, "vocab_size": lm.model.config.vocab_size,
              "block_size": cfg.block_size, "max_new_tokens": cfg.max_new_tokens, "task": cfg.task,
              "split": cfg.split, "chat": chat, "eos_ids": sorted(eos_ids(lm)), "clean": cfg.clean,
              "augment": cfg.augment, "seed": cfg.seed}
    old, records, dropped_before = read_trajectories(out, repair=True) if out.exists() and out.stat().st_size else (None, [], [])
    if old is not None:
        same = {k: old.get(k) for k in header} == header
        if not same:
            raise HarnessError(f"{out} was collected with other settings ({old}); pass a new --out or the same settings")
    else:
        make_dir(out.parent)
        out.write_text(json.dumps(header) + "\n")
    records = _complete_samples_only(out, old, records, dropped_before) if old else records
    done = {r["sample_id"] for r in records} | set(dropped_before)
    todo = [(sid, text) for sid, text in prompts if sid not in done]
    if done:
        echo(f"resuming {out}: {len(prompts) - len(todo)} of {len(prompts)} samples already collected")
    eos = set(eos_ids(lm))
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else min(eos)
    kept = dropped = 0
    bar = tqdm(total=len(todo), desc="collect", unit="sample")
    with open(out, "a", encoding="utf-8") as f:
        for b in range(0, len(todo), cfg.batch_size):
            batch = todo[b: b + cfg.batch_size]
            ids = [encode(lm, [{"role": "user", "content": text}], chat) for _, text in batch]
            for (sid, _), p in zip(batch, ids):
                if len(p) + cfg.max_new_tokens > lm.context_length:
                    raise HarnessError(f"{sid}: prompt of {len(p)} tokens + {cfg.max_new_tokens} new exceeds the context")
            answers = greedy_batch(lm.model, ids, cfg.max_new_tokens, eos, pad)
            for (sid, _), prompt, answer in zip(batch, ids, answers):
                rng = random.Random(f"{cfg.seed}/{sid}")
                if cfg.clean and longest_run(answer) >= 10:
                    f.write(json.dumps({"sample_id": sid, "dropped": "10 or more repeated tokens"}) + "\n")
                    dropped += 1
                else:
                    lines = []
                    for block in jacobi_blocks(lm.model, prompt, answer, cfg.block_size, rng):
                        if cfg.augment:
                            block["states"] += augment(block["states"], block["fixed_point"], cfg.augment, rng)
                        lines.append(json.dumps({"sample_id": sid, "prompt_ids": prompt, **block}) + "\n")
                    f.write("".join(lines))  # a sample's blocks together: resume redoes a sample cut short
                    kept += 1
                f.flush()
                os.fsync(f.fileno())
                bar.update()
    bar.close()
    echo(f"{out}: {kept} samples collected, {dropped} dropped by cleaning (this session)")
    return out


def _complete_samples_only(path: Path, header: dict, records: list[dict], dropped: list[str]) -> list[dict]:
    """Drop the blocks of samples an interruption cut short (rewriting the file), so that they are redone."""
    count: dict[str, int] = {}
    for r in records:
        count[r["sample_id"]] = count.get(r["sample_id"], 0) + 1
    whole = [r for r in records if count[r["sample_id"]] == r.get("n_blocks", count[r["sample_id"]])]
    if len(whole) < len(records):
        log.warning("%s: redoing %d samples an interruption cut short", path, len({r["sample_id"] for r in records})
                    - len({r["sample_id"] for r in whole}))
        lines = [json.dumps(header)] + [json.dumps(r) for r in whole]
        lines += [json.dumps({"sample_id": d, "dropped": "10 or more repeated tokens"}) for d in dropped]
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)
    return whole
