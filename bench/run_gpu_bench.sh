#!/bin/bash
# The GPU benchmarks of issue 7 in one device-tool call, ours and PyTorch's
# side by side on the same card (bench/README.md).  Needs build-cuda/bench/cuda_bench
# and .device/lib.tgz (tools/device_bundle.sh) carried along; results go to $OUT.
#   bash bench/run_gpu_bench.sh [ours] [torch] [startup] [optimizer] [dp] [decode]
# MODPO_BENCH_PAIRS, MODPO_BENCH_STEPS override the micro-batches and steps.
# Every record also goes to stdout whole: the device tool returns only a few
# files from $OUT, so keep stdout (the records) as the copy of record.
# dp: on a machine of 2 or 4 GPUs, data-parallel MODPO at 1, 2, 4 GPUs and
# the w grid as one group of 1 GPU per GPU (mpirun, one rank per GPU).
# decode: batch 1 and 64 decode, alternated twice with build-cuda/bench/cuda_bench_prev
# (the build before a change, where carried), and batch 1 under each of
# MODPO_BENCH_DECODE_ENVS (e.g. "MODPO_CUDA_STEP_MERGE=0 MODPO_CUDA_STEP_SPLITS=4"),
# then a kernel timeline of batch 1
# (build-cuda/libkernel_trace.so, `make kernel-trace`, where carried; the
# summary goes to stdout, the gzipped CSV to $OUT).
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
    # MFU against the ceiling just measured on this card
    G=$(python3 -c "import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if '\"gemm\"' in l and 'modpo-cuda' in l][-1]['gemm_tflops'])" "$R")
    for p in $pairs; do
        MODPO_CUDA_PROFILE=1 $B --what modpo --pairs "$p" --steps "$steps" --gemm-tflops "$G" \
            --out "$R" 2>>"$OUT/ours.log"
    done
    $B --what precompute --steps "$steps" --out "$R" 2>>"$OUT/ours.log"
    $B --what precompute_pairs --steps "$steps" --out "$R" 2>>"$OUT/ours.log"
    $B --what decode --out "$R" 2>>"$OUT/ours.log"
    grep -E "profile modpo|error|cuda_bench" "$OUT/ours.log"
    ;;
torch)
    python3 bench/torch_gpu_bench.py --shape llama2-7b --what gemm,modpo_tuned,modpo_seed,precompute,generate \
        --steps "$steps" --out "$R" 2>>"$OUT/torch.log"
    tail -3 "$OUT/torch.log"
    ;;
startup)
    bash bench/run_startup.sh "$OUT"
    ;;
optimizer)
    # The MODPO step with the clip + AdamW on the host (gradients pulled,
    # params pushed) and on the GPU, side by side at MODPO_BENCH_PAIRS (8).
    $B --what gemm --out "$R" 2>>"$OUT/ours.log"
    G=$(python3 -c "import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if '\"gemm\"' in l and 'modpo-cuda' in l][-1]['gemm_tflops'])" "$R")
    for p in ${MODPO_BENCH_PAIRS:-8}; do
        for o in host backend; do
            $B --what modpo --pairs "$p" --steps "$steps" --optimizer $o --gemm-tflops "$G" \
                --out "$R" 2>>"$OUT/ours.log"
        done
    done
    grep -E "error|cuda_bench" "$OUT/ours.log"
    ;;
dp)
    n=$(nvidia-smi -L | wc -l)
    # one OpenMP pool per rank of its share of the cores (the host AdamW)
    export OMP_NUM_THREADS=$(( $(nproc) / n ))
    M="mpirun --allow-run-as-root -x LD_LIBRARY_PATH -x OMP_NUM_THREADS --bind-to none"
    P=${MODPO_BENCH_DP_PAIRS:-8}
    # the trainer's way on GPUs (AdamW on the device) unless told otherwise (host: ZeRO-1)
    O=${MODPO_BENCH_DP_OPTIMIZER:-backend}
    for np in 1 2 4; do
        [ "$np" -le "$n" ] || continue
        $M -np "$np" $B --what modpo --pairs "$P" --steps "$steps" --optimizer "$O" --out "$R" \
            2>>"$OUT/dp.log"
    done
    if [ "$n" -ge 2 ]; then  # the w grid: one independent group per GPU (each one process)
        $M -np "$n" $B --what modpo --pairs "$P" --steps "$steps" --group-size 1 --out "$R" \
            2>>"$OUT/dp.log"
    fi
    tail -3 "$OUT/dp.log"
    ;;
decode)
    $B --what gemm --out "$R" 2>>"$OUT/ours.log"
    for rep in 1 2; do
        for b in $B ${B}_prev; do
            [ -x "$b" ] || continue
            echo "== $b"
            $b --what decode --gen-batches 1,64 --out "$R" 2>>"$OUT/ours.log" | grep -E '"(generate|decode_gemvs)"'
        done
        for e in ${MODPO_BENCH_DECODE_ENVS:-}; do  # switches to set beside the default, batch 1
            echo "== $B with $e"
            env "$e" $B --what decode --gen-batches 1 --out "$R" 2>>"$OUT/ours.log" | grep -E '"(generate|decode_gemvs)"'
        done
    done
    if [ -f build-cuda/libkernel_trace.so ]; then
        cupti=$(dirname "$(ls /usr/local/cuda*/targets/x86_64-linux/lib/libcupti.so* /usr/local/cuda/lib64/libcupti.so* 2>/dev/null | head -1)")
        CUDA_INJECTION64_PATH=$PWD/build-cuda/libkernel_trace.so KERNEL_TRACE_OUT=/tmp/trace-b1.csv \
            LD_LIBRARY_PATH=$cupti:$LD_LIBRARY_PATH $B --what decode --gen-batches 1 --out /tmp/trace-b1.jsonl \
            >/dev/null 2>>"$OUT/ours.log"
        python3 tools/kernel_trace/summarize.py /tmp/trace-b1.csv --min-kernels 50 --last 100
        gzip -c /tmp/trace-b1.csv > "$OUT/trace-b1.csv.gz"
    fi
    grep -E "error|kernel_trace" "$OUT/ours.log"
    ;;
esac
done
