"""What the sandbox costs, and whether the Spider time and memory limits hold (figures for docs/sandbox.md).

    python benchmarks/sandbox_overhead.py [--repeats 20] [--limit N] [--skip-canonical] [--skip-sql]
1. Wall time per trivial program: bare `python -I -S`, the sandbox without OS isolation, and with bubblewrap.
2. All 164 HumanEval canonical solutions through the scorer, one after another, both ways (all must pass).
3. Spider: `SELECT 1` per query, and each huge-result query of tests/test_spider_sql.py with a 5 s limit: how
   long it took and the peak RSS of the harness process (a fresh interpreter per query, so the peak is its own).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's harness and tests
from harness.evaluation import sandbox  # noqa: E402
from harness.evaluation.lm_tasks.humaneval import utils as he  # noqa: E402
from harness.evaluation.spider_sql import execute  # noqa: E402
from tests.test_spider_sql import HUGE, MEASURE  # noqa: E402  (the same queries as the tests)


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_program(repeats: int) -> None:
    bare = median_s(lambda: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True), repeats)
    guard = median_s(lambda: sandbox.run_python("assert 1 + 1 == 2", isolate=False), repeats)
    isolated = median_s(lambda: sandbox.run_python("assert 1 + 1 == 2", require_isolation=True), repeats)
    print(f"per program (median of {repeats}): bare python {bare * 1000:.0f} ms, sandbox without OS isolation "
          f"{guard * 1000:.0f} ms, with bwrap {isolated * 1000:.0f} ms (+{(isolated - guard) * 1000:.0f} ms)")


def canonical(limit: int | None) -> None:
    docs = list(he.load()["test"])[:limit]
    for isolate in (False, True):
        t0 = time.perf_counter()
        passed = sum(sandbox.run_python(he.program(d, d["canonical_solution"], False), he.TIMEOUT_S,
                                        he.MEMORY_MB, isolate=isolate, require_isolation=isolate).passed for d in docs)
        print(f"{len(docs)} canonical solutions, {'bwrap' if isolate else 'no OS isolation'}: {passed} passed "
              f"in {time.perf_counter() - t0:.1f} s")


def sql(repeats: int, limit: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "t.sqlite"
        sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
        print(f"SELECT 1: {median_s(lambda: execute(db, 'SELECT 1'), repeats) * 1000:.0f} ms per query (median)")
        for name, query in list(HUGE.items())[:limit]:
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", MEASURE.replace("timeout_s=1.0", "timeout_s=5.0"), str(db),
                                  query], capture_output=True, text=True, check=True, cwd=ROOT)
            seen = json.loads(out.stdout)
            print(f"{name:28s} execute {seen['query_s']:5.2f} s (whole process {time.perf_counter() - t0:5.2f} s), "
                  f"harness peak RSS {seen['peak_kib'] / 1024:.0f} MiB (before the query {seen['before_kib'] / 1024:.0f}):"
                  f" {seen['error']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--limit", type=int, help="only the first N canonical solutions and huge queries (and N repeats)")
    ap.add_argument("--skip-canonical", action="store_true")
    ap.add_argument("--skip-sql", action="store_true")
    # the benchmark suite's common flags: no model runs here, so --model is only echoed
    ap.add_argument("--model", default="none")
    ap.add_argument("--max-new-tokens", type=int)
    args = ap.parse_args(argv)
    repeats = min(args.repeats, args.limit) if args.limit else args.repeats
    print(f"model: {args.model} (unused: the sandbox runs model-written code, not a model)")
    print("isolation:", json.dumps(sandbox.isolation_report()))
    per_program(repeats)
    if not args.skip_canonical:
        canonical(args.limit)
    if not args.skip_sql:
        sql(repeats, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
