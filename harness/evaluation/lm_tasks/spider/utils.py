"""Spider (dev) for the lm-eval task: DATA_DIR/spider/{dev.json,tables.json,database/<db>/<db>.sqlite}.
Prompts carry the schema rendered from tables.json; scoring executes predicted and gold SQL on the
read-only database (harness.evaluation.spider_sql). Examples whose database is missing are left out and counted."""
from functools import lru_cache
from pathlib import Path

from harness import HarnessError
from harness.evaluation.lm_tasks.common import LAYOUT_HINT, dataset_dict, read_json_list
from harness.evaluation.spider_sql import extract_sql, load_tables, schema_prompt, score

TIMEOUT_S = 5.0
FIELDS = ("db_id", "question", "query")


def _root(data_dir) -> Path:
    if not data_dir:
        raise HarnessError("task spider needs the Spider databases, which no hub copy holds: pass --data-dir DIR "
                           "(or set HARNESS_DATA_DIR) holding spider/dev.json, spider/tables.json, spider/database/ "
                           "from the Spider release (yale-lily.github.io/spider; README.md#data)")
    root = Path(data_dir).expanduser() / "spider"
    for rel in ("dev.json", "tables.json", "database"):
        if not (root / rel).exists():
            raise HarnessError(f"task spider needs {root / rel}, which is missing; {LAYOUT_HINT}")
    return root


def db_path(root: Path, db_id: str) -> Path:
    return root / "database" / db_id / f"{db_id}.sqlite"


@lru_cache(maxsize=4)
def _examples(data_dir):
    root = _root(data_dir)
    dev = read_json_list(root / "dev.json", FIELDS)
    tables = load_tables(root / "tables.json")
    unknown = sorted({ex["db_id"] for ex in dev} - set(tables))
    if unknown:
        raise HarnessError(f"{root / 'tables.json'} has no schema for {', '.join(unknown)}; is it Spider's tables.json?")
    kept, skipped = [], {}
    for ex in dev:
        path = db_path(root, ex["db_id"])
        if not path.exists():
            reason = f"database {ex['db_id']} missing"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        kept.append({**{k: ex[k] for k in FIELDS}, "db_path": str(path), "schema": schema_prompt(tables[ex["db_id"]])})
    return kept, skipped


def load(data_dir=None, **_):
    return dataset_dict({"validation": _examples(data_dir)[0]})


def skipped(data_dir=None, **_) -> dict:
    return dict(_examples(data_dir)[1])


def doc_to_chat(doc) -> str:
    return (f"Here is the schema of a SQLite database:\n\n{doc['schema']}\n\n"
            "Write one SQLite query that answers the question below. Reply with the query only, in a ```sql code block."
            f"\n\nQuestion: {doc['question']}")


def process_results(doc, results):
    s = score(extract_sql(results[0]), doc["query"], doc["db_path"], timeout_s=TIMEOUT_S)
    return {"exec_acc": float(s["exec_acc"]), "exact_string_match": float(s["exact_match"])}
