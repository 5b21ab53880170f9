"""Task names, importable without torch or lm-eval, so that a typo in `--task` is answered at once.

    check_task("gsm9k")   # HarnessError: unknown task 'gsm9k'; did you mean 'gsm8k'? ...
    split_task("spec_bench:translation+rag")   # ("spec_bench", "translation+rag"): a task and a subset of it
harness.evaluation.tasks builds each task behind these names (a test checks that the two lists agree).
"""
from __future__ import annotations

import difflib

from harness import HarnessError

TASK_NAMES = ("gsm8k", "humaneval", "spider", "mt_bench", "spec_bench")
SUBSET = ":"  # TASK:SUBSET selects part of a task (spec_bench:translation+rag); the task checks the subset


def split_task(name: str) -> tuple[str, str | None]:
    """(task, subset): `spec_bench:translation+rag` -> ("spec_bench", "translation+rag"); no subset -> None."""
    base, sep, subset = name.partition(SUBSET)
    return base, (subset if sep else None)


def check_task(name: str | None, prompts_file: str | None = None) -> None:
    """The same one-line errors as `get_task`, before anything heavy is imported."""
    if prompts_file and name:
        raise HarnessError("give either --task or --prompts, not both")
    if prompts_file:
        return
    if not name:
        raise HarnessError(f"no task: pass --task ({', '.join(TASK_NAMES)}) or --prompts FILE.jsonl")
    base, subset = split_task(name)
    if subset is not None and not subset.strip():
        raise HarnessError(f"task {name!r}: nothing after {SUBSET!r}; name a part of the task (e.g. spec_bench:rag) "
                           "or leave the colon out")
    if base not in TASK_NAMES:
        close = difflib.get_close_matches(base, TASK_NAMES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise HarnessError(f"unknown task {base!r}{hint} (available: {', '.join(TASK_NAMES)}, or --prompts FILE.jsonl)")
