# rrdistill task runner. `just demo` and `just test` work on a fresh machine: each creates the
# environment it needs (.venv, managed by uv) before running.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
bin := venv / "bin"
python := env_var_or_default("RRDISTILL_PYTHON", "python3")
run_dir := env_var_or_default("RRDISTILL_RUN", "runs/demo")
fixture_dir := env_var_or_default("RRDISTILL_FIXTURE", "runs/fixture")

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

# Fine-tune the MiniLM cross-encoder fixture on SciFact train (cached) and export fp32 + int8 bundles
fixture: setup
    #!/usr/bin/env bash
    set -euo pipefail
    ckpt=$({{bin}}/python benchmarks/fixture.py --run-dir {{fixture_dir}})
    for precision in fp32 int8; do
        bundle={{fixture_dir}}/minilm-$precision
        # re-export only when the bundle is missing or came from another checkpoint
        if {{bin}}/python -c 'import json, os, sys; m = json.load(open(sys.argv[1])); sys.exit(m["provenance"]["source"]["path"] != os.path.realpath(sys.argv[2]))' "$bundle/rrdistill.json" "$ckpt" 2>/dev/null; then
            echo "$bundle is up to date"
        else
            rm -f "$bundle.jsonl" "$bundle.trec"  # results of an older bundle must not be resumed
            {{bin}}/rrdistill export "$ckpt" "$bundle" --precision $precision --overwrite --json "$bundle.export.json"
        fi
    done

# Rerank SciFact test (BM25 top-100) with the fixture bundles; nDCG@10 of BM25, fp32 and int8
fixture-eval: fixture
    {{bin}}/rrdistill retrieve data/scifact --split test --top-k 100 -o {{fixture_dir}}/bm25.jsonl --trec {{fixture_dir}}/bm25.trec
    {{bin}}/rrdistill eval {{fixture_dir}}/bm25.trec data/scifact --json {{fixture_dir}}/bm25.eval.json
    for precision in fp32 int8; do \
        {{bin}}/rrdistill rerank {{fixture_dir}}/bm25.jsonl --bundle {{fixture_dir}}/minilm-$precision -o {{fixture_dir}}/minilm-$precision.jsonl --trec {{fixture_dir}}/minilm-$precision.trec && \
        {{bin}}/rrdistill eval {{fixture_dir}}/minilm-$precision.trec data/scifact --json {{fixture_dir}}/minilm-$precision.eval.json; \
    done

# Lint and the default (fast) test suite
test: setup
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/pytest

# Everything, including the long `slow` runs (GPU tests skip without a GPU)
test-all: setup
    {{bin}}/pytest -m "slow or not slow"

# Format and fix what ruff can
fmt: setup
    {{bin}}/ruff format .
    {{bin}}/ruff check --fix .
