"""Task names, importable without torch or lm-eval, so that a typo in `--task` is answered at once.

    check_task("gsm9k")   # HarnessError: unknown task 'gsm9k'; did you mean 'gsm8k'? ...
harness.evaluation.tasks builds each task behind these names (a test checks that the two lists agree).
"""
from __future__ import annotations

import difflib

from harness import HarnessError

TASK_NAMES = ("gsm8k", "humaneval", "spider", "mt_bench")


def check_task(name: str | None, prompts_file: str | None = None) -> None:
    """The same one-line errors as `get_task`, before anything heavy is imported."""
    if prompts_file and name:
        raise HarnessError("give either --task or --prompts, not both")
    if prompts_file:
        return
    if not name:
        raise HarnessError(f"no task: pass --task ({', '.join(TASK_NAMES)}) or --prompts FILE.jsonl")
    if name not in TASK_NAMES:
        close = difflib.get_close_matches(name, TASK_NAMES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise HarnessError(f"unknown task {name!r}{hint} (available: {', '.join(TASK_NAMES)}, or --prompts FILE.jsonl)")
