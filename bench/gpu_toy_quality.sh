#!/usr/bin/env bash
# The toy quality benchmark on the GPU machine, Relay LoRA included (repo root; `wheels/` and the trained toy
# folder carried). Brings back $OUT/toy_quality.json, the table ($OUT/toy_quality.md), the 2x and 3x comparison
# frames and the Relay LoRA (small enough to return).
#   WEIGHTS=runs/toy/weights bash bench/gpu_toy_quality.sh
# CPU equivalent, slower: the same three commands with .venv/bin/python and `--device cpu` where they take it.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD
WEIGHTS=${WEIGHTS:?set WEIGHTS to the trained toy folder (model_index.json inside)}
udit() { python3 -c "from upscale_dit.cli.app import main; main()" "$@"; }
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
python3 bench/toy_relay_images.py --out /tmp/relay_images --count "${RELAY_IMAGES:-200}" --size 256x256
udit train-relay --images /tmp/relay_images --model "$WEIGHTS" --out /tmp/relay ${RELAY_ARGS:-}
python3 bench/bench_toy_quality.py --model "$WEIGHTS" --relay-lora /tmp/relay/relay.safetensors \
    --out "$OUT/toy_quality.json" --frames-dir /tmp/toy_frames ${QUALITY_ARGS:-} | tee "$OUT/toy_quality.md"
cp /tmp/toy_frames/compare_*x.png "$OUT/"
cp /tmp/relay/relay.safetensors "$OUT/toy_relay.safetensors"
ls -l "$OUT"
