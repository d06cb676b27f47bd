#!/bin/sh
# Runs a command on the GPU machine with the bundled libraries of
# tools/device_bundle.sh: sets LD_LIBRARY_PATH and execs the rest.
#   sh tools/device_run.sh build-cuda/modpo devices
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
export LD_LIBRARY_PATH="$here/.device/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
