#!/bin/bash
# The CUDA checks of issue 6 in one device-tool call (docs/cuda.md):
#   1. check_cuda_backend: CUDA vs CPU backend on tiny, tied, gqa128, small-100m
#   2. compute-sanitizer memcheck of the tiny case (training step + decode)
#   3. the tiny pipeline end to end on the CPU and on the GPU, and MODPO
#      (50 steps, lr 1e-3, loss logged every step) on the GPU from the CPU
#      run's SFT model and margin adapter, so the two loss curves start equal.
#   4. torch: the CUDA backend against PyTorch on a Llama-2-7B-shaped random
#      model (tests/cuda/run_torch_check.sh).
# Needs build-cuda/modpo, build-cuda/tests/cuda/check_cuda_backend and
# .device/lib.tgz (tools/device_bundle.sh) carried along; logs go to $OUT.
#   bash tests/cuda/run_device_checks.sh [parity] [parity-variants] [memcheck]
#       [poison] [racecheck] [initcheck] [synccheck] [diagnose] [diagnose-fp16] [pipeline]
#       [recompute] [torch]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" .device
tar xzf .device/lib.tgz -C .device
export LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64
B=build-cuda/modpo
T=build-cuda/tests/cuda/check_cuda_backend
steps=${*:-parity memcheck pipeline torch}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$B devices 2>&1 | tee -a "$OUT/gpu.txt"

for step in $steps; do
case $step in
parity)
    echo "== parity"
    timeout 300 $T 2>&1 | tee "$OUT/check.log"
    ;;
poison)
    # Every scratch allocation, attention workspace and KV cache filled with
    # NaN bytes first: a read of memory nothing wrote shows as NaN in the
    # checks (compute-sanitizer initcheck's question, asked of the values).
    echo "== parity, MODPO_CUDA_POISON=1"
    MODPO_CUDA_POISON=1 timeout 300 $T 2>&1 | tee "$OUT/check-poison.log" | grep -E "FAIL|PASSED|cosine \(all\)|nan"
    ;;
parity-variants)
    # The other attention paths: the flash kernels, and the GEMM path in
    # chunks of a few sequences (a 1 MB workspace bound).
    echo "== parity, MODPO_CUDA_ATTENTION=flash"
    MODPO_CUDA_ATTENTION=flash timeout 300 $T 2>&1 | grep -E "FAIL|PASSED|cosine \(all\)"
    echo "== parity, MODPO_CUDA_ATTENTION_MB=1"
    MODPO_CUDA_ATTENTION_MB=1 timeout 300 $T 2>&1 | grep -E "FAIL|PASSED|cosine \(all\)"
    # The step attention's split merge one split at a time (the batched
    # merge is the default since session 8).
    echo "== parity, MODPO_CUDA_STEP_MERGE=0"
    MODPO_CUDA_STEP_MERGE=0 timeout 300 $T 2>&1 | grep -E "FAIL|PASSED|decode of"
    ;;
memcheck)
    echo "== memcheck (tiny)"
    SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
    timeout 300 "$SAN" --tool memcheck $T tiny > "$OUT/memcheck.log" 2>&1
    echo "compute-sanitizer exit $?"
    grep -E "ERROR SUMMARY|PASSED|FAILED" "$OUT/memcheck.log"
    ;;
racecheck|initcheck|synccheck)
    # The other compute-sanitizer tools on the tiny case: shared-memory races,
    # reads of uninitialised device memory, invalid __syncthreads use.
    echo "== $step (tiny)"
    SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
    timeout ${SAN_TIMEOUT:-400} "$SAN" --tool $step ${SAN_FLAGS:-} $T ${SAN_CASE:-tiny} > "$OUT/$step.log" 2>&1
    echo "compute-sanitizer --tool $step exit $?"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$OUT/$step.log"
    ;;
diagnose)
    # Where a bf16 Llama's gradient error comes from (torch, fp32 with chosen roundings).
    echo "== diagnose (7B shape)"
    PYTHONUNBUFFERED=1 timeout 400 python3 tests/cuda/diagnose_bf16_error.py 2>&1 | grep -v -i warn | tee "$OUT/diagnose.log"
    ;;
diagnose-fp16)
    # The same at the 7B shape, asking which places would need fp16 operands
    # for a gradient cosine of 0.999 against fp32 (not run yet on a GPU).
    echo "== diagnose, fp16 variants (7B shape)"
    PYTHONUNBUFFERED=1 timeout 400 python3 tests/cuda/diagnose_bf16_error.py --fp16-only 2>&1 | grep -v -i warn | tee "$OUT/diagnose-fp16.log"
    ;;
pipeline)
    echo "== pipeline"
    S="--set modpo.steps=50 --set modpo.log_steps=1 --set modpo.learning_rate=1e-3 --set modpo.eval_steps=25 --set modpo.save_steps=25"
    rm -rf runs-cpu runs-cuda runs-mix
    t0=$SECONDS; timeout 200 $B pipeline conf/tiny.cfg --set run.output_root=runs-cpu --set run.threads=8 $S > "$OUT/pipeline-cpu.log" 2>&1
    echo "cpu pipeline exit $? in $((SECONDS - t0)) s"; tail -1 "$OUT/pipeline-cpu.log"
    t0=$SECONDS; timeout 200 $B pipeline conf/tiny.cfg --set run.device=cuda --set run.output_root=runs-cuda $S > "$OUT/pipeline-cuda.log" 2>&1
    echo "cuda pipeline exit $? in $((SECONDS - t0)) s"; tail -8 "$OUT/pipeline-cuda.log"
    mkdir -p runs-mix && cp -r runs-cpu/tiny runs-mix/ && rm -rf runs-mix/tiny/modpo-w* runs-mix/tiny/gen runs-mix/tiny/score
    timeout 200 $B modpo conf/tiny.cfg --set run.device=cuda --set run.output_root=runs-mix $S > "$OUT/modpo-mix.log" 2>&1
    echo "cuda modpo (from the cpu sft) exit $?"
    python3 tests/cuda/compare_curves.py runs-cpu/tiny runs-mix/tiny runs-cuda/tiny 2>&1 | tee "$OUT/curves.txt"
    tar czf "$OUT/runs.tgz" runs-cpu/tiny/*/metrics.jsonl runs-cuda/tiny/*/metrics.jsonl \
        runs-mix/tiny/*/metrics.jsonl runs-cpu/tiny/score runs-cuda/tiny/score runs-cuda/tiny/gen 2>/dev/null
    ;;
recompute)
    # The tiny pipeline on the GPU with run.recompute = true: every stage's
    # loss curve against the kept-activation GPU run (needs 'pipeline' first).
    echo "== pipeline with run.recompute = true"
    S="--set modpo.steps=50 --set modpo.log_steps=1 --set modpo.learning_rate=1e-3 --set modpo.eval_steps=25 --set modpo.save_steps=25"
    rm -rf runs-recompute
    t0=$SECONDS; timeout 200 $B pipeline conf/tiny.cfg --set run.device=cuda --set run.recompute=true --set run.output_root=runs-recompute $S > "$OUT/pipeline-recompute.log" 2>&1
    echo "cuda pipeline (recompute) exit $? in $((SECONDS - t0)) s"
    python3 tests/cuda/compare_curves.py runs-cuda/tiny runs-recompute/tiny 2>&1 | tee "$OUT/curves-recompute.txt"
    ;;
torch)
    echo "== torch (7B shape)"
    bash tests/cuda/run_torch_check.sh 7b > "$OUT/torch.log" 2>&1
    grep -v "^\[" "$OUT/check-torch.log"
    ;;
esac
done
