"""lm-evaluation-harness task configurations shipped with the harness: gsm8k, humaneval, spider, mt_bench.

Each folder holds lm-eval YAML (a raw-completion variant and, where prompts differ, a `_chat` variant)
plus a utils module that loads the data offline. `harness.evaluation.lm_eval_model` loads them with
`TaskManager(include_path=TASKS_DIR, include_defaults=False)`; see `harness.evaluation.tasks.TASKS` for the catalogue.
"""
from pathlib import Path

TASKS_DIR = Path(__file__).parent
