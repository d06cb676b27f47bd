#!/bin/sh
# Builds the collectives micro-benchmark against the CUDA build's library
# (NCCL path), for bench/scaling/run_device.sh.
set -eu
cd "$(dirname "$0")/../.."
make -s CUDA=1 BIN=build-cuda/modpo
PKGS="libconfig jansson zlib openblas hdf5-openmpi"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
mkdir -p build-cuda/bench
# shellcheck disable=SC2046
mpicc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -fopenmp -Isrc -DMODPO_CUDA -I"$CUDA_HOME/include" \
    $(pkg-config --cflags $PKGS) -o build-cuda/bench/allreduce bench/scaling/allreduce.c \
    build-cuda/libmodpo.a $(pkg-config --libs $PKGS) -L"$CUDA_HOME/lib64" \
    -lcublasLt -lcublas -lnccl -lcudart -lstdc++ -lm
echo "built build-cuda/bench/allreduce"
