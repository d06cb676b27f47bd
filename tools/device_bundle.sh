#!/bin/sh
# Bundles the shared libraries that a binary built here (Debian 12) needs and
# the GPU machine (Ubuntu 24.04, CUDA 13, Open MPI 4.1.6; see docs/cuda.md)
# lacks into a git-ignored folder, so the binary can travel with the device
# tool's `carry` and run there with LD_LIBRARY_PATH=<folder>:/usr/local/cuda/lib64.
#
#   sh tools/device_bundle.sh [OUT_DIR] BINARY...     (OUT_DIR default .device/lib)
#
# Left out: glibc and the gcc runtime (newer there), the CUDA libraries (the
# device's own), and the Open MPI stack (the device has a compatible 4.1.x
# whose plugins match its libmpi).
set -eu
out=.device/lib
case "${1:-}" in
*/*|.device*) if [ ! -x "$1" ] || [ -d "$1" ]; then out=$1; shift; fi ;;
esac
[ $# -ge 1 ] || { echo "usage: $0 [OUT_DIR] BINARY..." >&2; exit 2; }
mkdir -p "$out"
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|librt\.|libresolv\.|libutil\.|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libnccl|libnvidia|libmpi|libopen-pal|libopen-rte|libhwloc|libevent|libudev)'
for bin in "$@"; do
    ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
    if echo "$name" | grep -Eq "$skip"; then continue; fi
    cp -L "$path" "$out/$name"
done
du -sh "$out" | awk '{print "bundled " $1 " into " $2}'
# The device tool carries at most 64 MiB: carry the compressed copy and unpack
# it there (tar xzf .device/lib.tgz -C .device).
tar czf "$out.tgz" -C "$(dirname "$out")" "$(basename "$out")"
du -sh "$out.tgz" | awk '{print "compressed: " $1 " " $2}'
