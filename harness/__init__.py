"""Benchmark harness for parallel decoding methods: models, tasks, paired-timing runner and records."""


class HarnessError(Exception):
    """A user-facing error: the CLI prints its one-line message and exits non-zero, without a traceback."""

BASELINE = "ar"  # the method every speedup is measured against
