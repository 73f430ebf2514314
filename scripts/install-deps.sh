#!/usr/bin/env bash
# Installs dnamba's build and test dependencies from Debian 12 packages (run as root).
# snakemake, slurm-wlm and munge are for the workflow test (tests/cli/test_workflow.sh), which starts and
# stops its own single-node SLURM cluster (scripts/slurm-test-cluster.sh); no service is enabled here.
# The CUDA toolkit (nvcc) is optional: when /usr/local/cuda/bin/nvcc exists the CUDA backend is built.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build ccache pkg-config patchelf \
  libhts-dev libdeflate-dev zlib1g-dev libzstd-dev libboost-program-options-dev nlohmann-json3-dev \
  libbigwig-dev libopenblas-dev libgtest-dev googletest \
  samtools bcftools tabix \
  python3 python3-numpy python3-zarr python3-numcodecs python3-pybigwig \
  snakemake slurm-wlm munge \
  >/dev/null
