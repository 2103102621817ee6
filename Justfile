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
    uv pip install -q "torch==2.13.0" -e ".[dev]"

# BM25 → synthesize → teacher SFT → GRPO → label → bi-encoder, cross-encoder + listwise students → fp32/int8
# bundles → runtime rerank → eval → report. A rerun skips finished stages; `just demo --from label`
# redoes from a stage.
# The main job end to end on the embedded data (report in runs/demo/report.md)
demo *args: setup
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
        {{bin}}/rrdistill pipeline --config configs/pipeline/demo.yaml --run-dir {{run_dir}} {{args}}

# Another pipeline config of configs/pipeline/, e.g. `just pipeline scifact` (the full-scale run, ≈ 3 h)
pipeline name *args: setup
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
        {{bin}}/rrdistill pipeline --config configs/pipeline/{{name}}.yaml {{args}}

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

# Writes {{fixture_dir}}/bench.json and bench.png; extra options go to `rrdistill bench`, e.g. `just bench --queries 300`.
# The runtime against sentence-transformers (torch, ONNX) and FlashRank on the fixture's bundles
bench *args: fixture
    {{bin}}/python benchmarks/rerankers.py --run-dir {{fixture_dir}} {{args}}

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

# The teacher stage end to end on embedded SciFact with the tiny CPU config (a few minutes on 2 cores):
# build a tiny labeller → serve it with `transformers serve` → synthesize 96 train queries (lists of 10)
# → SFT → GRPO → rerank the first 50 test queries (BM25 top-20, window 10 / step 5) → eval vs BM25.
teacher-demo: setup
    #!/usr/bin/env bash
    set -euo pipefail
    run=runs/teacher-demo
    mkdir -p $run
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    [ -f $run/labeller/config.json ] || {{bin}}/rrdistill tiny-model $run/labeller --config configs/teacher/tiny-cpu.yaml
    port=$({{bin}}/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    {{bin}}/transformers serve --host 127.0.0.1 --port $port --device cpu --dtype float32 --log_level warning > $run/serve.log 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    {{bin}}/python -c 'import sys, time, urllib.request
    for _ in range(240):
        try:
            urllib.request.urlopen(sys.argv[1], timeout=1); sys.exit(0)
        except OSError:
            time.sleep(0.5)
    sys.exit("transformers serve did not come up")' http://127.0.0.1:$port/health
    # One request first: transformers serve loads a model on first use, and concurrent first
    # requests would race to load it.
    {{bin}}/python -c 'import sys, json, urllib.request
    body = json.dumps({"model": sys.argv[2], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], body, {"Content-Type": "application/json"}), timeout=300).read()' \
        http://127.0.0.1:$port/v1/chat/completions $PWD/$run/labeller
    # The tiny labeller is untrained: its answers are mostly repaired, and none has reasoning.
    {{bin}}/rrdistill synthesize data/scifact --split train --max-queries 96 --list-size 10 \
        --labeller http://127.0.0.1:$port --model $PWD/$run/labeller --temperature 1.0 --seed 0 \
        --max-new-tokens 64 --max-passage-tokens 16 --no-require-reasoning \
        -o $run/samples.jsonl --json $run/synthesis.json
    kill $server; wait $server 2>/dev/null || true; trap - EXIT
    {{bin}}/rrdistill train-teacher --config configs/teacher/tiny-cpu.yaml --resume
    {{bin}}/rrdistill retrieve data/scifact --split test --top-k 20 -o $run/bm25.jsonl
    head -n 50 $run/bm25.jsonl > $run/bm25-50.jsonl
    {{bin}}/rrdistill eval $run/bm25-50.jsonl data/scifact --only-run-queries -m ndcg@10 -m recall@20 --json $run/bm25-50.eval.json
    {{bin}}/rrdistill rerank $run/bm25-50.jsonl --teacher $run/teacher/final --window 10 --step 5 --top-k 20 \
        --max-new-tokens 64 -o $run/teacher.jsonl --trec $run/teacher.trec --json $run/rerank.json
    {{bin}}/rrdistill eval $run/teacher.trec data/scifact --only-run-queries -m ndcg@10 -m recall@20 --json $run/teacher.eval.json
