#!/bin/sh
# Data-parallel scaling benchmark: training steps/s and time in the gradient
# collectives vs. the number of ranks, plus the collectives alone.
#
#   sh bench/scaling/run.sh                 # CPU ranks 1 2 4 (mpirun)
#   RANKS="1 2 4 8" DEVICE=cuda LAUNCH=srun sh bench/scaling/run.sh   # GPUs (slurm/scaling.sbatch)
#
# Environment:
#   RANKS    rank counts (default "1 2 4")
#   PRESET   model preset for the benchmark model (default tiny; small-100m)
#   STEPS    SFT optimizer steps per run (default 30)
#   BATCH, ACCUM   micro-batch and accumulation (default 4 x 2: a global
#            batch of 8 sequences, the same at every rank count)
#   DEVICE   cpu | cuda (run.device); THREADS per rank (default 1)
#   LAUNCH   mpirun (default) | srun (inside an allocation)
#   PREBUILT=1 with MODPO_BIN and ALLREDUCE_BIN: use binaries built elsewhere
#            (the GPU machine of the device tool has no libconfig to build with;
#            bench/scaling/run_device.sh sets these)
# Prints a Markdown table (copy it into bench/scaling/README.md with the
# machine) and the collectives' JSON lines.
set -eu
cd "$(dirname "$0")/../.."
RANKS=${RANKS:-"1 2 4"}
PRESET=${PRESET:-tiny}
STEPS=${STEPS:-30}
BATCH=${BATCH:-4}
ACCUM=${ACCUM:-2}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-1}
LAUNCH=${LAUNCH:-mpirun}
PKGS="libconfig jansson zlib openblas hdf5-openmpi"

MODPO_BIN=${MODPO_BIN:-./modpo}
ALLREDUCE_BIN=${ALLREDUCE_BIN:-build/bench/allreduce}
if [ -z "${PREBUILT:-}" ]; then
make -s modpo build/libmodpo.a
mkdir -p build/bench
EXTRA_CFLAGS=""
EXTRA_LIBS=""
if [ "$DEVICE" = cuda ]; then
    EXTRA_CFLAGS="-DMODPO_CUDA -I${CUDA_HOME:-/usr/local/cuda}/include"
    EXTRA_LIBS="-L${CUDA_HOME:-/usr/local/cuda}/lib64 -lnccl -lcudart"
fi
# shellcheck disable=SC2086
${CC:-mpicc} -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -fopenmp -Isrc -Ibuild $EXTRA_CFLAGS \
    $(pkg-config --cflags $PKGS) -o build/bench/allreduce bench/scaling/allreduce.c \
    build/libmodpo.a $(pkg-config --libs $PKGS) $EXTRA_LIBS -lm
fi

launch() {
    n=$1; shift
    if [ "$LAUNCH" = srun ]; then
        srun --ntasks="$n" --mpi="${MODPO_SRUN_MPI:-pmix}" "$@"
    else
        extra=""
        [ "$(id -u)" -eq 0 ] && extra="--allow-run-as-root"
        [ -n "${LD_LIBRARY_PATH:-}" ] && extra="$extra -x LD_LIBRARY_PATH"
        # shellcheck disable=SC2086
        mpirun --oversubscribe $extra -np "$n" "$@"
    fi
}

T=$(mktemp -d /tmp/modpo-scaling-XXXXXX)
trap 'rm -rf "$T"' EXIT
$MODPO_BIN init-model --preset "$PRESET" --out "$T/model" > /dev/null
CPU=$(lscpu 2> /dev/null | sed -n 's/^Model name: *//p' | head -1)
echo "# $(date -u +%Y-%m-%d) $CPU, $(nproc --all) cores; device $DEVICE, $THREADS thread(s) per rank; model $PRESET;"
echo "# SFT $STEPS steps, global batch $BATCH x $ACCUM sequences (independent of the ranks); launcher $LAUNCH"
echo
echo "| ranks | steps/s | speed-up | collectives s/step | share of step | CPU s/step, all ranks |"
echo "|------:|--------:|---------:|-------------------:|--------------:|----------------------:|"
base=""
for n in $RANKS; do
    out="$T/np$n"
    launch "$n" $MODPO_BIN sft --set run.output_root="$out" --set model.path="$T/model" \
        --set run.device="$DEVICE" --set run.threads="$THREADS" \
        --set sft.steps="$STEPS" --set sft.batch_size="$BATCH" --set sft.grad_accum="$ACCUM" \
        --set sft.eval_steps="$STEPS" --set sft.save_steps="$STEPS" --set sft.log_steps="$STEPS" \
        --quiet > "$T/np$n.log" 2>&1 || { echo "ranks $n failed:" >&2; tail -20 "$T/np$n.log" >&2; exit 1; }
    done_json=$(cat "$out"/*/sft/DONE)
    line=$(echo "$done_json" | awk -v n="$n" -v base="$base" '
        { gsub(/[{},":]/, " "); for (i = 1; i < NF; i++) { if ($i == "steps") s = $(i + 1);
          if ($i == "step_seconds") t = $(i + 1); if ($i == "comm_seconds") c = $(i + 1);
          if ($i == "cpu_seconds") u = $(i + 1) } }
        END { r = s / t; sp = (base == "") ? 1 : r / base;
              printf "%s %.3f %.2f %.2e %.1f%% %.4f\n", n, r, sp, c / s, 100 * c / t, u / s }')
    set -- $line
    [ -z "$base" ] && base=$2
    echo "| $1 | $2 | $3 | $4 | $5 | $6 |"
done
echo
echo "Collectives alone (median of 30; MPI):"
for n in $RANKS; do
    [ "$n" -gt 1 ] || continue
    if [ "$DEVICE" = cuda ]; then launch "$n" $ALLREDUCE_BIN --nccl; else launch "$n" $ALLREDUCE_BIN; fi
done
