# pgbench — every entry point a user or CI needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: install install-reference default-model eval transfer sweep test test-slow test-all parity bench bench-quick bench-kernels reference-outputs fixtures clean

## make install: create .venv and install pgbench with its test tools (and a Java runtime for pycocoevalcap).
install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@bash tools/ensure_java.sh

## make install-reference: the optional extra (torch==2.13.0 + transformers) for reference outputs and side-by-side benchmarks.
install-reference: install
	$(PY) -m pip install -q -e '.[dev,reference]'

## make eval: the shipped default model (default_model/) on every synthetic family, one table (docs/default_model.md) [LIMIT=100 examples per family, 0 = all].
## make eval TASK=vqav2 CKPT=ckpt.npz DATA=DIR [SPLIT=S] [RUN_DIR=R] [ARGS="--tokenizer TOK ..."]: decode and score a task (docs/eval.md).
TASK    ?=
CKPT    ?=
DATA    ?=
SPLIT   ?=
RUN_DIR ?=
ARGS    ?=
LIMIT   ?=
eval:
ifeq ($(strip $(TASK)),)
	$(PY) -m pgbench.synth.default_eval $(if $(LIMIT),--limit $(LIMIT)) $(if $(RUN_DIR),--out $(RUN_DIR))
else
	$(VENV)/bin/pgbench eval --task $(TASK) --checkpoint $(CKPT) --data $(DATA) $(if $(SPLIT),--split $(SPLIT)) $(if $(RUN_DIR),--run-dir $(RUN_DIR)) $(ARGS)
endif

## make default-model: rebuild default_model/ from scratch (synthetic data, tokenizer, VQ-VAE, pre-training with pgbench transfer), score it (make eval), write its MODEL_CARD.md and the README's table; detection alone (4000 steps), then the mixture (6500), then stage 2 (3500): 58.6 min with make eval on a 2-core AMD EPYC, the shipped build (docs/default_model.md).
default-model:
	$(PY) -m pgbench.synth.default_model --out default_model --work runs/default-model
	$(PY) -m pgbench.synth.default_eval --model default_model
	$(PY) -m pgbench.synth.model_card --model default_model --eval runs/default-eval --readme README.md

## make transfer: the default model fine-tuned at budget 256 on rsvqa_lr (held out of its pre-training), zero-shot vs fine-tuned.
## make transfer TASK=rsvqa_lr BUDGET=256 CKPT=ckpt.npz DATA=DIR [SEED=0] [RUN_DIR=R] [ARGS="--tokenizer TOK ..."]: fine-tune and score (docs/transfer.md).
BUDGET  ?= full
SEED    ?= 0
transfer:
ifeq ($(strip $(TASK)),)
	$(PY) -m pgbench.synth.default_transfer transfer --budget $(if $(filter-out file,$(origin BUDGET)),$(BUDGET),256) --seed $(SEED) $(if $(RUN_DIR),--out $(RUN_DIR))
else
	$(VENV)/bin/pgbench transfer --task $(TASK) --budget $(BUDGET) --seed $(SEED) --checkpoint $(CKPT) --data $(DATA) --run-dir $(or $(RUN_DIR),runs/transfer-$(TASK)-$(BUDGET)-s$(SEED)) $(ARGS)
endif

## make sweep: the default model on rsvqa_lr (held out of its pre-training) at budgets 64,256,1024,full (1 seed), table + plot against zero-shot.
## make sweep TASK=rsvqa_lr CKPT=ckpt.npz DATA=DIR [BUDGETS=64,256,1024,4096,full] [SEEDS=3] [RUN_DIR=R] [ARGS="--tokenizer TOK ..."]: transfer at each budget x seed, table + plot against zero-shot (docs/transfer.md).
BUDGETS ?= 64,256,1024,4096,full
SEEDS   ?= 3
sweep:
ifeq ($(strip $(TASK)),)
	$(PY) -m pgbench.synth.default_transfer sweep $(if $(filter-out file,$(origin BUDGETS)),--budgets $(BUDGETS)) $(if $(filter-out file,$(origin SEEDS)),--seeds $(SEEDS)) $(if $(RUN_DIR),--out $(RUN_DIR))
else
	$(VENV)/bin/pgbench sweep --task $(TASK) --budgets $(BUDGETS) --seeds $(SEEDS) --checkpoint $(CKPT) --data $(DATA) --run-dir $(or $(RUN_DIR),runs/sweep-$(TASK)) $(ARGS)
endif

## make test: the fast suite (what CI runs).
test:
	$(PYTEST) -q -m "not slow"

## make test-slow: integration tests marked slow.
test-slow:
	$(PYTEST) -q -m slow

test-all:
	$(PYTEST) -q

## make parity REFERENCE=DIR: check pgbench against one reference case.
REFERENCE ?= ../shared/reference/big_vision/pg1_tiny
parity:
	$(VENV)/bin/pgbench parity --reference $(REFERENCE)

## make bench: every benchmark at full size (hours; a quiet machine): prefill and decode vs transformers at the same dtype, the decode step's cache attention vs torch sdpa, where a decode step's time goes, layouts, kernels, metrics, a mid-size training step vs transformers and where its time goes, the transfer memory per released size (compile only); figures go to benchmarks/results/.
bench:
	$(PY) -m benchmarks.run

## make bench-quick: every benchmark at tiny size (minutes), files in a temporary folder, so none can rot.
bench-quick:
	$(PY) -m benchmarks.run --quick

## make bench-kernels: attention kernels (real shapes on an accelerator, tiny shapes in interpret mode on CPU).
bench-kernels:
	$(PY) -m benchmarks.kernels

## make reference-outputs: regenerate reference_outputs/ with transformers (needs install-reference).
reference-outputs:
	$(PY) reference_outputs/make_reference_outputs.py

## make fixtures: regenerate the tiny test tokenizer in tests/fixtures/.
fixtures:
	$(PY) tests/fixtures/make_tiny_tokenizer.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
