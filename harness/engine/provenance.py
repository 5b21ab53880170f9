"""Provenance: what a run records about the conditions it ran under, beside its rows (run.json).

    hardware(device)       # {"label": "AMD EPYC (2 cores, AVX2)", ...}: the CPU's vector ISA is part of the label
    versions(), git_commit(), content_hash(folder)   # libraries, the code's commit (and dirty), a model's digests
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from harness.engine.records import write_json_atomic


# the files of a model directory that make it what it is: weights, configs, tokenizer files, custom code
HASHED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model", ".txt", ".tiktoken", ".py")


def _read_hash_cache(cache: Path | None) -> dict:
    try:
        known = json.loads(cache.read_text()) if cache else {}
        return known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        return {}


def file_sha256(path: Path, cache: Path | None = None) -> str:
    """The sha256 of a file's content. With `cache` (a JSON file) the digest is remembered by path, size and
    modification time, so that a big file is read once rather than at every run."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    hit = _read_hash_cache(cache).get(str(path))
    if isinstance(hit, list) and hit[:2] == stamp:
        return hit[2]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if cache is not None:
        known = _read_hash_cache(cache)  # again: another process may have added entries meanwhile
        known = {k: v for k, v in known.items() if Path(k).exists()}  # forget files that are gone
        known[str(path)] = [*stamp, digest]
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, known)
    return digest


def content_hash(path: Path, cache: Path | None = None) -> dict:
    """What a model file or directory holds: {"sha256"} of a file; for a directory, {"sha256", "files"}: the
    sha256 of each weight, config and tokenizer file at its top level (HASHED_SUFFIXES) and one sha256 over
    those (name and digest per line, sorted), so that two directories with the same files hash the same."""
    path = Path(path)
    if path.is_file():
        return {"sha256": file_sha256(path, cache)}
    files = {p.name: file_sha256(p, cache) for p in sorted(path.iterdir())
             if p.is_file() and p.suffix in HASHED_SUFFIXES and not p.name.startswith(".")}
    return {"sha256": files_sha256(files), "files": files}


def files_sha256(files: dict[str, str]) -> str:
    """One sha256 over a directory's {file name: sha256} (name and digest per line, in the given order)."""
    return hashlib.sha256("".join(f"{name}\t{digest}\n" for name, digest in files.items()).encode()).hexdigest()


def git_commit() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if sha.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _cpuinfo(field: str) -> str:
    """The first value of a /proc/cpuinfo field ("model name", "flags"), or "" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The vector instructions torch's CPU kernels use (AVX2, AVX512, ...), plus AMX when the CPU has it.

    Two virtual machines can report the same CPU name yet differ threefold in speed by these alone, so
    they are part of the hardware label: runs on either are never paired or pooled.
    """
    amx = "amx_bf16" in _cpuinfo("flags").split()
    return torch.backends.cpu.get_cpu_capability() + ("+AMX" if amx else "")


def hardware(device: torch.device) -> dict:
    info = {"device": device.type, "cpu": cpu_name(), "cpu_count": os.cpu_count(), "cpu_isa": cpu_isa(),
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["label"] = info.get("gpu") or f"{info['cpu']} ({info['cpu_count']} cores, {info['cpu_isa']})"
    return info


def versions() -> dict:
    """The versions of Python, the libraries that decode or score (torch, transformers, lm_eval, peft), the
    harness and the platform."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": installed("transformers"), "lm_eval": installed("lm_eval"), "peft": installed("peft"),
            "harness": installed("parallel-decoding-harness"), "platform": platform.platform()}
