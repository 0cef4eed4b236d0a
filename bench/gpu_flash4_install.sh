# Source on the GPU machine in the call that carries gpuB/, after a call on the same warm machine copied gpuA/
# to /tmp/keep (see bench/flash4_wheels.sh). Installs diffusers into /tmp/site and FlashAttention-4 with the
# CuTe DSL into /tmp/fa4site, and sets PYTHONPATH for both and this checkout.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    /tmp/keep/diffusers-* /tmp/keep/ftfy-* /tmp/keep/importlib_metadata-* /tmp/keep/lazy_importer-* /tmp/keep/wcwidth-* &&
# one pip call for the CuTe DSL parts: they share the nvidia_cutlass_dsl folder, which --target would not merge
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fa4site \
    /tmp/keep/apache_tvm_ffi-* /tmp/keep/flash_attn_4-* /tmp/keep/nvidia_cutlass_dsl* /tmp/keep/quack_kernels-* \
    /tmp/keep/torch_c_dlpack_ext-* &&
cat /tmp/keep/cu13.part-aa gpuB/cu13.part-* | xz -d | tar x -C /tmp/fa4site &&
export PYTHONPATH=/tmp/site:/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages:$PWD &&
python3 -c "import flash_attn.cute.interface; from upscale_dit.attention import default_kernel_options as o; print('flex options', o('cuda'))"
