"""Spider helpers: schema prompts, SQL extraction/normalisation and read-only, time-limited execution scoring.

Everything runs on tiny sqlite databases and tables.json-style dicts built in tmp_path.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import HarnessError
from harness.evaluation.spider_sql import (QueryError, execute, extract_sql, has_order_by, load_tables, normalize_sql,
                                results_match, schema_prompt, score)

SCHEMA = {
    "db_id": "tiny",
    "table_names_original": ["singer", "concert"],
    "column_names_original": [[-1, "*"], [0, "Singer_ID"], [0, "Name"], [0, "Home Town"], [0, "Order"],
                              [1, "concert_ID"], [1, "Singer_ID"], [1, "Year"], [1, "is_live"], [1, "blob"]],
    "column_types": ["text", "number", "text", "text", "number", "number", "number", "time", "boolean", "others"],
    "primary_keys": [1, 5],
    "foreign_keys": [[6, 1]],
}


@pytest.fixture
def db(tmp_path):
    """A 2-table sqlite file in a directory whose name needs URL quoting."""
    path = tmp_path / "d b?x#y%z" / "tiny.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE singer (Singer_ID INTEGER PRIMARY KEY, Name TEXT, Age INTEGER, Score REAL);
        INSERT INTO singer VALUES (1, 'Ann', 30, 1.0), (2, 'Bob', 25, 2.5), (3, 'Cy', 41, 0.3), (4, 'Di', 25, 7.0);
        CREATE TABLE t (x TEXT);
        INSERT INTO t VALUES (CAST(x'ff41' AS TEXT));
    """)
    conn.commit()
    conn.close()
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_schema_prompt_renders_valid_create_tables_with_keys():
    text = schema_prompt(SCHEMA)
    assert text.count("CREATE TABLE") == 2 and text.count(";") == 2
    assert "CREATE TABLE singer (" in text and "CREATE TABLE concert (" in text
    assert "Singer_ID NUMBER" in text and "Name TEXT" in text
    assert '"Home Town" TEXT' in text and '"Order" NUMBER' in text  # quoted: space / keyword
    assert "Year TEXT" in text and "is_live BOOLEAN" in text and "blob TEXT" in text
    assert "PRIMARY KEY (Singer_ID)" in text and "PRIMARY KEY (concert_ID)" in text
    assert "FOREIGN KEY (Singer_ID) REFERENCES singer(Singer_ID)" in text
    assert "*" not in text
    conn = sqlite3.connect(":memory:")  # the prompt is itself valid SQLite
    conn.executescript(text)
    assert [r[2:4] for r in conn.execute("PRAGMA foreign_key_list(concert)")] == [("singer", "Singer_ID")]
    assert [r[1] for r in conn.execute("PRAGMA table_info(singer)")] == ["Singer_ID", "Name", "Home Town", "Order"]


def test_schema_prompt_malformed_entry_is_harness_error():
    with pytest.raises(HarnessError, match="tiny"):
        schema_prompt({**SCHEMA, "foreign_keys": [[6, 99]]})


def test_load_tables(tmp_path):
    path = tmp_path / "tables.json"
    path.write_text(json.dumps([SCHEMA, {**SCHEMA, "db_id": "other"}]))
    assert sorted(load_tables(path)) == ["other", "tiny"]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"db_id": "x"}), json.dumps([1, 2]),
                                     json.dumps([{"name": "x"}]), json.dumps([{"db_id": "x"}]),
                                     json.dumps([SCHEMA, SCHEMA]), None])
def test_load_tables_malformed_names_file(tmp_path, content):
    path = tmp_path / "my_tables.json"
    if content is not None:  # None: the file does not exist
        path.write_text(content)
    with pytest.raises(HarnessError, match="my_tables.json") as err:
        load_tables(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("reply, expected", [
    ("Here you go:\n```sql\nSELECT name\n  FROM singer\nWHERE age > 20;\n```\nThis lists names.",
     "SELECT name FROM singer WHERE age > 20"),
    ("```\nselect count(*) from singer\n```", "select count(*) from singer"),
    ("```python\nprint(1)\n```\n```SQL\nSELECT 1;\n```", "SELECT 1"),
    ("```sql\nSELECT a FROM t;\nSELECT b FROM t;\n```", "SELECT a FROM t"),
    ("SELECT name FROM singer;\n\nThe query selects names.", "SELECT name FROM singer"),
    ("The answer is:\nSELECT name\nFROM singer\n\nDone", "SELECT name FROM singer"),
    ("SELECT a FROM t; DROP TABLE t;", "SELECT a FROM t"),
    ("  SELECT a FROM t WHERE b = 'x;  y'  ;", "SELECT a FROM t WHERE b = 'x;  y'"),  # quotes kept verbatim
    ("SELECT a -- a comment; not a statement end\nFROM t", "SELECT a FROM t"),
    ("```sql\nSELECT a FROM t WHERE", "SELECT a FROM t WHERE"),  # unterminated fence (hit max tokens)
])
def test_extract_sql(reply, expected):
    assert extract_sql(reply) == expected


def test_normalize_sql():
    a = normalize_sql("SELECT count( * ) ,T1.Name FROM Singer AS T1 WHERE x IN(1 ,2) AND n=\"Ab  C\" ;")
    assert a == 'select count (*), t1.name from singer as t1 where x in (1, 2) and n = "Ab  C"'
    assert normalize_sql("select count(*), t1.name\nfrom singer as t1 where x in (1, 2) and n = \"Ab  C\"") == a
    assert normalize_sql("SELECT a FROM t WHERE b = 'X'") != normalize_sql("SELECT a FROM t WHERE b = 'x'")
    assert normalize_sql("SELECT a FROM t WHERE b>=1;;") == "select a from t where b >= 1"


def test_has_order_by():
    assert has_order_by("SELECT name FROM singer ORDER BY age DESC")
    assert has_order_by("select name from singer order\n  by age")
    assert not has_order_by("SELECT name FROM singer WHERE age = (SELECT age FROM singer ORDER BY age LIMIT 1)")
    assert not has_order_by("SELECT name FROM singer WHERE name = 'order by'")
    assert not has_order_by("SELECT recorder_by FROM t")


def test_exec_acc_ignores_row_order_without_order_by(db):
    r = score("SELECT name FROM singer ORDER BY name DESC", "SELECT Name FROM singer", db)
    assert r == {"exec_acc": 1, "exact_match": 0, "error": None}
    assert score("select name from singer", "SELECT Name FROM singer;", db)["exact_match"] == 1


def test_exec_acc_respects_order_when_gold_orders(db):
    gold = "SELECT name FROM singer ORDER BY age, name"
    assert score("SELECT name FROM singer ORDER BY age DESC", gold, db)["exec_acc"] == 0
    assert score("SELECT name FROM singer ORDER BY age ASC, name", gold, db)["exec_acc"] == 1


def test_exec_acc_duplicates_and_values(db):
    assert score("SELECT DISTINCT age FROM singer", "SELECT age FROM singer", db)["exec_acc"] == 0  # multiset
    assert score("SELECT name, age FROM singer", "SELECT age, name FROM singer", db)["exec_acc"] == 0


def test_numeric_equality():
    assert results_match([(1,)], [(1.0,)], ordered=True)
    assert results_match([(0.1 + 0.2, "a")], [(0.3, "a")], ordered=False)
    assert not results_match([("1",)], [(1,)], ordered=False)
    assert not results_match([(1.5,)], [(1.4,)], ordered=False)
    assert not results_match([(1,), (2,)], [(2,), (1,)], ordered=True)
    assert results_match([(1,), (2,)], [(2,), (1,)], ordered=False)


def test_numeric_equality_end_to_end(db):
    assert score("SELECT 1.0", "SELECT 1", db)["exec_acc"] == 1
    assert score("SELECT avg(score) FROM singer WHERE singer_id IN (1, 4)", "SELECT 4", db)["exec_acc"] == 1


@pytest.mark.parametrize("pred", [
    "DROP TABLE singer", "UPDATE singer SET age = 0", "DELETE FROM singer",
    "INSERT INTO singer VALUES (9, 'Zed', 1, 1.0)", "CREATE TABLE x (a)", "CREATE TEMP TABLE x (a)",
    "ATTACH DATABASE '{attach}' AS y", "PRAGMA journal_mode=WAL", "PRAGMA query_only=OFF", "VACUUM",
    "BEGIN EXCLUSIVE", "SELECT 1; DROP TABLE singer", "WITH a AS (SELECT 1) DELETE FROM singer",
    "REPLACE INTO singer VALUES (1, 'X', 1, 1.0)", "CREATE INDEX i ON singer(age)",
])
def test_writes_are_refused_and_file_untouched(db, tmp_path, pred):
    attach = tmp_path / "attached.sqlite"
    pred = pred.format(attach=attach)
    before = _sha(db)
    r = score(pred, "SELECT count(*) FROM singer", db)
    assert r["exec_acc"] == 0 and r["error"]
    assert _sha(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["tiny.sqlite"]  # no -journal / -wal / -shm
    assert not attach.exists()
    assert execute(db, "SELECT count(*) FROM singer") == [(4,)]


def test_pathological_query_times_out(db):
    t0 = time.monotonic()
    r = score("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c",
              "SELECT 1", db, timeout_s=0.5)
    elapsed = time.monotonic() - t0
    assert r["exec_acc"] == 0 and "timed out" in r["error"]
    assert elapsed < 2.0


def test_execute_errors_are_query_errors(db, tmp_path):
    for sql in ["SELEC name FROM singer", "SELECT nope FROM singer", "", "SELECT 'a\x00b'"]:
        with pytest.raises(QueryError):
            execute(db, sql)
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(QueryError, match="not found"):
        execute(missing, "SELECT 1")
    assert not missing.exists()
    with pytest.raises(QueryError, match="more than 3 rows"):
        execute(db, "SELECT * FROM singer", max_rows=3)
    assert len(execute(db, "SELECT * FROM singer", max_rows=4)) == 4


RECURSE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c{limit}) "


def test_values_round_trip_from_the_sandboxed_query(db):
    rows = execute(db, "SELECT x'00ff10', 1.5, 9e999, NULL, 9223372036854775807, 'é ☃', -0.0")
    assert rows == [(b"\x00\xff\x10", 1.5, float("inf"), None, 2**63 - 1, "é ☃", 0.0)]
    assert execute(db, "SELECT name, age FROM singer WHERE age = 25 ORDER BY name") == [("Bob", 25), ("Di", 25)]


def test_results_are_capped_in_bytes(db):
    with pytest.raises(QueryError, match="larger than 10000 bytes"):
        execute(db, RECURSE.format(limit=" LIMIT 50") + "SELECT zeroblob(500) FROM c", max_bytes=10_000)
    assert len(execute(db, "SELECT zeroblob(500)", max_bytes=10_000)) == 1


# Huge results: each must end with an error, in the query process, without the harness holding the blobs.
HUGE = {
    "many huge columns": "SELECT " + ", ".join(["zeroblob(15000000)"] * 200),
    "a huge blob per row": RECURSE.format(limit=" LIMIT 200") + "SELECT randomblob(15000000) FROM c",
    "a blob past the length limit": "SELECT zeroblob(100000000)",
    "endless rows of small blobs": RECURSE.format(limit="") + "SELECT randomblob(1000) FROM c",
    "sort on huge keys": RECURSE.format(limit="") + "SELECT x FROM c ORDER BY randomblob(1000000) LIMIT 1",
    "group_concat growth": RECURSE.format(limit="") + "SELECT group_concat(randomblob(1000)) FROM c",
    "aggregate over huge blobs": RECURSE.format(limit="") + "SELECT count(randomblob(16000000)) FROM c",
}
# Peak RSS from VmHWM: getrusage's ru_maxrss keeps the peak of the process that forked this one.
MEASURE = """
import json, sys, time
from harness.evaluation.spider_sql import QueryError, execute
def peak_kib():
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
before = peak_kib()
start = time.perf_counter()
try:
    execute(sys.argv[1], sys.argv[2], timeout_s=1.0)
    error = None
except QueryError as e:
    error = str(e)
seconds = time.perf_counter() - start
print(json.dumps({"error": error, "peak_kib": peak_kib(), "before_kib": before, "query_s": seconds}))
"""


@pytest.mark.parametrize("query", HUGE)
def test_huge_results_fail_in_the_query_process(db, query):
    # a fresh interpreter, so that its peak RSS is this query's alone
    out = subprocess.run([sys.executable, "-c", MEASURE, str(db), HUGE[query]], capture_output=True, text=True,
                         timeout=60, check=True, cwd=Path(__file__).resolve().parents[1])
    seen = json.loads(out.stdout)
    assert seen["error"], seen
    assert seen["peak_kib"] - seen["before_kib"] < 64 * 1024  # the harness never held the blobs (< 64 MiB)


def test_bad_utf8_is_replaced(db):
    assert execute(db, "SELECT x FROM t") == [("\ufffdA",)]


def test_failing_gold_raises(db):
    with pytest.raises(QueryError, match="gold"):
        score("SELECT 1", "SELECT nope FROM singer", db)
    r = score("SELECT nope FROM singer", "SELECT 1", db)
    assert r["exec_acc"] == 0 and "nope" in r["error"]
