"""Data loading shared by the shipped lm-eval tasks: local files from a data directory, else the hub.

    docs = read_jsonl(path)                  # HarnessError naming file:line on a malformed line
    source = locate(data_dir, "gsm8k/test.jsonl", task="gsm8k", hub="openai/gsm8k")
The data directory is laid out as ../shared/data (gsm8k/, mt_bench/, spider/); see the README.
"""
from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

from harness import HarnessError
from harness.engine import records

log = logging.getLogger(__name__)
LAYOUT_HINT = "pass --data-dir DIR (or set HARNESS_DATA_DIR) laid out as gsm8k/, mt_bench/, spider/ (see README: Data)"


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


def hub_online(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load_hub(task: str, path: str, name: str | None = None, split: str | None = None):
    """A split from the Hugging Face hub, or a clear error that says how to supply the data offline."""
    if not hub_online():
        raise HarnessError(f"task {task}: no data directory given and the hub is unreachable; {LAYOUT_HINT}")
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as e:  # network, auth, renamed dataset: the user needs the same advice
        raise HarnessError(f"task {task}: could not load {path} from the hub ({type(e).__name__}: {e}); "
                           f"{LAYOUT_HINT}") from None


def dataset_dict(splits: dict[str, list[dict]]):
    import datasets

    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
