# The LLaMA pretraining stack. `make demo` runs the main job end to end on real
# public samples; `make test` runs the test suite. Both set up what they need.

PYTHON_SYS ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
CONFIG     ?= configs/demo.yaml
CORPUS     ?=
# every stage sees the same config, so the config digest in the manifests agrees
SET        := $(if $(CORPUS),--set corpus_dir=$(abspath $(CORPUS)),)

.PHONY: setup demo fetch clean-data tokenizer shards train report test prove-s3 bench bench-gpu clean help

help:
	@echo "make demo   - set up, then run the main job on the embedded real sample (configs/demo.yaml)"
	@echo "              make demo CORPUS=DIR adds the samples under DIR/<source>/"
	@echo "make test   - run the test suite"
	@echo "make prove-s3 - the production path offline: every path on a local S3 server (moto),"
	@echo "              the Beam jobs on the portable runner with an external worker pool"
	@echo "make bench  - run the benchmarks: a table, and out/bench/results.json"
	@echo "make bench-gpu - GPU training benchmark (tokens/s, MFU), with a CUDA python: GPU_PYTHON=..."
	@echo "make clean  - remove outputs (out/); the venv and download cache stay"

# requirements.txt: the runtime set (what a Beam worker installs, pinned);
# requirements-dev.txt: it plus torch, transformers, matplotlib, pytest, moto...
# Then the project itself, editable (pyproject.toml): `import pipeline` works from
# any directory. --no-deps: its dependencies are the pins just installed;
# --no-build-isolation: built with the pinned setuptools, nothing more to fetch.
REQUIREMENTS := requirements.txt requirements-dev.txt

$(VENV)/.installed: $(REQUIREMENTS) pyproject.toml setup.py
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -c "from pipeline.filters.langid import check_fasttext_module as c; c()"
	touch $@

setup: $(VENV)/.installed

fetch: setup
	$(PY) -m pipeline fetch --config $(CONFIG) $(SET)

clean-data: fetch
	$(PY) -m pipeline clean --config $(CONFIG) $(SET)

tokenizer: setup
	$(PY) -m tokenizer train --config $(CONFIG) $(SET)

shards: setup
	$(PY) -m pipeline shards --config $(CONFIG) $(SET)

train: setup
	$(PY) -m trainer --config $(CONFIG) $(SET)

report: setup
	$(PY) -m pipeline report --config $(CONFIG) $(SET)

demo: setup
	$(MAKE) --no-print-directory clean-data tokenizer shards train report CONFIG=$(CONFIG) CORPUS=$(CORPUS)

test: setup
	$(PY) -m pytest -q tests

# The production path against an S3-compatible server on 127.0.0.1 (part of `make test`)
prove-s3: setup
	$(PY) -m pytest -q tests/test_production_path.py tests/test_cluster.py tests/test_trainer_remote.py

bench: setup
	$(PY) -m pipeline fetch --config $(CONFIG)
	$(PY) -m tests.bench

# On a machine with an NVIDIA GPU and a CUDA build of torch (not the CPU venv):
# trains the ~1B model at seq 2048 in bf16 with compile; prints tokens/s and MFU.
GPU_PYTHON ?= python3
bench-gpu:
	$(GPU_PYTHON) -m trainer.bench_gpu

clean:
	rm -rf out
