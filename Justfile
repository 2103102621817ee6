# rrdistill task runner. `just demo` and `just test` work on a fresh machine: each creates the
# environment it needs (.venv, managed by uv) before running.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
bin := venv / "bin"
python := env_var_or_default("RRDISTILL_PYTHON", "python3")
run_dir := env_var_or_default("RRDISTILL_RUN", "runs/demo")

# List the recipes
default:
    @just --list

# Create .venv with every extra this machine can use (idempotent; seconds when up to date)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v uv >/dev/null 2>&1 || {{python}} -m pip install -q uv
    [ -x {{bin}}/python ] || uv venv -q --python "$(command -v {{python}})" {{venv}}
    # uv does not read pip's configuration: pass on pip's local wheel folders (a CPU torch build).
    export UV_FIND_LINKS="${UV_FIND_LINKS:-${PIP_FIND_LINKS:-}}" VIRTUAL_ENV={{venv}}
    uv pip install -q "torch==2.13.0" -e ".[train,export,serve,dev]"
    # rbo (the RBO reference the tests compare against) caps numpy below 2 without needing it.
    uv pip install -q --no-deps "rbo==0.1.3"

# The main job end to end on the embedded data (grows with each stage)
demo: setup
    {{bin}}/rrdistill retrieve data/scifact --split test --top-k 100 -o {{run_dir}}/bm25.jsonl --trec {{run_dir}}/bm25.trec
    {{bin}}/rrdistill eval {{run_dir}}/bm25.trec data/scifact --json {{run_dir}}/bm25.eval.json

# Lint and the default (fast) test suite
test: setup
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/pytest

# Everything, including the long `slow` runs (GPU tests skip without a GPU)
test-all: setup
    HYPOTHESIS_PROFILE=thorough {{bin}}/pytest -m "slow or not slow"

# Format and fix what ruff can
fmt: setup
    {{bin}}/ruff format .
    {{bin}}/ruff check --fix .
