#!/bin/sh
# The scaling benchmark on the device tool's GPU machine, with binaries built
# here (make CUDA=1 BIN=build-cuda/modpo; sh bench/scaling/build_cuda_allreduce.sh)
# and the Debian libraries the machine lacks (tools/device_bundle.sh):
#   carry build-cuda/modpo, build-cuda/bench/allreduce, .device/lib.tgz
#   RANKS="1 2" PRESET=small-100m sh bench/scaling/run_device.sh
set -eu
mkdir -p .device
tar xzf .device/lib.tgz -C .device
LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PREBUILT=1 DEVICE=cuda MODPO_BIN=build-cuda/modpo ALLREDUCE_BIN=build-cuda/bench/allreduce \
    sh bench/scaling/run.sh
