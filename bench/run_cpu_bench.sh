#!/bin/sh
# CPU training-step benchmark: the modpo CPU backend (bench/cpu_step.c) and
# the same step in PyTorch (bench/torch_cpu_step.py; as the seed runs it, and
# with logits only where labels are), one after the other in one run, for the
# tiny shape and the ~100M shape.  Results: one JSON line per run on stdout
# (copy them into bench/README.md with the machine).
#
#   sh bench/run_cpu_bench.sh [python]      (default /work/venv/bin/python)
#
# Builds build/bench/cpu_step with the Makefile's flags (needs
# build/libmodpo.a, made here by `make build/libmodpo.a`).
set -e
cd "$(dirname "$0")/.."
PY=${1:-/work/venv/bin/python}
PKGS="libconfig jansson zlib openblas hdf5-openmpi"
BATCH=${BATCH:-4}
SEQ=${SEQ:-256}
COMPLETION=${COMPLETION:-128}
THREADS=${THREADS:-2}

make -s build/libmodpo.a
mkdir -p build/bench
${CC:-mpicc} -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -fopenmp -Isrc -Ibuild \
    $(pkg-config --cflags $PKGS) -o build/bench/cpu_step bench/cpu_step.c \
    build/libmodpo.a $(pkg-config --libs $PKGS) -lm

export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, threads $THREADS"
for shape in tiny 100m; do
    steps=5
    [ "$shape" = 100m ] && steps=3
    ./build/bench/cpu_step --shape $shape --batch $BATCH --seq $SEQ \
        --completion $COMPLETION --steps $steps --warmup 1
    for keep in "" --logits-to-keep; do
        "$PY" bench/torch_cpu_step.py --shape $shape --batch $BATCH --seq $SEQ \
            --completion $COMPLETION --steps $steps --warmup 1 --threads $THREADS $keep \
            2>/dev/null
    done
done
