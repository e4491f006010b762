# The LLaMA pretraining stack. `make demo` runs the main job end to end on real
# public samples; `make test` runs the test suite. Both set up what they need.

PYTHON_SYS ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
CONFIG     ?= configs/demo.yaml
CORPUS     ?=
# ONLY=1: read CORPUS alone, without the demo's own inputs (corpus_only)
ONLY       ?=
# FORCE=1: rerun every stage, even one whose inputs and settings are unchanged
# (which it skips, saying so), and train afresh
FORCE      ?=
# SET="--set key=value ...": config overrides for every stage. Every stage sees the
# same config, so the settings digests in the manifests agree
SET        ?=
override SET += $(if $(CORPUS),--set corpus_dir=$(abspath $(CORPUS)),) $(if $(ONLY),--set corpus_only=true,)
RERUN      := $(if $(FORCE),--force,)

.PHONY: setup demo fetch clean-data lm-train quality-train quality-filter tokenizer shards train eval report test prove-s3 bench bench-smoke bench-peers bench-gpu clean help

help:
	@echo "make demo   - set up, then run the main job on the embedded real sample (configs/demo.yaml)"
	@echo "              make demo CORPUS=DIR adds the files under DIR/<source>/ (sub-folders too);"
	@echo "              ONLY=1 reads DIR alone; FORCE=1 reruns stages that are up to date;"
	@echo "              SET=\"--set key=value ...\" overrides the config (CONFIG=FILE) in every stage"
	@echo "make test   - run the test suite"
	@echo "make prove-s3 - the production path offline: every path on a local S3 server (moto),"
	@echo "              the Beam jobs on the portable runner with an external worker pool"
	@echo "make bench  - run the benchmarks: a table, and out/bench/results.json"
	@echo "make bench-smoke - every benchmark at a small size (fails if one breaks; run by CI)"
	@echo "make bench-peers - end to end against DataTrove (its own venv, .cache/peers-venv): e2e.* figures"
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
	$(PY) -m pipeline clean --config $(CONFIG) $(SET) $(RERUN)

# The quality filters trained on the clean output (CCNet's perplexity LM, the
# reference-page classifier), then applied to it without reading the inputs again
lm-train: setup
	$(PY) -m pipeline lm-train --config $(CONFIG) $(SET) $(RERUN)

quality-train: setup
	$(PY) -m pipeline quality-train --config $(CONFIG) $(SET) $(RERUN)

quality-filter: setup
	$(PY) -m pipeline quality-filter --config $(CONFIG) $(SET) $(RERUN)

tokenizer: setup
	$(PY) -m tokenizer train --config $(CONFIG) $(SET) $(RERUN)

shards: setup
	$(PY) -m pipeline shards --config $(CONFIG) $(SET) $(RERUN)

train: setup
	$(PY) -m trainer --config $(CONFIG) $(SET) $(if $(FORCE),--no-resume,)

# the trained model: loss and bits per byte per source, greedy samples (eval.json, shown
# by report); with CORPUS, also the perplexity of its Paloma files (c4/paloma_*)
EVAL_DOCS  := $(if $(CORPUS),$(foreach f,$(wildcard $(CORPUS)/c4/paloma_*.jsonl*),--docs $(abspath $(f))),)
eval: setup
	$(PY) -m trainer eval --config $(CONFIG) $(SET) $(EVAL_DOCS)

report: setup
	$(PY) -m pipeline report --config $(CONFIG) $(SET)

demo: setup
	$(MAKE) --no-print-directory clean-data lm-train quality-train quality-filter tokenizer shards train eval report CONFIG=$(CONFIG) CORPUS=$(CORPUS)

test: setup
	$(PY) -m pytest -q tests

# The production path against an S3-compatible server on 127.0.0.1 (part of `make test`)
prove-s3: setup
	$(PY) -m pytest -q tests/test_production_path.py tests/test_cluster.py tests/test_trainer_remote.py

bench: setup
	$(PY) -m pipeline fetch --config $(CONFIG)
	$(PY) -m tests.bench

# Each benchmark's whole code path on a little data (out/bench/smoke/): exits
# non-zero when a bench fails or a figure is missing; the numbers mean nothing.
bench-smoke: setup
	$(PY) -m pipeline fetch --config $(CONFIG)
	$(PY) -m tests.bench --smoke

# DataTrove in a virtual environment of its own (pinned: tests/bench/peers-requirements.txt),
# never in the project's: the two need different `fasttext` modules.
PEERS_VENV ?= .cache/peers-venv

$(PEERS_VENV)/.installed: tests/bench/peers-requirements.txt
	rm -rf $(PEERS_VENV)
	$(PYTHON_SYS) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet pip==26.3
	$(PEERS_VENV)/bin/python -m pip install --quiet -r tests/bench/peers-requirements.txt
	$(PEERS_VENV)/bin/python -m pip check
	touch $@

bench-peers: setup $(PEERS_VENV)/.installed
	$(PY) -m pipeline fetch --config $(CONFIG)
	$(PY) -m tests.bench.peers --python $(PEERS_VENV)/bin/python

# On a machine with an NVIDIA GPU and a CUDA build of torch (not the CPU venv):
# trains the ~1B model at seq 2048 in bf16 with compile; prints tokens/s and MFU.
GPU_PYTHON ?= python3
bench-gpu:
	$(GPU_PYTHON) -m trainer.bench_gpu

clean:
	rm -rf out
