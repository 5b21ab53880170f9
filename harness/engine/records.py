"""Run records on disk: DIR/<run_id>/run.json (conditions), samples.jsonl (one row per request per
method, appended as produced) and summary.json (derived). Reading tolerates a torn last line, so an
interrupted run resumes without losing or redoing finished samples. What a run records about its conditions (model
digests, git commit, hardware, versions) is harness.engine.provenance.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path


from harness import HarnessError

log = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
MANIFEST = "run.json"
SUMMARY = "summary.json"
SCORES = "scores.jsonl"  # per-sample metric values, {"method", "doc_id", "scores"}
PART = "samples.rank{}.jsonl"  # a data-parallel run's rows, one file per rank, until rank 0 merges them


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    os.replace(tmp, path)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file through a temporary file in the same folder and a rename, so that readers (and a
    second writer) only ever see a complete file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path} is not valid JSON ({e}); the run folder is damaged") from None
    except OSError as e:
        raise HarnessError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(obj, dict):
        raise HarnessError(f"{path} holds a JSON {type(obj).__name__}, not an object; the run folder is damaged")
    return obj


# What the readers of a run.json rely on: {section: {key: type}} (an empty dict: the section itself)
MANIFEST_SHAPE = {"config": {}, "model": {"name": str}, "task": {"name": str}, "hardware": {"label": str},
                  "method": {"name": str}}


def read_manifest(path: Path) -> dict:
    """A run's run.json, checked to have the shape the readers rely on (MANIFEST_SHAPE, method options an
    object): a damaged manifest is one clear HarnessError naming the file and the field."""
    info = read_json(path)
    for section, keys in MANIFEST_SHAPE.items():
        value = info.get(section)
        if not isinstance(value, dict):
            raise HarnessError(f"{path}: \"{section}\" is {_shown(value)}, not an object; the run folder is damaged")
        for key, kind in keys.items():
            if not isinstance(value.get(key), kind):
                raise HarnessError(f"{path}: \"{section}.{key}\" is {_shown(value.get(key))}, not a "
                                   f"{kind.__name__}; the run folder is damaged")
    if not isinstance(info["method"].get("options") or {}, dict):
        raise HarnessError(f"{path}: \"method.options\" is not an object; the run folder is damaged")
    return info


def _shown(value) -> str:
    return "missing" if value is None else repr(value) if len(repr(value)) < 40 else f"a {type(value).__name__}"


NUMBERS = ("prompt_tokens", "max_new_tokens", "seed", "new_tokens", "steps", "tokens_per_step", "wall_time_s",
           "tokens_per_s", "ttft_s", "drafted_tokens", "accepted_tokens", "draft_forwards", "stationary_tokens",
           "batch", "batch_size", "batch_wall_time_s")
TIMED = ("new_tokens", "steps", "wall_time_s")  # what a row without an error must have
STEP_LISTS = ("step_tokens", "step_drafted", "step_accepted", "step_draft_forwards", "step_stationary")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def row_problem(row: dict) -> str | None:
    """What is wrong with a samples row's types (None: nothing), so that readers skip it with a warning
    instead of failing on it: method a string, doc_id a string or integer, numbers numbers, and the
    timings present unless the row records an error."""
    if not isinstance(row.get("method"), str):
        return f"method is {_shown(row.get('method'))}, not a string"
    if not isinstance(row.get("doc_id"), (str, int)) or isinstance(row.get("doc_id"), bool):
        return f"doc_id is {_shown(row.get('doc_id'))}, not a string or integer"
    if row.get("turn") is not None and (not isinstance(row["turn"], int) or isinstance(row["turn"], bool)):
        return f"turn is {_shown(row['turn'])}, not an integer"
    for key in ("error", "output_sha1", "output", "stop_reason"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{key} is {_shown(row[key])}, not a string"
    for key in NUMBERS:
        if row.get(key) is not None and not _number(row[key]):
            return f"{key} is {_shown(row[key])}, not a number"
    for key in STEP_LISTS:
        if row.get(key) is not None and not (isinstance(row[key], list) and all(map(_number, row[key]))):
            return f"{key} is {_shown(row[key])}, not a list of numbers"
    if row.get("error") is None:
        missing = [k for k in TIMED if row.get(k) is None]
        if missing:
            return f"{missing[0]} is missing in a row without an error"
    return None


def check_writable_dir(path: str | Path, flag: str) -> None:
    """A clear error now, before any work, when `path` cannot become a folder to write in: a file on the
    way (`--runs-dir somefile/sub`) or a folder without write permission."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise HarnessError(f"{flag} {path}: {p} is a file, so no folder can be made there")
    if not os.access(p, os.W_OK | os.X_OK):
        raise HarnessError(f"{flag} {path}: {p} is not writable")


def make_dir(path: Path, exist_ok: bool = True) -> None:
    """mkdir -p, with an OSError (a file in the way, no permission, a full disk) as one HarnessError."""
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as e:
        raise HarnessError(f"cannot create the folder {path}: {e.strerror or e}") from None


def jsonl_lines(path: Path, errors: str = "strict") -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line of a JSONL file; a file that cannot be read is one error."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors=errors)
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """Strict reading (data files, judge prompts): (line number, object) per non-blank line; the first bad
    line is an error naming file and line (not JSON, not an object, or missing a `required` key)."""
    rows = []
    for lineno, line in jsonl_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise HarnessError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise HarnessError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in required if k not in row]
        if missing:
            raise HarnessError(f"{path}:{lineno}: missing key(s) {', '.join(missing)}")
        rows.append((lineno, row))
    return rows


def read_samples(path: Path, repair: bool = False, warn=None, required: tuple[str, ...] = (), check=None) -> list[dict]:
    """Rows of samples.jsonl. A torn or corrupt line (or one lacking a `required` key, or one that
    `check(row)` finds a problem with, e.g. `row_problem`) is skipped with a warning naming the file and
    line, passed to `warn` (default: the log); with repair=True the file is rewritten without it, so that
    appending continues from clean rows."""
    if not path.exists():
        return []
    warn = warn or log.warning
    rows, bad = [], 0
    try:
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise HarnessError(f"cannot read {path}: {e.strerror or e}") from None
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            if required:  # a reader that checks rows also reports blank lines
                warn(f"{path}:{lineno}: skipping an empty line")
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"no {missing[0]!r}")
            problem = check(row) if check else None
            if problem:
                bad += 1
                warn(f"{path}:{lineno}: skipping a malformed row ({problem})")
                continue
            rows.append(row)
        except ValueError as e:
            bad += 1
            reason = str(e) if not isinstance(e, json.JSONDecodeError) else "not valid JSON"
            warn(f"{path}:{lineno}: skipping a corrupt row ({reason}; an interrupted write?)")
    if repair and (bad or (raw and not raw.endswith("\n"))):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    return rows


class SampleWriter:
    """Appends one JSON row per line, flushed and fsynced so that a crash loses at most the row in flight."""

    def __init__(self, path: Path):
        self.f = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row, default=str) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def part_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / PART.format(rank)


def part_files(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob(PART.format("*")))


def request_order(row: dict) -> tuple:
    """A samples row's place in its run: a request's seed is the run's seed plus the request's index
    (harness.engine.session.Session.run_pair), and `order` is its method's place within the request."""
    seed, order = row.get("seed"), row.get("order")
    return (float("inf") if seed is None else seed, float("inf") if order is None else order)


def merge_parts(run_dir: Path) -> int:
    """Fold the ranks' part files into samples.jsonl: each (method, doc_id, turn) once (samples.jsonl's row
    first, then the parts in rank order), every row in request order; then remove the parts. The new
    samples.jsonl replaces the old one whole (a rename), so a crash at any point loses nothing and a rerun
    merges again. Returns the number of rows taken from the parts (0, and nothing touched, without parts)."""
    parts = part_files(run_dir)
    if not parts:
        return 0
    rows: dict[tuple, dict] = {}
    for r in read_samples(Path(run_dir) / SAMPLES, check=row_problem):
        rows.setdefault((r["method"], r["doc_id"], r.get("turn") or 1), r)
    before = len(rows)
    for path in parts:
        for r in read_samples(path, check=row_problem):
            rows.setdefault((r["method"], r["doc_id"], r.get("turn") or 1), r)
    write_jsonl_atomic(Path(run_dir) / SAMPLES, sorted(rows.values(), key=request_order))
    for path in parts:
        path.unlink()
    return len(rows) - before
