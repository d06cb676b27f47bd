#!/bin/bash
# The CUDA backend against PyTorch on a Llama-2-7B-shaped random model, on the
# GPU machine (docs/cuda.md): gen_torch_reference.py writes the model, a PEFT
# adapter, the batch and torch's fp32 and bf16 results to $DIR; then
# check_cuda_torch compares the CUDA backend with them.
#   bash tests/cuda/run_torch_check.sh [7b|small]
set -u
OUT=${OUT:-/tmp/out}
DIR=${DIR:-/tmp/torch-ref}
mkdir -p "$OUT" .device
tar xzf .device/lib.tgz -C .device
export LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64
rm -rf "$DIR"
PYTHONUNBUFFERED=1 timeout 300 python3 tests/cuda/gen_torch_reference.py "$DIR" "${1:-7b}" 2>&1 \
    | grep -v -i "warn" | tee "$OUT/torch-ref.log"
timeout 300 build-cuda/tests/cuda/check_cuda_torch "$DIR" 2>&1 | tee "$OUT/check-torch.log"
