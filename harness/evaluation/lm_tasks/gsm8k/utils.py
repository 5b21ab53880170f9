"""GSM8K data for the lm-eval task: gsm8k/{test,train}.jsonl under the data dir, else openai/gsm8k (main) at the
revision pinned in common.HUB."""
from harness.evaluation.lm_tasks.common import dataset_dict, load_hub, local_file, read_jsonl

FIELDS = ("question", "answer")


def load(data_dir=None, **_):
    test = local_file(data_dir, "gsm8k/test.jsonl", "gsm8k")
    if test is None:
        return load_hub("gsm8k")
    train = local_file(data_dir, "gsm8k/train.jsonl", "gsm8k")
    keep = lambda rows: [{k: r[k] for k in FIELDS} for r in rows]  # noqa: E731
    return dataset_dict({"test": keep(read_jsonl(test, FIELDS)), "train": keep(read_jsonl(train, FIELDS))})
