#!/usr/bin/env bash
# Draws results/*.svg from results/kernels.json and results/bench.json.
#
#   scripts/plots.sh            the figures from the committed JSON
#   scripts/plots.sh --measure  first re-measure this machine (a few minutes;
#                               run it on a quiet machine), then draw
#
# Makes its own Python environment under target/plots-venv (or
# $CARGO_TARGET_DIR/plots-venv) with matplotlib
# from PyPI; needs python3 with venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--measure" ]]; then
    # The bundled traces by their path in the repository.
    export CKPT_TRACES=traces
    cargo run --release --quiet -- kernels --bench --reps 15 --json > results/kernels.json
    cargo run --release --quiet -- bench --all --json > results/bench.json
fi

venv="${CARGO_TARGET_DIR:-target}/plots-venv"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "matplotlib==3.10.*"
fi
"$venv/bin/python" scripts/plots.py results
