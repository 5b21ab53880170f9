"""Spec-Bench for the lm-eval task: DATA_DIR/spec_bench/question.jsonl (github.com/hemingkx/Spec-Bench,
data/spec_bench/question.jsonl; there is no hub copy). Every question runs as a conversation (MT-bench's 2 turns,
the others' 1); its doc's `category` is Spec-Bench's reporting category, the unit of its evaluation/speed.py.

    data = load(data_dir="../shared/data", subset="translation+rag")   # the documents in stratified order
The documents are interleaved by data category (one of each in turn), so that lm-eval's `--limit N` (its first N)
is a stratified slice: --limit 26 = 2 of each of the 13 categories. Only math_reasoning has a metric: its
references are GSM8K solutions, scored with lm-eval's GSM8K flexible extraction and exact match.
"""
from __future__ import annotations

import difflib
import json

from harness import HarnessError
from harness.evaluation.lm_tasks.common import LAYOUT_HINT, dataset_dict, local_file, read_jsonl
from harness.evaluation.lm_tasks.common import mean_ignoring_nan  # noqa: F401  (the yaml's aggregation)

FILE = "spec_bench/question.jsonl"
MT_BENCH = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
# data category -> Spec-Bench's reporting category (evaluation/speed.py pools MT-bench's eight as "mt_bench")
GROUPS = {**{c: "mt_bench" for c in MT_BENCH}, "translation": "translation", "summarization": "summarization",
          "qa": "qa", "math_reasoning": "math_reasoning", "rag": "rag"}
REPORTED = tuple(dict.fromkeys(GROUPS.values()))  # speed.py's order
# the published file's shape, for planning a run without reading it (--dry-run): questions and turns per category
SIZES = {**{c: (10, 2) for c in MT_BENCH}, **{c: (80, 1) for c in GROUPS if c not in MT_BENCH}}
SCORED = "math_reasoning"  # its references end in "#### N" (GSM8K); no other category has a metric here
SEPARATOR = "+"  # spec_bench:translation+rag (a comma already separates `bench --tasks`)
# lm-eval's gsm8k task (harness/evaluation/lm_tasks/gsm8k/gsm8k.yaml): flexible extraction, exact match settings
FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")
NAN = float("nan")


def categories(subset: str | None) -> list[str]:
    """The data categories a filter selects: `a+b`, each a data category (writing, translation, ...) or a reporting
    one (mt_bench: its eight); None or "" selects all. A name that is neither is one error with a suggestion."""
    if not subset:
        return list(GROUPS)
    out = []
    for name in (n.strip() for n in subset.split(SEPARATOR)):
        if name in GROUPS:
            out.append(name)
        elif name in REPORTED:
            out += [c for c, g in GROUPS.items() if g == name]
        else:
            known = [*REPORTED, *MT_BENCH]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            raise HarnessError(f"spec_bench has no category {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                               + f" (categories: {', '.join(known)}; join several with {SEPARATOR!r})")
    return list(dict.fromkeys(out))


def stratified(items: list, category) -> list:
    """`items` interleaved by category (one of each category in turn, categories in order of first appearance), so
    that every prefix spreads over the categories; within a category the file's order is kept."""
    by: dict[str, list] = {}
    for item in items:
        by.setdefault(category(item), []).append(item)
    queues = list(by.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def planned_turns(subset: str | None, limit: int | None) -> list[int]:
    """The turns of each document a run sends, from the published file's shape (SIZES), without reading it."""
    keep = categories(subset)
    docs = [(c, turns) for c, (n, turns) in SIZES.items() if c in keep for _ in range(n)]
    return [turns for _, turns in stratified(docs, lambda d: d[0])][:limit]


def load(data_dir=None, subset=None, **_):
    path = local_file(data_dir, FILE, "spec_bench")
    if path is None:
        raise HarnessError(f"task spec_bench reads {FILE} from a data directory (no hub copy): {LAYOUT_HINT}")
    keep = set(categories(subset))
    docs = []
    for i, row in enumerate(read_jsonl(path, ("question_id", "category", "turns")), 1):
        where = f"{path}: question {i}"
        turns, category = row["turns"], row["category"]
        if category not in GROUPS:
            raise HarnessError(f"{where}: unknown category {category!r} (Spec-Bench's are {', '.join(GROUPS)})")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise HarnessError(f"{where}: expected \"turns\" to be a list of strings")
        if category in keep:
            docs.append({"question_id": int(row["question_id"]), "category": GROUPS[category],
                         "subcategory": category, "turns": turns, "answer": _gsm8k_answer(row)})
    return dataset_dict({"test": stratified(docs, lambda d: d["subcategory"])})


def _gsm8k_answer(row: dict) -> str:
    """The GSM8K solution of a math_reasoning question ("" for the other categories, or where it is missing)."""
    ref = row.get("reference") or []
    return ref[0] if row["category"] == SCORED and ref and isinstance(ref[0], str) and "####" in ref[0] else ""


def gsm8k_exact_match(answer: str, solution: str) -> float:
    """1.0 where the last number of `answer` equals the solution's "#### N", as lm-eval's gsm8k scores it."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    ((extracted,),) = RegexFilter(regex_pattern=FLEXIBLE, group_select=-1).apply([[answer]], [{}])
    return float(exact_match_hf_evaluate([extracted], [solution], regexes_to_ignore=list(IGNORE),
                                         ignore_case=True)["exact_match"])


def process_results(doc, results):
    """GSM8K exact match of the first answer for math_reasoning; NaN (no metric) for every other category."""
    answers = json.loads(results[0])
    if doc["subcategory"] != SCORED or not doc["answer"]:
        return {"gsm8k_exact_match": NAN}
    return {"gsm8k_exact_match": gsm8k_exact_match(answers[0], doc["answer"])}

