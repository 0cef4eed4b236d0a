#!/usr/bin/env bash
# Train the toy model on the GPU machine (repo root, `wheels/` carried) and bring back what ships:
#   $OUT/toy_weights.tar  the diffusers folder (13.4 MiB: under the 16 MiB a returned file may have)
#   $OUT/training.json    seed, steps run, losses, times, VAE check, quick eval
#   $OUT/eval.png         first, middle and last frames of the 8 held-out quick-eval videos
#   $OUT/vae_check.png    held-out clips: first frame, its VAE reconstruction, last frame, its reconstruction
# Usage (every GPU of the machine by default; the batch sizes are global, so 1 or 2 GPUs train the same way):
#   VAE_MIN=4 DIT_MIN=4 bash bench/gpu_toy_train.sh
# or in two calls, to look at the VAE before the transformer trains on it (RUN must then be a carried folder):
#   STAGE=vae VAE_MIN=4 RUN=runs/toy bash bench/gpu_toy_train.sh   # → $OUT/toy_vae.tar: untar into runs/toy
#   STAGE=dit DIT_MIN=6 RUN=runs/toy bash bench/gpu_toy_train.sh   # reads runs/toy/vae and training.json
#   STAGE=decoder DEC_MIN=2 RUN=runs/toy bash bench/gpu_toy_train.sh   # redo the decoder phase, into weights/
# One GPU reproduces a run with its `--*-steps` from training.json in about GPUS x the time.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
RUN=${RUN:-/tmp/toy}
STAGE=${STAGE:-all}
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
python3 -m torch.distributed.run --standalone --nproc_per_node "$GPUS" -m upscale_dit.toy.train --out "$RUN" \
    --stage "$STAGE" --seed "${SEED:-0}" --vae-steps 1000000 --vae-minutes "${VAE_MIN:-4}" --dit-steps 10000000 \
    --dit-minutes "${DIT_MIN:-4}" --decoder-steps 1000000 --decoder-minutes "${DEC_MIN:-2}" --eval-prompts 8 \
    ${TRAIN_ARGS:-} 2>&1 | grep -v -i "warn"
cp "$RUN/training.json" "$OUT/"
if [[ "$STAGE" == vae ]]; then
    cp "$RUN/vae_check.png" "$OUT/"
    tar -C "$RUN" -cf "$OUT/toy_vae.tar" vae
    ls -l "$OUT"
    exit 0
fi
[[ "$STAGE" != dit ]] && cp "$RUN/vae_check.png" "$OUT/"
tar -C "$RUN" -cf "$OUT/toy_weights.tar" weights
python3 - "$OUT/eval.png" "$RUN/eval" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from upscale_dit.video import read_video

videos = [read_video(p)[0] for p in sorted(Path(sys.argv[2]).glob("*.mp4"))]
rows = [np.concatenate([v[0], v[len(v) // 2], v[-1]], axis=1) for v in videos]
Image.fromarray(np.concatenate(rows, axis=0)).save(sys.argv[1])
PY
ls -l "$OUT"
