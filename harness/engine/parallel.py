"""Data parallelism under a launcher (`accelerate launch`, `torchrun`): which process this is, its device and
CPU cores, and the barrier and broadcast a shared run folder needs. Without a launcher: one process, rank 0.

    proc = start("auto")       # Process(rank=0, world_size=1, device="auto") when not launched
    proc.owns(i)               # rank r takes the requests i with i % world_size == r
    run_id = proc.share(new_run_id())   # rank 0's value on every rank; proc.barrier() waits for all
The launcher sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; accelerate's `PartialState` joins the
process group (gloo on CPU, nccl on CUDA). Processes on one CPU get disjoint cores; they still share memory
bandwidth and caches, so their timings are marked `shared_device` (see docs/scale-out.md).
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from harness import HarnessError

log = logging.getLogger(__name__)
# A rank that finishes its shard waits at the barrier for the slowest one: hours in a long sweep. (A rank
# that dies ends the others at once: the launcher stops every process when one fails.)
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: str = "auto"  # this process's --device: cuda:LOCAL_RANK or cpu under a launcher
    shared_device: bool = False  # processes of this run share one device (a CPU): timings not comparable
    cores: int | None = None  # CPU cores pinned to this process (CPU runs under a launcher)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        return index % self.world_size == self.rank

    def barrier(self) -> None:
        if self.distributed:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def share(self, value):
        """Rank 0's `value` on every rank (a run id, a decision read from disk)."""
        if not self.distributed:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def gather(self, value) -> list:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def check_device_map(self, device_map: str | None) -> None:
        if self.distributed and device_map:
            raise HarnessError("--device-map spreads one model over every GPU; it does not combine with a "
                               "data-parallel launch (one process per GPU): launch one process")

    def describe(self) -> dict:
        """What run.json records of a data-parallel run (nothing for a single process)."""
        if not self.distributed:
            return {}
        return {"world_size": self.world_size, "shared_device": self.shared_device,
                "processes_per_node": self.local_world_size, "cores_per_process": self.cores}


def launched() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) as the launcher set them; (0, 1, 0, 1) without one."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    local_world = int(env.get("LOCAL_WORLD_SIZE", env.get("LOCAL_SIZE", world)))
    return int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")), local_world


@functools.cache
def start(device: str = "auto") -> Process:
    """This process: without a launcher Process(device=device) and nothing else done. Under one: join the
    process group, take GPU LOCAL_RANK (or, on CPU, this process's share of the cores), once per process."""
    rank, world, local_rank, local_world = launched()
    if world <= 1:
        return Process(device=device)
    cuda = device != "cpu" and torch.cuda.is_available()
    if device not in ("auto", "cpu", "cuda"):
        raise HarnessError(f"--device {device}: in a data-parallel run each process takes its own device "
                           "(cuda:LOCAL_RANK, or the CPU); pass --device auto, cuda or cpu")
    if device == "cuda" and not cuda:
        raise HarnessError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if cuda and local_world > torch.cuda.device_count():
        raise HarnessError(f"{local_world} processes on this node but {torch.cuda.device_count()} GPU(s): "
                           "launch at most one process per GPU (--num_processes)")
    from accelerate import PartialState

    PartialState(cpu=not cuda, timeout=BARRIER_TIMEOUT)
    if cuda:
        return Process(rank, world, local_rank, local_world, device=f"cuda:{local_rank}")
    cores = pin_cores(local_rank, local_world)
    return Process(rank, world, local_rank, local_world, device="cpu", shared_device=local_world > 1, cores=cores)


def pin_cores(local_rank: int, local_world: int) -> int:
    """Give this process its own slice of the cores it may run on (os.sched_setaffinity) and as many torch
    threads; with more processes than cores, one thread each on shared cores (and a warning)."""
    if not hasattr(os, "sched_setaffinity"):  # not Linux: threads only
        per = max(1, (os.cpu_count() or 1) // local_world)
        torch.set_num_threads(per)
        return per
    available = sorted(os.sched_getaffinity(0))
    per = len(available) // local_world
    if per < 1:
        log.warning("%d processes share %d cores: their timings are not comparable", local_world, len(available))
        torch.set_num_threads(1)
        return 1
    os.sched_setaffinity(0, available[local_rank * per:(local_rank + 1) * per])
    torch.set_num_threads(per)
    return per
