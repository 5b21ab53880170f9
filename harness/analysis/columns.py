"""The leaderboard's columns, each with its description: the one list docs/records.md's column table is made from.

    python -m harness.analysis.columns      # prints the Markdown table that docs/records.md holds
tests/test_columns.py fails when a column is undocumented or docs/records.md's table differs from this one.
"""
from __future__ import annotations

M = "measurement.md"  # the table lives in docs/records.md
COLUMNS: dict[str, str] = {
    "model": "the target model's name",
    "task": "the task (lm-eval task name)",
    "method": "the decoding method (`ar` is the baseline)",
    "options": "the method's options, `key=value` joined by spaces",
    "turn": "`all`, or the turn a row of a multi-turn task covers (`1`, `2`: per-turn rows)",
    "category": "`all`, or the category a row covers, for a task whose rows carry one (spec_bench: per-category rows)",
    "n": "successful rows (requests; per turn in a conversation) over the row's runs",
    "n_errors": "rows that ended in an error",
    "n_runs": "runs pooled in the row (replicates of one cell; for `ar`, every run of the same settings)",
    "n_paired": f"pairs: requests both sides finished with at least one token ([pairs]({M}#pairs))",
    "n_docs": "documents among the pairs (the bootstrap's resampling unit)",
    "tokens_per_step": f"τ: Σ new tokens / Σ target forwards, the bonus token included ([τ]({M}#acceptance-in-full))",
    "tokens_per_s": "the method's throughput in its own run (median over the row's runs); compare only within a run",
    "ar_tokens_per_s": "AR's throughput in the same run(s) as the method (median over runs)",
    "speedup": f"ratio of throughputs over the pairs ([speedup]({M}#speedup-geomean-length-ratio))",
    "speedup_lo": "lower end of the 95% interval of `speedup` (runs, then documents resampled)",
    "speedup_hi": "upper end of that interval",
    "speedup_geomean": f"geometric mean of per-pair throughput ratios ([geomean]({M}#speedup-geomean-length-ratio))",
    "speedup_geomean_lo": "lower end of its 95% interval",
    "speedup_geomean_hi": "upper end of its 95% interval",
    "speedup_clean": f"`speedup` over the clean pairs: both ended at EOS or a stop string ([clean]({M}#clean-pairs))",
    "speedup_clean_lo": "lower end of its 95% interval (empty below 10 documents with clean pairs)",
    "speedup_clean_hi": "upper end of its 95% interval",
    "n_clean": "clean pairs",
    "n_clean_docs": "documents among the clean pairs (below 10: no clean interval)",
    "capped_share": "share of pairs where either side hit the token cap",
    "speedup_per_answer": f"AR's time over the method's on the same requests ([per answer]({M}#per-answer-speedup))",
    "speedup_per_answer_lo": "lower end of its 95% interval",
    "speedup_per_answer_hi": "upper end of its 95% interval",
    "speedup_run_min": "the lowest `speedup` of one run among the row's runs (replicates)",
    "speedup_run_max": "the highest",
    "interval_note": "why an interval is empty (too few documents), else empty",
    "clean_interval_note": "why the clean speedup's interval is empty (too few documents with clean pairs)",
    "length_ratio": "Σ method new tokens / Σ AR new tokens over the pairs",
    "acceptance_rate": "Σ accepted draft tokens / Σ drafted tokens",
    "draft_forwards_per_step": "draft-model forwards per target forward",
    "accuracy": "the task's metric, mean over scored documents",
    "metric": "the lm-eval metric `accuracy` is",
    "accuracy_delta": "accuracy minus AR's on the same documents of the same run(s)",
    "accuracy_delta_lo": "lower end of its 95% interval",
    "accuracy_delta_hi": "upper end of its 95% interval",
    "speedup_quality": f"per-answer speedup × accuracy weight ([quality-weighted speedup]({M}#quality-weighted-speedup))",
    "speedup_quality_lo": "lower end of its 95% interval",
    "speedup_quality_hi": "upper end of its 95% interval",
    "specbench_speedup": "Spec-Bench's speedup: mean of the method's per-sample tok/s ÷ AR's over the pairs (a "
                         f"document's turns summed), the mean over runs ([Spec-Bench's figures]({M}#spec-bench-figures))",
    "specbench_speedup_sd": "standard deviation of `specbench_speedup` over the row's runs (ddof 1; empty with one run)",
    "specbench_tokens_per_s": "the method's per-sample tok/s, mean over the pairs' documents (mean over runs)",
    "specbench_ar_tokens_per_s": "AR's per-sample tok/s over the same documents (mean over runs)",
    "specbench_mean_accepted": "Spec-Bench's #mean accepted tokens: mean over all steps of the tokens each committed "
                               "(equals `tokens_per_step`)",
    "lossless_rate": "share of pairs whose outputs are token-identical",
    "repeat_share": "share of outputs holding one token 10+ times in a row (looping)",
    "phrase_repeat_share": "share of outputs holding one 8-word sequence 3+ times",
    "hardware": "the hardware label (CPU model, cores, vector ISA; or the GPU)",
    "dtype": "the weights' dtype as run",
    "max_new_tokens": "the token budget (`default`: the task's)",
    "num_fewshot": "few-shot examples (`default`: the task's)",
    "chat_template": "whether the chat template was applied",
    "device": "cpu, cuda, ...",
    "engine": "`eager` or `compiled`",
    "batch_size": "requests decoded at a time",
    "dirty": "true if a run of the row was made from a git tree with uncommitted changes",
    "versions": "torch, transformers and lm_eval versions of the row's runs",
    "run_id": "the row's run folders, `;`-joined",
}


def markdown_table() -> str:
    return "\n".join(["| column | meaning |", "| --- | --- |", *(f"| `{k}` | {v} |" for k, v in COLUMNS.items())])


if __name__ == "__main__":
    print(markdown_table())
