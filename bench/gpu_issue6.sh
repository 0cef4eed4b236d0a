#!/usr/bin/env bash
# Issue 6 measurements on one H100/H200, from the repo root (the `wheels/` folder carried), outputs under $OUT.
#
#   bash bench/gpu_issue6.sh          # steps 1 2 3; step 3 gets what is left of BUDGET_S (default 530 s)
#   bash bench/gpu_issue6.sh 1 2      # ~4-5 min
#   bash bench/gpu_issue6.sh 3        # the whole 2160p generate alone, ~7.5-8.5 min
#
# Estimated GPU time (H200 numbers from bench/RESULTS.md; an H100 SXM has the same bf16 peak, so the transformer
# steps should be within ~10%; the VAE, more memory-bound, maybe 20-30% slower there):
#   0. wheels                                  ~15 s
#   1. 2160p (21x135x240 = 680,400 tokens), 4 of 30 blocks, dense and uncond window pass, warm-up + 1 rep each:
#      dense attention 4*S^2*128*12 = 2.84 PFLOP a block -> ~5.0 s at 450-600 TFLOP/s, ~5.2 s with the linears:
#      2 x 21 s; window: 5.7% of the blocks visited (exact 5.1%) -> ~0.6 s a block: 2 x 2.4 s + flex compile
#      ~20 s; imports and build ~15 s                                                       ~80-100 s
#   2. 1080p (171,360 tokens), 6 of 30 blocks, all five pass kinds, eager then compiled, warm-up + 2 reps each:
#      measured 2026-11-28 on an H200: 148 s in all (compiles 6-12 s per pass kind)         ~150 s
#      Why 6 blocks are enough: regional compilation compiles one WanTransformerBlock graph that every block
#      reuses (the script prints the graph count), each block does the same work, and what lies outside the
#      blocks runs eagerly in both rounds; so the per-block speed-up, and the compile time, do not depend on depth.
#   3. whole `generate --res 2160p --method freeswim`, random weights, 81 frames, shortest run that still has
#      every stage: base 1 step at 480x832 (cond + uncond), refinement method.freeswim.steps=3 x strength 0.7
#      = 2 steps (step 0: guide pass = window + dense full branch, batch 2, cache refresh, + uncond window pass;
#      step 1: cached cond + uncond window passes), tiled VAE encode and decode at 2160x3840, mp4 written.
#      From the 1080p profile (H200): encode 16.7 s x 4 = ~67 s; guide pass ~30 x 5.8 s = ~175 s; three window
#      passes ~3 x 18 s; decode + write 30.7 s x 4 = ~125 s; load, text, base, flex compile ~25 s  ~450-500 s
#      Predicted peak (udit profile): 68.4 GiB in the refine stage (the batch-2 guide pass; the 58.4 GiB
#      cross-attention cache in pinned CPU memory, forced with cache_device=cpu: on the GPU it would not fit).
#      GEN_ARGS="--set method.freeswim.guidance=1" drops the two uncond window passes (~35 s) if time is short.
# Steps 1+2+3 (~12 min) do not fit one 9-minute call: run "1 2" and "3" as two calls, or accept that the
# default run stops step 3 at the budget (the sidecar is then missing; the nvidia-smi log still shows memory).

set -u
BUDGET_S=${BUDGET_S:-530}
STEPS=${*:-1 2 3}
PROMPT="a red fox running through fresh snow"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" \
    | tee -a "$OUT/gpu.txt"

has() { [[ " $STEPS " == *" $1 "* ]]; }
# A step's timeout: its cap, or what is left of the budget (at least 1 s: `timeout 0` would mean no limit).
cap() { local left=$((BUDGET_S - SECONDS)); left=$((left < $1 ? left : $1)); echo $((left > 0 ? left : 1)); }

if has 1; then
    echo "== step 1: 2160p window vs dense pass, 4 of 30 blocks ($SECONDS s) =="
    timeout "$(cap 240)" python3 bench/bench_freeswim_transformer.py --height 2160 --width 3840 --layers ${LAYERS_2160:-4} \
        --passes dense uncond --reps 1 --out "$OUT/fs2160_layers4.json" 2>&1 | tee "$OUT/step1.log"
fi

if has 2; then
    echo "== step 2: 1080p passes eager vs torch.compile, 6 of 30 blocks ($SECONDS s) =="
    timeout "$(cap 330)" python3 bench/bench_freeswim_transformer.py --layers 6 \
        --passes dense uncond guide cached_cond exact --compile --reps 2 --out "$OUT/fs1080_compile.json" 2>&1 \
        | tee "$OUT/step2.log"
fi

if has 3; then
    left=$((BUDGET_S - SECONDS))
    echo "== step 3: whole 2160p freeswim generate, timeout ${left} s ($SECONDS s) =="
    if ((left < 120)); then
        echo "skipped: only ${left} s left of BUDGET_S=${BUDGET_S}; run 'bash bench/gpu_issue6.sh 3' on its own"
    else
        nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 2000 \
            > "$OUT/gen2160_smi.csv" &
        smi=$!
        # expandable segments: less fragmentation at a 68 GiB peak (max_memory_allocated, the sidecar's number,
        # does not depend on it).
        PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout -k 10 "$left" \
            python3 -c "from upscale_dit.cli.app import main; main()" generate "$PROMPT" \
            --model wan2.1-t2v-1.3b --res 2160p --frames 81 --method freeswim --steps 1 \
            --set method.freeswim.steps=3 --set runtime.random_weights=true --set method.freeswim.cache_device=cpu \
            ${GEN_ARGS:-} --out "$OUT/gen2160.mp4" --overwrite --json > "$OUT/gen2160.out" 2> "$OUT/gen2160.err"
        echo "exit $? after $SECONDS s"
        kill "$smi"
        ls -l "$OUT/gen2160.mp4" 2>/dev/null && rm -f "$OUT/gen2160.mp4"  # noise at crf 18: large, not needed
        tail -5 "$OUT/gen2160.err"
    fi
fi

echo "== summary ($SECONDS s) =="
python3 - "$OUT" <<'EOF'
import csv, json, sys
from pathlib import Path

out = Path(sys.argv[1])
GiB = 2**30


def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.exists() else None


for name in ("fs2160_layers4.json", "fs1080_compile.json"):
    r = load(name)
    if r is None:
        print(f"{name}: missing")
        continue
    print(f"{name}: {r['device']}, {r['shape']['tokens']:,} tokens, {r['layers']}/{r['depth']} blocks, "
          f"kernel {r['kernel']}")
    for key, p in r["passes"].items():
        full = p.get("seconds_full_depth_extrapolated", p["seconds"])
        print(f"  {key:<8} {p['seconds']:8.3f} s measured, {full:8.2f} s at {r['depth']} blocks, "
              f"peak {p['peak_bytes'] / GiB:5.1f} GiB, / dense {r['pass_ratios_to_dense'].get(key, float('nan')):.3f}")
    for key, p in r.get("compiled", {}).get("passes", {}).items():
        print(f"  {key:<8} compiled {p['seconds']:8.3f} s, eager/compiled {p['speedup']:.3f}, compile "
              f"{p['compile_seconds']:.0f} s, {p['graphs']} graph(s), max rel diff {p['max_rel_diff']:.1e}")

side = load("gen2160.json")
if side is None:
    print("gen2160.json: missing (generate did not finish)")
else:
    print(f"gen2160: {side['runtime']['device_name']}, total {side['timings_s']['total']:.0f} s, "
          f"freeswim {json.dumps(side['derived'].get('freeswim'))}")
    for stage, seconds in side["timings_s"].items():
        peak = side["memory"].get(stage, {}).get("peak")
        print(f"  {stage:<18} {seconds:8.1f} s" + (f"   peak {peak / GiB:6.2f} GiB" if peak else ""))
smi = out / "gen2160_smi.csv"
if smi.exists():
    used = [int(row[1].split()[0]) for row in csv.reader(smi.open()) if len(row) > 1 and row[1].strip()[:1].isdigit()]
    if used:
        print(f"gen2160 nvidia-smi: max memory used {max(used) / 1024:.1f} GiB (context and allocator cache included)")
EOF
