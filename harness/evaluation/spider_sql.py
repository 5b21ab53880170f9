"""Spider text-to-SQL helpers: schema prompts from tables.json, SQL extraction from replies, and scoring.

    tables = load_tables("spider/tables.json"); prompt = schema_prompt(tables["concert_singer"])
    result = score(extract_sql(reply), gold_sql, "spider/database/concert_singer/concert_singer.sqlite")
`score` gives execution accuracy (read-only, time-limited sqlite) and normalised exact string match.
"""
from __future__ import annotations

import base64
import json
import logging
import re
from collections import Counter
from pathlib import Path

from harness import HarnessError
from harness.evaluation.sandbox import run_child

logger = logging.getLogger(__name__)

class QueryError(HarnessError):
    """A query could not be run: sqlite error, timeout, write attempt, too many rows, missing database."""


_TYPES = {"text": "TEXT", "number": "NUMBER", "time": "TEXT", "boolean": "BOOLEAN"}
_SCHEMA_KEYS = ("table_names_original", "column_names_original", "column_types", "primary_keys", "foreign_keys")
_KEYWORDS = set("""ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN
BY CASCADE CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT DO DROP EACH ELSE END ESCAPE EXCEPT
EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM FULL GENERATED GLOB GROUP GROUPS HAVING IF
IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD INTERSECT INTO IS ISNULL JOIN KEY LAST LEFT LIKE LIMIT
MATCH MATERIALIZED NATURAL NO NOT NOTHING NOTNULL NULL NULLS OF OFFSET ON OR ORDER OTHERS OUTER OVER PARTITION PLAN
PRAGMA PRECEDING PRIMARY QUERY RAISE RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE RENAME REPLACE RESTRICT RETURNING
RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN TIES TO TRANSACTION UNBOUNDED UNION UNIQUE UPDATE
USING VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH WITHOUT""".split())
# quoted strings/identifiers ('..', "..", `..`, [..]; unterminated ones run to the end) and comments
_LEXEME = re.compile(r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?|(--[^\n]*|/\*.*?(?:\*/|\Z))""", re.S)
_FENCE = re.compile(r"```(?:[ \t]*([A-Za-z][\w+-]*)[ \t]*\n)?(.*?)(?:```|\Z)", re.S)
MAX_RESULT_BYTES = 16 * 2**20  # a result larger than this (as JSON lines) is an error
MEMORY_MB = 1024  # address space of the process that runs a query


def _quote_ident(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.upper() not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def schema_prompt(table: dict) -> str:
    """One `CREATE TABLE` statement per table of a tables.json entry, with PRIMARY KEY and FOREIGN KEY clauses."""
    q = _quote_ident
    try:
        names, cols, types = table["table_names_original"], table["column_names_original"], table["column_types"]
        body: dict[int, list[str]] = {i: [] for i in range(len(names))}
        for (t, col), typ in zip(cols, types):
            if t >= 0:  # index -1 is the '*' pseudo-column
                body[t].append(f"  {q(col)} {_TYPES.get(typ, 'TEXT')}")
        pks: dict[int, list[str]] = {}
        for pk in table["primary_keys"]:  # ints; composite keys may also come as lists of ints
            for c in pk if isinstance(pk, list) else [pk]:
                pks.setdefault(cols[c][0], []).append(q(cols[c][1]))
        for t, keys in pks.items():
            body[t].append(f"  PRIMARY KEY ({', '.join(keys)})")
        for c, ref in table["foreign_keys"]:
            (t, col), (rt, rcol) = cols[c], cols[ref]
            body[t].append(f"  FOREIGN KEY ({q(col)}) REFERENCES {q(names[rt])}({q(rcol)})")
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise HarnessError(f"malformed schema for db_id {table.get('db_id')!r}: {type(e).__name__}: {e}") from None
    return "\n\n".join(f"CREATE TABLE {q(name)} (\n" + ",\n".join(body[i]) + "\n);" for i, name in enumerate(names))


def load_tables(path) -> dict[str, dict]:
    """tables.json → {db_id: entry}; HarnessError (naming the file) when it is unreadable or malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise HarnessError(f"{path}: cannot read tables file as JSON: {type(e).__name__}: {e}") from None
    if not isinstance(data, list):
        raise HarnessError(f"{path}: expected a JSON list of schemas, got {type(data).__name__}")
    out: dict[str, dict] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("db_id"), str):
            raise HarnessError(f"{path}: entry {i} is not an object with a string db_id")
        missing = [k for k in _SCHEMA_KEYS if k not in entry]
        if missing:
            raise HarnessError(f"{path}: db_id {entry['db_id']!r} lacks {', '.join(missing)}")
        if entry["db_id"] in out:
            raise HarnessError(f"{path}: duplicate db_id {entry['db_id']!r}")
        out[entry["db_id"]] = entry
    return out


def _chunks(sql: str):
    """(kind, text) pieces of `sql`, kind in {'code', 'quoted', 'comment'}."""
    pos = 0
    for m in _LEXEME.finditer(sql):
        if m.start() > pos:
            yield "code", sql[pos:m.start()]
        yield ("comment" if m.group(1) else "quoted"), m.group(0)
        pos = m.end()
    if pos < len(sql):
        yield "code", sql[pos:]


def _first_statement(sql: str) -> str:
    """Drop comments, cut at the first ';' outside quotes, collapse whitespace outside quotes."""
    out = []
    for kind, s in _chunks(sql):
        if kind == "code" and ";" in s:
            out.append(s.split(";", 1)[0])
            break
        out.append(" " if kind == "comment" else s)
    return "".join(s if k == "quoted" else re.sub(r"\s+", " ", s) for k, s in _chunks("".join(out))).strip()


def extract_sql(text: str) -> str:
    """The SQL in a model reply: the first ```sql (or untagged) fenced block, else the first fenced block,
    else the text from the first line starting with SELECT/WITH (or the start) up to the first blank line.
    Only the first statement is kept; comments are dropped and whitespace outside quotes collapsed."""
    blocks = [((m.group(1) or "").lower(), m.group(2)) for m in _FENCE.finditer(text)]
    if blocks:
        sql = next((b for lang, b in blocks if lang in ("", "sql", "sqlite", "sqlite3")), blocks[0][1])
    else:
        m = re.search(r"^[ \t]*(?:select|with)\b", text, re.I | re.M)
        sql = re.split(r"\n[ \t]*\n", text[m.start() if m else 0:].strip(), maxsplit=1)[0]
    return _first_statement(sql)


def normalize_sql(sql: str) -> str:
    """Canonical text for exact match: comments dropped, lowercase outside quotes (quoted text kept verbatim),
    one space between tokens, none after '(' or before ')' and ',', trailing ';' removed."""
    tokens: list[str] = []
    for kind, s in _chunks(sql):
        if kind == "quoted":
            tokens.append(s)
        elif kind == "code":
            tokens += re.findall(r"[\w.$]+|<>|!=|<=|>=|==|\|\||\S", s.lower())
    while tokens and tokens[-1] == ";":
        tokens.pop()
    out = ""
    for tok in tokens:
        out += tok if not out or out.endswith("(") or tok in (")", ",") else " " + tok
    return out


def has_order_by(sql: str) -> bool:
    """Whether `sql` has an ORDER BY at the top level (not inside quotes, comments or parentheses)."""
    depth, top = 0, []
    for ch in "".join(s if k == "code" else " " for k, s in _chunks(sql)):
        depth += (ch == "(") - (ch == ")")
        top.append(ch if depth == 0 and ch != ")" else " ")
        depth = max(depth, 0)
    return re.search(r"\border\s+by\b", "".join(top), re.I) is not None


# Runs in the sandbox (harness.evaluation.sandbox.run_child) as `python -c QUERY_CHILD DB TIMEOUT_S MAX_ROWS MAX_BYTES`,
# the query on stdin. It writes one JSON line per row (a blob as {"b": base64}), then {"ok": n} or {"error": msg}.
# It stops itself at its time, row and byte limits; the parent kills it a little later regardless.
QUERY_CHILD = r"""
import binascii, sqlite3, sys, time
from _json import encode_basestring_ascii as text  # the C half of json: the json package would import re
db, timeout_s, max_rows, max_bytes = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
INF = float("inf")
deadline, out = time.monotonic() + timeout_s, sys.stdout
def fail(msg):
    out.write('{"error": ' + text(msg) + "}\n")
    out.flush()
    sys.exit(0)
def value(v):  # JSON; sqlite gives None, int, float (never NaN), str or bytes
    if isinstance(v, str):
        return text(v)
    if isinstance(v, bytes):
        return '{"b": "' + binascii.b2a_base64(v, newline=False).decode() + '"}'
    if isinstance(v, float) and v in (INF, -INF):
        return "Infinity" if v > 0 else "-Infinity"
    return "null" if v is None else repr(v)
try:
    uri = "".join(c if c.isalnum() or c in "/._-" else "".join(f"%{b:02X}" for b in c.encode()) for c in db)
    conn = sqlite3.connect(f"file:{uri}?mode=ro", uri=True, timeout=timeout_s)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    conn.execute("PRAGMA query_only=ON")
    if hasattr(conn, "setlimit"):  # Python >= 3.11
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_bytes)  # no single value larger than the whole result
    conn.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in ALLOWED else sqlite3.SQLITE_DENY)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 100)  # non-zero aborts the statement
    cur = conn.execute(sys.stdin.buffer.read().decode())
    if cur.description is None:
        fail("statement returns no result set (only SELECT queries are allowed)")
    n = size = 0
    for row in cur:
        n += 1
        line = "[" + ", ".join(map(value, row)) + "]\n"
        size += len(line)
        if n > max_rows:
            fail(f"query returns more than {max_rows} rows")
        if size > max_bytes:
            fail(f"query result is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            fail(f"query timed out after {timeout_s:g} s")
        out.write(line)
except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError) as e:
    if time.monotonic() > deadline:
        fail(f"query timed out after {timeout_s:g} s")
    msg = str(e) or "out of memory"
    msg += " (only read-only SELECT queries are allowed)" if "not authorized" in msg else ""
    fail(f"{type(e).__name__}: {msg}")
out.write('{"ok": ' + str(n) + "}\n")
"""
def execute(db_path, sql: str, timeout_s: float = 5.0, max_rows: int = 100_000, max_bytes: int = MAX_RESULT_BYTES,
            require_isolation: bool = False) -> list[tuple]:
    """Rows of one query; QueryError on any sqlite error, write attempt, timeout, more than max_rows rows or
    max_bytes bytes (as JSON). Runs in harness.evaluation.sandbox (read-only bind of the file, memory limit, killed soon
    after timeout_s) opened mode=ro + PRAGMA query_only + a reads-only authorizer; bad UTF-8 decodes as U+FFFD."""
    path = Path(db_path).absolute()
    if not path.is_file():
        raise QueryError(f"database not found: {path}")
    if not sql.strip():
        raise QueryError("empty query")
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError as e:
        raise QueryError(f"query is not valid text: {e}") from None
    result = run_child(QUERY_CHILD, [str(path), str(timeout_s), str(max_rows), str(max_bytes)], sql.encode(),
                       timeout_s, MEMORY_MB, read_only=[str(path)], max_stdout=max_bytes + 2**16,
                       require_isolation=require_isolation)
    if not result.finished:
        raise QueryError(f"query timed out after {timeout_s:g} s (killed)")
    lines = result.stdout.splitlines()
    try:
        status = json.loads(lines[-1]) if lines else None
    except ValueError:
        status = None
    if not isinstance(status, dict):
        why = result.stderr_tail.splitlines()[-1] if result.stderr_tail else f"exit code {result.returncode}"
        raise QueryError(f"query process failed: {why}")
    if "error" in status:
        raise QueryError(status["error"])
    return [tuple(_decode(v) for v in json.loads(line)) for line in lines[:-1]]


def _decode(v):
    return base64.b64decode(v["b"]) if isinstance(v, dict) else v


def _norm_value(v):
    # Python already has 1 == 1.0 (same hash); rounding floats to 6 decimals makes 0.1 + 0.2 == 0.3. Floats
    # straddling a rounding boundary can still differ. Kinds stay distinct: '1' != 1, None only equals None.
    return round(v, 6) if isinstance(v, float) else v


def results_match(pred_rows, gold_rows, ordered: bool) -> bool:
    """Whether two results are equal: as multisets of rows (duplicates count), or as lists when `ordered`.
    Columns are compared by position (no column permutation); numbers compare by value (see _norm_value)."""
    pred = [tuple(map(_norm_value, r)) for r in pred_rows]
    gold = [tuple(map(_norm_value, r)) for r in gold_rows]
    return pred == gold if ordered else Counter(pred) == Counter(gold)


def score(pred_sql: str, gold_sql: str, db_path, timeout_s: float = 5.0) -> dict:
    """{'exec_acc': 0/1, 'exact_match': 0/1, 'error': None | str}; error is why the prediction failed to run.
    Result order matters only when the gold query has a top-level ORDER BY. A failing gold raises QueryError."""
    try:
        gold = execute(db_path, gold_sql, timeout_s)
    except QueryError as e:
        raise QueryError(f"gold query failed on {db_path}: {e}") from None
    result = {"exec_acc": 0, "exact_match": int(normalize_sql(pred_sql) == normalize_sql(gold_sql)), "error": None}
    try:
        pred = execute(db_path, pred_sql, timeout_s)
    except QueryError as e:
        logger.debug("predicted query failed: %s: %s", e, pred_sql)
        result["error"] = str(e)
        return result
    result["exec_acc"] = int(results_match(pred, gold, ordered=has_order_by(gold_sql)))
    return result
