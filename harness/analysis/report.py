"""The report as a set: leaderboard.csv, runs.csv, acceptance.csv, plots/*.png, report.md and headline.md under one
folder, written together.

    board, written = report(["results/runs"], Path("results"), command="harness report results/runs")
Plots are drawn into a staging folder, then, under an exclusive lock on the output folder, swapped in with
the CSV and report.md, so a reader holding the shared lock (`report_lock(out, shared=True)`) sees one set.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from harness import HarnessError
from harness.analysis.acceptance import acceptance
from harness.analysis.leaderboard import Runs, leaderboard, load_runs, run_speeds, speed_warnings, write_csv
from harness.analysis.headline import render_headline
from harness.analysis.markdown import find_profile, render
from harness.analysis.plots import make_plots
from harness.engine.records import make_dir, write_atomic


@contextmanager
def report_lock(out: Path, shared: bool = False):
    """Hold the report folder `out`: exclusively to write a report, shared to read one writer's complete
    set (leaderboard.csv, report.md and plots/ from the same report) while others may be writing.
    An flock on the folder itself (Linux, macOS): released when the holder ends, even if it crashes."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_report(runs: Runs, board: pd.DataFrame, out: Path, command: str = "", plots: bool = True,
                 warn=None) -> dict[str, Path]:
    """leaderboard.csv, plots/*.png, report.md and headline.md under `out` as one set: the plots are drawn into a
    staging folder, then under `report_lock` the plots folder is swapped in whole and the two files are
    written atomically, so that concurrent reports on one `out` never mix. Returns the paths written."""
    make_dir(out)
    written, figures, staging = {"leaderboard": out / "leaderboard.csv"}, {}, None
    try:
        if plots:
            staging = Path(tempfile.mkdtemp(dir=out, prefix=".plots-"))
            drawn = make_plots(board, runs.samples, staging)
            figures = {key: {kind: out / "plots" / path.name for kind, path in kinds.items()}
                       for key, kinds in drawn.items()}
            written.update({f"plot:{path.stem}": path for kinds in figures.values() for path in kinds.values()})
        written["report"], written["headline"] = out / "report.md", out / "headline.md"
        written["runs"], written["acceptance"] = out / "runs.csv", out / "acceptance.csv"
        speeds, acc = run_speeds(runs), acceptance(board, runs.samples)
        for w in speed_warnings(speeds):
            runs.warnings.append(w)
            if warn:
                warn(w)
        profiles = {key: find_profile(*key, out) for key in board.groupby(["model", "hardware"], sort=False).groups}
        text = render(runs, board, figures, out, command, profiles, speeds, acc)
        headline = render_headline(board, profiles, command, speeds)
        with report_lock(out):
            if staging is not None:
                _swap_in(staging, out / "plots")
            write_csv(board, written["leaderboard"])
            write_csv(speeds, written["runs"])
            write_csv(acc, written["acceptance"])
            write_atomic(written["report"], text)
            write_atomic(written["headline"], headline)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return written


def _swap_in(staging: Path, target: Path) -> None:
    """Replace the folder `target` by `staging` (two renames; the old one is then deleted)."""
    staging.chmod(0o755)  # mkdtemp makes it private; plots are for reading
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=".plots-old-"))
        os.replace(target, old)  # over the empty folder just made
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def report(paths, out: Path, command: str = "", warn=None, n_boot: int = 2000, seed: int = 0,
           plots: bool = True) -> tuple[pd.DataFrame, dict[str, Path]]:
    """`harness report`: load the runs under `paths`, build the leaderboard, write everything under `out`."""
    if seed < 0:
        raise HarnessError(f"--seed must be 0 or more (got {seed})")
    runs = load_runs(paths, warn)
    board = leaderboard(runs, n_boot=n_boot, seed=seed, warn=warn)
    return board, write_report(runs, board, out, command=command, plots=plots)
