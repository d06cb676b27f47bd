#!/bin/bash
# Startup on the GPU machine: PyTorch writes a random Llama-2-7B-shaped model
# in bf16 safetensors, then (page cache warm for both, PyTorch first) each
# side loads it and finishes one MODPO step of one pair, from process start.
#   bash bench/run_startup.sh OUT_DIR       (called by bench/run_gpu_bench.sh)
set -u
OUT=$1
R=$OUT/results.jsonl
DIR=${MODPO_STARTUP_DIR:-/tmp/llama2-7b-random}
python3 bench/torch_gpu_bench.py --shape llama2-7b --what save_model --model-dir "$DIR" \
    --out "$R" 2>>"$OUT/torch.log"
cat "$DIR"/*.safetensors > /dev/null  # both sides start from a warm page cache
python3 bench/torch_gpu_bench.py --shape llama2-7b --what startup --model-dir "$DIR" \
    --out "$R" 2>>"$OUT/torch.log"
build-cuda/bench/cuda_bench --model-dir "$DIR" --out "$R" 2>>"$OUT/ours.log"
