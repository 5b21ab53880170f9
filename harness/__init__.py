"""Benchmark harness for parallel decoding methods: models, tasks, paired-timing runner and records."""


class HarnessError(Exception):
    """A user-facing error: the CLI prints its one-line message and exits non-zero, without a traceback."""


BASELINE = "ar"  # the method every speedup is measured against
# Default outputs, both ignored by git: run folders, and one's own reports, profiles and tuning files. The committed
# reference sweep (results/leaderboard.csv, plots/, report.md, headline.md, tuning.json, profile/, reference-runs/)
# is written by `make results` alone, which names those folders.
RUNS_DIR = "results/runs"
LOCAL_DIR = "results/local"
