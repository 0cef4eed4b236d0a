#!/usr/bin/env bash
# Fetch FlashAttention-4 (CuTe DSL) and what it needs as Python 3.12 wheels for the GPU machine, which has
# torch 2.11+cu130 but neither these packages nor a network. The device tool carries at most 64 MiB a call
# with the working tree, and the CUDA 13 half of the CuTe DSL alone is a 92 MB wheel, so it is unpacked,
# xz-compressed (63.5 MB) and split across two folders, each carried by its own call on the same warm machine:
#
#   gpuA/  diffusers' small wheels (from wheels/, no av), FA4's small wheels, the first 30 MB of the libraries
#   gpuB/  the rest of the libraries
#
# Both folders are git-ignored (.gitignore). Then, on the GPU machine:
#   call 1 (carry gpuA):  mkdir -p /tmp/keep && cp gpuA/* /tmp/keep/
#   call 2 (carry gpuB):  source bench/gpu_flash4_install.sh && python3 bench/...
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-python3 -m pip}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d "$tmp" \
    flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
    nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2 \
    torch-c-dlpack-ext==0.1.5 quack-kernels==0.6.5
rm -rf gpuA gpuB && mkdir -p gpuA gpuB "$tmp/libs"
cp wheels/diffusers-* wheels/ftfy-* wheels/importlib_metadata-* wheels/lazy_importer-* wheels/wcwidth-* gpuA/
find "$tmp" -maxdepth 1 -name '*.whl' ! -name 'nvidia_cutlass_dsl_libs_cu13-*' -exec cp {} gpuA/ \;
(cd "$tmp/libs" && unzip -q "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl && tar cf - . | xz -9e -T2 > "$tmp/cu13.tar.xz")
(cd "$tmp" && split -b 30000000 cu13.tar.xz cu13.part-)
mv "$tmp/cu13.part-aa" gpuA/ && mv "$tmp"/cu13.part-a[b-z] gpuB/
du -sh gpuA gpuB
