"""Data loading shared by the shipped lm-eval tasks: local files from a data directory, else the hub.

    docs = read_jsonl(path)                  # HarnessError naming file:line on a malformed line
    data = load_hub("gsm8k")                 # HUB["gsm8k"] at its pinned revision, as lm-eval loads it
The data directory is laid out as ../shared/data (gsm8k/, mt_bench/, spider/, spec_bench/); see README.md#data.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from harness import HarnessError
from harness.engine import records

log = logging.getLogger(__name__)
LAYOUT_HINT = ("pass --data-dir DIR (or set HARNESS_DATA_DIR) laid out as gsm8k/, mt_bench/, spider/, spec_bench/ "
               "(README.md#data; `harness data check DIR` verifies a copy)")


@dataclass(frozen=True)
class HubDataset:
    """A task's dataset on the Hugging Face hub, loaded as `datasets.load_dataset(path, name, split=split,
    revision=revision)`: a commit, so that every machine reads the same rows."""
    path: str
    name: str | None
    revision: str
    split: str | None = None


# The revisions: this project was written offline, so they could not be read from the hub here. Both are the
# commits that other public projects pin for these datasets (openai/gsm8k "main at the check date"); lm-eval's own
# gsm8k.yaml names openai/gsm8k (config main) without a revision. If the hub no longer serves one, the load fails
# with the error below and the local copy (--data-dir) is the way round it.
HUB = {
    "gsm8k": HubDataset("openai/gsm8k", "main", "740312add88f781978c0658806c59bc2815b9866"),
    "mt_bench": HubDataset("HuggingFaceH4/mt_bench_prompts", None, "e3a795c5e9a82ee40611c416b8a7786c73198991",
                           split="train"),
}
OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    """A task's data file: its rows, or one error naming the file and line (bad JSON, a missing field)."""
    rows = []
    for lineno, row in records.read_jsonl(path):
        _check_fields(row, required, f"{path}:{lineno}")
        rows.append(row)
    return rows


def read_json_list(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); fix or replace the file") from None
    if not isinstance(rows, list):
        raise HarnessError(f"{path}: expected a JSON list of objects")
    for i, row in enumerate(rows):
        _check_fields(row, required, f"{path}: element {i}")
    return rows


def _check_fields(row, required, where: str) -> None:
    if not isinstance(row, dict):
        raise HarnessError(f"{where}: expected a JSON object")
    missing = [k for k in required if k not in row]
    if missing:
        raise HarnessError(f"{where}: missing field(s) {', '.join(missing)}")


def local_file(data_dir: str | None, relative: str, task: str) -> Path | None:
    """The file under the data dir, or None when no data dir was given. A given dir must hold it."""
    if not data_dir:
        return None
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise HarnessError(f"data directory {root} does not exist; {LAYOUT_HINT}")
    path = root / relative
    if not path.exists():
        raise HarnessError(f"task {task} needs {path}, which is missing; {LAYOUT_HINT}")
    return path


def hub_online(timeout_s: float = 3.0) -> bool:
    """Whether the hub's endpoint (huggingface_hub's, HF_ENDPOINT) answers within `timeout_s`."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=timeout_s).close()
        return True
    except (OSError, TypeError):
        return False


def cache_only() -> bool:
    """HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set: read the Hugging Face cache, never the network."""
    return any(os.environ.get(k, "").upper() in OFFLINE_VALUES for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub(task: str):
    """HUB[task] at its pinned revision (from the local Hugging Face cache when HF_HUB_OFFLINE is set), or one
    line that says how to supply the data without the hub."""
    src = HUB[task]
    cached = cache_only()
    if not cached and not hub_online():
        raise HarnessError(f"task {task}: no data directory given and the hub is unreachable; {LAYOUT_HINT}")
    import datasets

    try:
        return datasets.load_dataset(src.path, src.name, split=src.split, revision=src.revision)
    except Exception as e:  # network, auth, renamed dataset, not in the cache: the user needs the same advice
        where = "the Hugging Face cache (HF_HUB_OFFLINE is set)" if cached else "the hub"
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise HarnessError(f"task {task}: could not load {src.path} at revision {src.revision[:12]} from {where} "
                           f"({type(e).__name__}: {reason}); {LAYOUT_HINT}") from None


def dataset_dict(splits: dict[str, list[dict]]):
    import datasets

    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})


def mean_ignoring_nan(values):
    """The mean of the values a task could compute (NaN: no metric for that document), NaN when none could."""
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")
