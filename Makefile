# g2vlm — `make help` lists the targets. Every target but `help` installs into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchvision must be one matching pair of public builds (timm imports torchvision; a
# CPU-only local torch beside the registry's torchvision fails with `torchvision::nms does not exist`).
# `===` asks for exactly these public builds, never a `+cpu` local variant. Override for a cluster's
# own builds, e.g. make install TORCH_PAIR="torch==2.15.0+cu128 torchvision==0.29.2+cu128".
TORCH_PAIR ?= torch===2.15.0 torchvision===0.29.2
PYTEST := $(BIN)/python -m pytest

.DEFAULT_GOAL := help
.PHONY: help install test test-full test-slurm slurm-up slurm-down lint doctor demo bench-depth bench-pose bench-pointmap bench-spar demo-reasoning bench-train bench-infer bench-data consolidate

help: ## list the targets
	@echo "g2vlm — make TARGET"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv (first use) and install the suite, editable, with its dev tools

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH_PAIR)
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

test: $(STAMP) ## run unit + integration tests (not slow, gpu or slurm)
	$(PYTEST) -m "not slow and not gpu and not slurm"

test-full: $(STAMP) slurm-up ## run every tier: slow, slurm (local cluster) and gpu (skip without CUDA)
	$(PYTEST)

test-slurm: $(STAMP) slurm-up ## the real-SLURM preempt -> requeue -> resume test on a local cluster
	$(PYTEST) -m slurm

slurm-up: ## start a one-node SLURM cluster on this machine (installs slurm-wlm and munge with apt)
	tests/slurm/cluster.sh up

slurm-down: ## stop the daemons slurm-up started
	tests/slurm/cluster.sh down

lint: $(STAMP) ## ruff over the sources and tests (its settings: [tool.ruff] in pyproject.toml)
	$(BIN)/ruff check src datamodules callbacks benchmarks tests

doctor: $(STAMP) ## print versions; check imports, the torch/torchvision pair and our `lightning` command
	$(BIN)/g2vlm doctor

demo: $(STAMP) ## synthetic scenes -> train the small model on CPU -> depth/pose table (no downloads)
	$(BIN)/g2vlm demo

comma := ,
DATASETS ?= synthetic
bench_var = $(subst -,_,$(shell echo '$(1)' | tr '[:lower:]' '[:upper:]'))
bench_args = --dataset $(DATASETS) \
	$(foreach name,$(subst $(comma), ,$(DATASETS)),$(if $(ROOT_$(call bench_var,$(name))),--root $(name)=$(ROOT_$(call bench_var,$(name))))) \
	$(if $(CKPT),--ckpt $(CKPT)) $(if $(PRED),--predictions $(PRED)) --out $(or $(OUT),runs/bench/$(1).json)

bench-depth: $(STAMP) ## depth benchmark (synthetic + demo checkpoint by default): [CKPT=] [DATASETS=a,b] [ROOT_<NAME>=] [PRED=] [OUT=] [MODE=mono|video]
	$(BIN)/g2vlm bench depth $(call bench_args,depth) $(if $(MODE),--mode $(MODE))

bench-pose: $(STAMP) ## relative-pose benchmark (synthetic, co3dv2, re10k): [CKPT=] [DATASETS=] [ROOT_<NAME>=] [PRED=] [OUT=]
	$(BIN)/g2vlm bench pose $(call bench_args,pose)

bench-pointmap: $(STAMP) ## point-map benchmark (synthetic, 7scenes, nrgbd, eth3d, dtu): [CKPT=] [DATASETS=] [ROOT_<NAME>=] [PRED=] [OUT=]
	$(BIN)/g2vlm bench pointmap $(call bench_args,pointmap)

SPAR_BENCH_DATA = $(or $(DATA),data/shards/spar-bench)
bench-spar: $(STAMP) ## SPAR-Bench: [PARQUET=SPAR-Bench/data] [DATA=data/shards/spar-bench] [CKPT=demo's | PREDICTIONS=] [TOKENIZER=] [OUT=]
	$(if $(PARQUET),$(BIN)/g2vlm shard spar-bench --parquet $(PARQUET) --out $(SPAR_BENCH_DATA))
	$(BIN)/g2vlm bench spar --data $(SPAR_BENCH_DATA) \
		$(if $(PREDICTIONS),--predictions $(PREDICTIONS),--ckpt $(or $(CKPT),runs/reasoning-demo/checkpoints/last.ckpt)) \
		$(if $(TOKENIZER),--tokenizer $(TOKENIZER)) --out $(or $(OUT),runs/bench/spar.json)

demo-reasoning: $(STAMP) ## synthetic spatial QA -> train the small reasoning model on CPU -> accuracy / MRA vs baselines
	$(BIN)/python -m g2vlm.demo_reasoning

bench-train: $(STAMP) ## training-step speed: step time, tokens/s, images/s, MFU, peak memory (g2vlm-2b on CUDA, small on CPU) [OUT=] [ARGS=]
	$(BIN)/g2vlm bench train --out $(or $(OUT),runs/bench/train.json) $(ARGS)

bench-infer: $(STAMP) ## reconstruction time and peak memory vs number of views, beside VGGT's H100 table [OUT=] [ARGS=]
	$(BIN)/g2vlm bench infer --out $(or $(OUT),runs/bench/infer.json) $(ARGS)

bench-data: $(STAMP) ## multi-view loader throughput (clips/s, frames/s per worker) beside raw decode
	$(BIN)/python -m g2vlm.benchmarks.speed.data_throughput

consolidate: $(STAMP) ## sharded checkpoint folder -> one portable file: make consolidate CKPT=... [OUT=file]
	@test -n "$(CKPT)" || { echo "usage: make consolidate CKPT=runs/<exp>/checkpoints/last.ckpt [OUT=file]" >&2; exit 2; }
	$(BIN)/g2vlm consolidate $(CKPT) $(if $(OUT),--out $(OUT))
