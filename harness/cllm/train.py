"""CLLM training: consistency loss + w * AR loss on Jacobi trajectories, with the transformers Trainer.

    harness cllm train --data traj.jsonl --out ckpt/ [--loss global|local] [--ar-weight 10] [--lora/--no-lora]
One training example is one sample: prompt + its whole greedy answer, followed by one Jacobi state per
block, packed into one sequence under a 4D attention mask (each state sees the prompt and the answer
before its block, and itself causally, at the positions it has in decoding). One forward gives
  AR loss:          cross-entropy of the answer tokens (the target's own greedy output);
  global consistency: at every state position whose input holds a wrong token, soft cross-entropy from
                    the (detached) distribution at the same position of the answer (the fixed point);
  local consistency:  the same, toward the (detached) distribution given the next state y(k+1) instead.
With --horizon H, each state is packed from its first wrong token on, H tokens only (its verified prefix
is the answer's own tokens, so it attends to those): the positions Jacobi acceptance depends on, at a
fraction of the tokens, so every state of every block fits in one sequence.
The same command runs on several GPUs (or CPU processes) under `accelerate launch` / `torchrun`: the Trainer's
DDP or FSDP, rank 0 writing the checkpoint (docs/scale-out.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from harness import HarnessError
from harness.cllm.trajectories import read_trajectories
from methods.kv import model_mask
from harness.engine.records import check_writable_dir, write_json_atomic

log = logging.getLogger(__name__)
CARD = "cllm.json"  # in a checkpoint directory: its base model and the recipe that made it


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    model: str | None = None  # default: the model the trajectories were collected from
    loss: str = "global"  # global | local
    ar_weight: float = 10.0
    states_per_block: int = 1  # Jacobi states of each block packed into one training sequence (drawn anew each epoch; 0: all)
    horizon: int = 0  # > 0: pack and teach only the first H tokens past each state's verified prefix
    lora: bool = True
    lora_rank: int = 32
    lora_alpha: int = 64
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    save_steps: int = 100
    resume: bool = False
    mixed_precision: str = "auto"  # bf16 autocast over fp32 weights: auto = on CUDA with bf16, or a CPU with AMX
    snapshots: tuple[int, ...] = ()  # a data-scaling run: checkpoints after N samples (see snapshot_order)
    samples: int = 0  # > 0: only the file's first N samples, so a recipe stays fixed when its file grows


def use_bf16(mode: str, device: torch.device) -> bool:
    if mode not in ("auto", "bf16", "no"):
        raise HarnessError(f"--mixed-precision must be auto, bf16 or no, not {mode!r}")
    if mode != "auto":
        return mode == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return bool(amx())  # bf16 matmuls on AMX are several times faster than fp32 on CPU


def snapshot_order(n_samples: int, snapshots: tuple[int, ...], seed: int) -> list[int]:
    """Sample indices for a data-scaling run: the first max(snapshots) samples, shuffled within each stretch between
    consecutive snapshot sizes (each with its own seeded shuffle). Under a constant learning rate the checkpoint
    after N samples is then exactly a one-epoch training on the first N samples alone: those come first, in the
    order a run over N would see them, so one run gives every point of the curve for the price of the largest."""
    sizes = sorted(set(snapshots))
    if not sizes or sizes[0] < 1:
        raise HarnessError("--snapshots must be positive sample counts, e.g. 128,256,512,1024")
    if sizes[-1] > n_samples:
        raise HarnessError(f"--snapshots asks for {sizes[-1]} samples but the trajectories hold {n_samples}; "
                           "collect more (harness cllm collect --limit N resumes the file)")
    order = []
    for lo, hi in zip([0] + sizes[:-1], sizes):
        stretch = list(range(lo, hi))
        random.Random(f"{seed}:{lo}:{hi}").shuffle(stretch)
        order += stretch
    return order


def group_samples(records: list[dict]) -> list[dict]:
    """Records (one per block) -> samples {"sample_id", "prompt", "blocks": [...]} with the answer rebuilt."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["sample_id"], []).append(r)
    samples = []
    for sid, blocks in by.items():
        blocks.sort(key=lambda b: b["block"])
        answer = []
        for b in blocks:
            if b["prefix_ids"] != answer:
                raise HarnessError(f"sample {sid}: block {b['block']} does not continue the blocks before it "
                                   "(missing or reordered blocks); recollect the trajectories")
            answer = answer + b["fixed_point"]
        samples.append({"sample_id": sid, "prompt": blocks[0]["prompt_ids"], "answer": answer, "blocks": blocks})
    return samples


def pack(sample: dict, loss: str, rng: random.Random, states_per_block: int = 1, horizon: int = 0) -> dict:
    """One packed training sequence (see the module docstring). Returns tensors:
    input_ids, position_ids (L,), mask (L, L) bool, ar_index/ar_target, student_index/teacher_index.

    horizon H > 0 packs, of each state, only the H tokens from its first wrong token on: the tokens
    before it equal the fixed point's, so the state shares the answer's context there instead of
    repeating it, and only the first H positions past the verified prefix are taught (the ones Jacobi
    acceptance depends on). H = 0 packs the whole state, as the paper's global loss."""
    prompt, answer = sample["prompt"], sample["answer"]
    P, T = len(prompt), len(answer)
    tokens = list(prompt) + list(answer)
    positions = list(range(P + T))
    groups = []  # (first index, length, absolute position of its first token): each sees the context before it
    student, teacher = [], []
    for b in sample["blocks"]:
        s, target, states = len(b["prefix_ids"]), b["fixed_point"], b["states"]
        m = len(target)
        if m < 2:
            continue
        chosen = range(len(states)) if states_per_block == 0 else \
            sorted(rng.sample(range(len(states)), min(states_per_block, len(states))))
        for k in chosen:
            y = states[k]
            wrong = next((i for i in range(m - 1) if y[i] != target[i]), m - 1)  # first wrong input token
            start, end = (wrong, min(wrong + horizon, m - 1)) if horizon else (0, m - 1)
            if start >= end:
                continue  # inputs all right: same context as the teacher, nothing to learn
            copies = [y]
            if loss == "local":  # the next state (its tokens before `wrong` are right too: Jacobi fixes >= 1 per step)
                copies.append(states[k + 1] if k + 1 < b.get("n_jacobi", len(states)) else target)
            idx = []
            for c in copies:
                groups.append((len(tokens), end - start, P + s + start))
                idx.append(len(tokens))
                tokens += c[start:end]
                positions += range(P + s + start, P + s + end)
            # The output at state token i predicts answer[s + i + 1]; up to the first wrong input it has the
            # teacher's own context, so only positions from there on are taught.
            for i in range(wrong, end):
                student.append(idx[0] + i - start)
                teacher.append(idx[1] + i - start if loss == "local" else P + s + i)
    L = len(tokens)
    mask = torch.zeros(L, L, dtype=torch.bool)
    mask[: P + T, : P + T] = torch.tril(torch.ones(P + T, P + T, dtype=torch.bool))
    for start, length, first in groups:
        mask[start: start + length, :first] = True
        mask[start: start + length, start: start + length] = torch.tril(torch.ones(length, length, dtype=torch.bool))
    return {"input_ids": torch.tensor(tokens), "position_ids": torch.tensor(positions), "mask": mask,
            "ar_index": torch.arange(P - 1, P + T - 1), "ar_target": torch.tensor(answer),
            "student_index": torch.tensor(student, dtype=torch.long),
            "teacher_index": torch.tensor(teacher, dtype=torch.long)}


def cllm_losses(model, batch: dict, ar_weight: float, inner=None) -> tuple[torch.Tensor, dict]:
    """The loss and its parts for one packed sequence; `inner` is `model` unwrapped when `model` is a DDP/FSDP
    wrapper (the forward goes through the wrapper, which synchronizes the gradients)."""
    mask = model_mask(inner or model, batch["mask"])  # (1, 1, L, L)
    # Logits only at the positions a loss reads (the state tokens' last one and the prompt's don't).
    need = torch.cat([batch["ar_index"], batch["student_index"], batch["teacher_index"]])
    keep, where = torch.unique(need, return_inverse=True)
    ar_at, student_at, teacher_at = where.split([batch["ar_index"].numel(), batch["student_index"].numel(),
                                                 batch["teacher_index"].numel()])
    logits = model(input_ids=batch["input_ids"][None], position_ids=batch["position_ids"][None],
                   attention_mask=mask, logits_to_keep=keep).logits[0].float()  # (len(keep), V)
    ar = F.cross_entropy(logits[ar_at], batch["ar_target"])
    if student_at.numel():
        teacher = logits[teacher_at].detach().log_softmax(-1)
        student = logits[student_at].log_softmax(-1)
        consistency = -(teacher.exp() * student).sum(-1).mean()
    else:
        consistency = logits.new_zeros(())
    return consistency + ar_weight * ar, {"consistency": consistency.item(), "ar": ar.item(),
                                          "positions": int(batch["student_index"].numel())}


def _snapshot_callback(write, snapshots: tuple[int, ...], samples_per_step: int):
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step * samples_per_step in snapshots:
                write(state.global_step * samples_per_step, state.global_step)

    return Snapshots()


CLOCK = "train_seconds.json"  # in each trainer checkpoint: the training time up to it, so a resumed run adds to it


def _clock_callback(elapsed):
    """Writes the training time so far into every checkpoint the Trainer saves (on_save follows the save)."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_json_atomic(folder / CLOCK, {"step": state.global_step, "seconds": round(elapsed(), 1)})

    return Clock()


def resumed_seconds(trainer_dir: Path) -> tuple[str | None, float | None]:
    """(checkpoint, seconds of training before it) for the checkpoint a --resume continues from: (None, 0.0) with
    nothing to resume, seconds None where that checkpoint predates the clock file (its time is unknown)."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(trainer_dir)) if trainer_dir.is_dir() else None
    if last is None:
        return None, 0.0
    clock = Path(last) / CLOCK
    return last, float(json.loads(clock.read_text())["seconds"]) if clock.exists() else None


class PackedSamples(torch.utils.data.Dataset):
    def __init__(self, samples, loss, seed, states_per_block=1, horizon=0):
        self.samples, self.loss, self.rng = samples, loss, random.Random(seed)
        self.spb, self.horizon = states_per_block, horizon

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return pack(self.samples[i], self.loss, self.rng, self.spb, self.horizon)


def _trainer_class():
    from transformers import Trainer

    class CLLMTrainer(Trainer):
        ar_weight = 10.0
        parts: list = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, parts = cllm_losses(model, inputs, self.ar_weight, inner=self.accelerator.unwrap_model(model))
            self.parts.append(parts)
            return loss

        def log(self, logs, *args, **kwargs):
            if self.parts and "loss" in logs:
                n = len(self.parts)
                logs["consistency"] = round(sum(p["consistency"] for p in self.parts) / n, 4)
                logs["ar"] = round(sum(p["ar"] for p in self.parts) / n, 4)
                self.parts = []
            super().log(logs, *args, **kwargs)

    return CLLMTrainer


def checked_samples(cfg: TrainConfig) -> tuple[dict, list]:
    """The trajectory file's header and the samples to train on (its first --samples; with --snapshots, in the order
    that makes each snapshot a training of its own size), after checking the options: one line where one is off."""
    from harness.engine.parallel import launched

    if cfg.states_per_block < 0:
        raise HarnessError("--states-per-block must be 0 (every state) or a positive number")
    if cfg.horizon < 0:
        raise HarnessError("--horizon must be 0 (whole states) or a positive number of tokens")
    if cfg.loss not in ("global", "local"):
        raise HarnessError(f"--loss must be global or local, not {cfg.loss!r}")
    check_writable_dir(cfg.out, "--out")
    header, records, _ = read_trajectories(Path(cfg.data))
    if not records:
        raise HarnessError(f"{cfg.data} holds no trajectories")
    samples = group_samples(records)  # in the file's order: a grown file keeps its first samples first
    if cfg.samples < 0:
        raise HarnessError("--samples must be 0 (every sample) or a positive number")
    if cfg.samples > len(samples):
        raise HarnessError(f"--samples {cfg.samples}: {cfg.data} holds {len(samples)} samples; collect more or ask for fewer")
    samples = samples[:cfg.samples or None]
    if cfg.snapshots:
        if cfg.epochs != 1 or cfg.max_steps != -1:
            raise HarnessError("--snapshots trains one epoch over the largest snapshot (drop --epochs/--max-steps)")
        if any(n % cfg.grad_accum for n in cfg.snapshots):
            raise HarnessError(f"every --snapshots size must be a multiple of --grad-accum {cfg.grad_accum}")
        if launched()[1] > 1:
            raise HarnessError("--snapshots runs in one process (its checkpoints are written between steps)")
        samples = [samples[i] for i in snapshot_order(len(samples), cfg.snapshots, cfg.seed)]
    return header, samples


def trainable_model(cfg: TrainConfig, header: dict):
    """(loaded model, the model to train (with LoRA adapters when --lora), bf16 autocast?, frozen base in bf16?)."""
    from harness.engine.models import load_model, resolve_device, resolve_dtype
    from harness.engine.parallel import launched

    base = cfg.model or header["model"]
    device = resolve_device(cfg.device)
    bf16 = use_bf16(cfg.mixed_precision, device)
    # LoRA under bf16: the frozen base is stored in bf16 (no per-step weight casts) and the adapter in fp32;
    # full fine-tuning under bf16: fp32 master weights with autocast.
    frozen_bf16 = cfg.lora and bf16 and cfg.dtype == "auto"
    # Under a launcher every process loads the model into CPU memory and the Trainer moves its copy to its own
    # GPU (DDP) or shards it over them (FSDP): loading onto "cuda" would put every copy on GPU 0 first.
    load_on = "cpu" if launched()[1] > 1 else cfg.device
    dtype = "bfloat16" if frozen_bf16 else str(resolve_dtype(cfg.dtype, device)).removeprefix("torch.")
    lm = load_model(base, load_on, dtype, seed=cfg.seed)
    if lm.model.config.vocab_size != header["vocab_size"]:
        raise HarnessError(f"{cfg.data} was collected with a vocabulary of {header['vocab_size']} tokens but model "
                           f"{base} has {lm.model.config.vocab_size}; collect trajectories with this model")
    if header["model"] != base:
        log.warning("training %s on trajectories collected from %s", base, header["model"])
    model = lm.model
    model.train()
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    return lm, model, bf16, frozen_bf16


def training_arguments(cfg: TrainConfig, out: Path, cuda: bool, autocast_bf16: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=1, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        # A data-scaling run holds its rate after a warm-up fixed in steps (a ratio of the smallest snapshot), so
        # every snapshot saw the schedule a run of its own size would; otherwise cosine with a warm-up ratio.
        lr_scheduler_type="constant_with_warmup" if cfg.snapshots else "cosine",
        warmup_steps=max(1, round(cfg.warmup_ratio * min(cfg.snapshots) / cfg.grad_accum)) if cfg.snapshots
        else cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        train_sampling_strategy="sequential" if cfg.snapshots else "random",
        logging_steps=10, save_steps=cfg.save_steps, save_total_limit=2,
        report_to=[], remove_unused_columns=False, seed=cfg.seed, use_cpu=not cuda,
        bf16=autocast_bf16, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable weight is in every forward (DDP: no extra graph walk)
        disable_tqdm=False)


def train(cfg: TrainConfig, echo=print) -> Path:
    """`harness cllm train`: 1. the samples, 2. the model (LoRA or full), 3. the Trainer with the consistency and AR
    losses, resumable, writing snapshots, 4. the checkpoint and its card (rank 0)."""
    from harness.engine.models import resolve_device

    header, samples = checked_samples(cfg)
    lm, model, bf16, frozen_bf16 = trainable_model(cfg, header)
    out = Path(cfg.out)
    args = training_arguments(cfg, out, resolve_device(cfg.device).type == "cuda",
                              bf16 and not frozen_bf16 and lm.dtype == torch.float32)
    dataset = PackedSamples(samples, cfg.loss, cfg.seed, cfg.states_per_block, cfg.horizon)
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset,
                               data_collator=lambda batch: batch[0])
    trainer.ar_weight = cfg.ar_weight
    last, before = resumed_seconds(out / "trainer") if cfg.resume else (None, 0.0)
    if last and before is None:
        log.warning("%s predates the training clock: train_seconds counts only the time from this resume", last)
    t0 = time.perf_counter()
    # on the card of a resumed run: train_seconds covers the whole training only where timed_from_start
    timing = {"resumed_from": Path(last).name, "timed_from_start": before is not None} if last else {}

    def elapsed() -> float:
        return (before or 0.0) + time.perf_counter() - t0

    trainer.add_callback(_clock_callback(elapsed))
    if cfg.snapshots:
        def write_snapshot(n: int, steps: int):
            folder = out / f"n{n}"
            if (folder / CARD).exists():
                return  # written before an interruption; the resumed run passes this step again
            history = [h for h in trainer.state.log_history if "loss" in h]
            save(model, lm, folder, cfg, header, samples[:n], steps, history, elapsed(), timing=timing)
            echo(f"snapshot after {n} samples: {folder}")
        trainer.add_callback(_snapshot_callback(write_snapshot, cfg.snapshots, cfg.grad_accum))
    result = trainer.train(resume_from_checkpoint=last)
    history = [h for h in trainer.state.log_history if "loss" in h]
    # Under a launcher: the ranks must hold the same weights (DDP); the full state dict is gathered from
    # every rank (FSDP shards it) and rank 0 alone writes the checkpoint.
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model_wrapped)
    processes = ranks_agree(acc, model)
    state_dict = acc.get_state_dict(trainer.model_wrapped)
    if acc.is_main_process:
        save(model, lm, out, cfg, header, samples, result.global_step, history, elapsed(), state_dict, processes,
             timing)
        echo(f"checkpoint: {out} ({len(samples)} samples, {result.global_step} steps"
             + (f", {acc.num_processes} processes" if acc.num_processes > 1 else "") + ")")
    acc.wait_for_everyone()
    return out


def weights_digest(model) -> str:
    """sha256 over the trainable weights (the adapter, or every weight of a full fine-tuning), name by name."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def ranks_agree(acc, model) -> dict | None:
    """In data-parallel training (DDP) every rank must end with the same weights: their digests, gathered,
    or an error. None for one process; FSDP and DeepSpeed shard the weights, so there is nothing to compare."""
    from accelerate.utils import DistributedType, gather_object

    if acc.num_processes < 2:
        return None
    if acc.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        return {"world_size": acc.num_processes, "distributed_type": acc.distributed_type.value}
    digests = gather_object([weights_digest(model)])
    if len(set(digests)) > 1:
        raise HarnessError(f"the {acc.num_processes} training processes ended with different weights "
                           f"({', '.join(d[:12] for d in digests)}); no checkpoint written")
    return {"world_size": acc.num_processes, "distributed_type": acc.distributed_type.value,
            "weights_sha256": digests}


def save(model, lm, out: Path, cfg: TrainConfig, header, samples, steps: int, history, seconds, state_dict=None,
         processes: dict | None = None, timing: dict | None = None) -> None:
    """The checkpoint: the adapter (bfloat16) or the full model with its tokenizer, and cllm.json. `state_dict`
    (from accelerate's get_state_dict, which gathers sharded weights) is written instead of model's own."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), state_dict=state_dict, safe_serialization=True)
    if cfg.lora:
        _to_bfloat16(out / "adapter_model.safetensors")  # halves the checkpoint (≤ 30 MB for the embedded model)
        (out / "README.md").unlink(missing_ok=True)  # peft's empty model card; cllm.json describes the checkpoint
    else:
        lm.tokenizer.save_pretrained(str(out))
    card = {"base_model": cfg.model or header["model"], "kind": "lora" if cfg.lora else "full",
            "block_size": header["block_size"], "recipe": {**asdict(cfg), "trajectories": header,
            "samples": len(samples), "steps": steps, "train_seconds": round(seconds, 1),
            "epochs_trained": round(steps * cfg.grad_accum * (processes or {}).get("world_size", 1)
                                    / max(len(samples), 1), 3),  # 0 samples: an untrained checkpoint, 0 epochs
            "final_log": history[-1] if history else None}}
    card["recipe"].update(timing or {})
    if processes:
        card["recipe"]["processes"] = processes
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")


def epochs_trained(recipe: dict) -> float:
    """Passes over the samples a card's training made: --epochs, unless --max-steps stopped it sooner or later
    (a card written before epochs_trained was recorded: worked out from its steps)."""
    if "epochs_trained" in recipe:
        return float(recipe["epochs_trained"])
    world = (recipe.get("processes") or {}).get("world_size", 1)
    return round(recipe["steps"] * recipe.get("grad_accum", 1) * world / recipe["samples"], 3)


def _to_bfloat16(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
