"""Orchestration: `harness run` (one run folder) and `harness bench` (a sweep)."""
