#!/bin/sh
# Installs modpo's build and test dependencies from Debian's packages.
set -e
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates \
    libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools \
    libconfig-dev check libsubunit-dev libjansson-dev zlib1g-dev libopenblas-dev \
    slurm-wlm munge procps
