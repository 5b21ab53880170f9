"""Evaluation: tasks, the lm-eval model and task configs, and the scorers (sandbox, SQL, judge)."""
