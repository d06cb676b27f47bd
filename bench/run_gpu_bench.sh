#!/bin/bash
# The GPU benchmarks of issue 7 in one device-tool call, ours and PyTorch's
# side by side on the same card (bench/README.md).  Needs build-cuda/bench/cuda_bench
# and .device/lib.tgz (tools/device_bundle.sh) carried along; results go to $OUT.
#   bash bench/run_gpu_bench.sh [ours] [torch] [startup]
# MODPO_BENCH_PAIRS, MODPO_BENCH_STEPS override the micro-batches and steps.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" .device
tar xzf .device/lib.tgz -C .device
export LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64
parts=${*:-ours torch}
pairs=${MODPO_BENCH_PAIRS:-1 2 4 8}
steps=${MODPO_BENCH_STEPS:-5}
R=$OUT/results.jsonl
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
B=build-cuda/bench/cuda_bench
for part in $parts; do
case $part in
ours)
    # One process per measurement: each starts with an empty memory pool, so
    # the memory figure is that measurement's own.
    $B --what gemm --out "$R" 2>>"$OUT/ours.log"
    for p in $pairs; do
        MODPO_CUDA_PROFILE=1 $B --what modpo --pairs "$p" --steps "$steps" --out "$R" 2>>"$OUT/ours.log"
    done
    $B --what precompute --steps "$steps" --out "$R" 2>>"$OUT/ours.log"
    $B --what decode --out "$R" 2>>"$OUT/ours.log"
    grep -E "profile modpo|error|cuda_bench" "$OUT/ours.log"
    ;;
torch)
    python3 bench/torch_gpu_bench.py --shape llama2-7b --what gemm,modpo_tuned,modpo_seed,precompute,generate \
        --steps "$steps" --out "$R" 2>>"$OUT/torch.log" | cut -c1-400
    tail -3 "$OUT/torch.log"
    ;;
startup)
    bash bench/run_startup.sh "$OUT"
    ;;
esac
done
