#!/usr/bin/env bash
# Builds dnamba with CUDA here and stages what a GPU machine without the build dependencies needs
# into .gpu/ (git-ignored): the binaries, the non-system shared libraries they load (rpath
# $ORIGIN/lib), the golden folders, the default model and a small real genome.
#   scripts/build-gpu.sh            # source = this checkout
#   SRC=/path/to/tree scripts/build-gpu.sh   # build another tree (e.g. a snapshot), stage here
#   GPU_DIR=DIR: stage into DIR instead of .gpu (it must be git-ignored to be carried; e.g. build-x/..);
#   YEAST=1: also the yeast genome and VCF (data/yeast/, ~5 MiB) for bench/multi_gpu_score.sh.
# Then on the device: run(carry=[".gpu"], command="bash scripts/gpu-test.sh").
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SRC=${SRC:-$REPO}
BUILD=${BUILD:-$SRC/build-gpu}
GPU_DIR=${GPU_DIR:-$REPO/.gpu}
DEST=$GPU_DIR/stage
SHARED=${SHARED:-$REPO/../shared}

cmake -G Ninja -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
grep -q 'DNAMBA_HAVE_CUDA' "$BUILD/CMakeCache.txt" || true
TARGETS=${TARGETS:-"dnamba dnamba_gpu_tests dnamba_bench_scan dnamba_bench_model"}
ninja -C "$BUILD" $TARGETS

rm -rf "$GPU_DIR"
mkdir -p "$DEST/lib" "$DEST/data" "$DEST/models"
for t in $TARGETS; do
  f=$(find "$BUILD" -maxdepth 2 -type f -name "$t" | head -1)
  [ -n "$f" ] && cp "$f" "$DEST/"
done
# Shared libraries the binaries need that a bare CUDA machine lacks: everything but glibc, the
# C++ runtime and CUDA itself (the device has CUDA 13 under /usr/local/cuda).
skip='linux-vdso|ld-linux|libc\.so|libm\.so|libmvec|libpthread|libdl\.so|librt\.so|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libnvrtc|libnvJitLink'
for b in "$DEST"/dnamba*; do
  ldd "$b" | awk '/=> \// {print $3}' | grep -Ev "$skip" || true
done | sort -u | while read -r lib; do cp -L "$lib" "$DEST/lib/"; done
for b in "$DEST"/dnamba*; do patchelf --force-rpath --set-rpath '$ORIGIN/lib' "$b"; done
for l in "$DEST"/lib/*; do patchelf --force-rpath --set-rpath '$ORIGIN' "$l" 2>/dev/null || true; done
# Data the tests and benchmarks read.
mkdir -p "$DEST/golden"
cp -r "$SHARED/golden/hf_mamba_tiny" "$SHARED/golden/mamba_ssm_tiny" "$SHARED/golden/caduceus_ps_tiny" \
  "$SHARED/golden/caduceus_ph_tiny" "$DEST/golden/"
chmod -R u+w "$DEST/golden"
cp -r "$SRC/models/default" "$DEST/models/default"
cp "$SHARED/data/ecoli/ecoli_k12_mg1655.fa.gz"* "$DEST/data/" 2>/dev/null || true
cp "$SRC/scripts/make_untrained_model.py" "$DEST/"
if [ "${YEAST:-0}" = 1 ]; then
  mkdir -p "$DEST/data/yeast"
  cp "$SHARED/data/yeast/yeast_r64.fa.gz"* "$SHARED/data/yeast/yeast_variants.vcf.gz"* "$DEST/data/yeast/"
  chmod -R u+w "$DEST/data/yeast"
fi
du -sh "$DEST"
# One compressed bundle travels (the device run's tree is limited to 64 MiB); gpu-test.sh unpacks it.
tar -C "$DEST" -cf - . | xz -T2 -3 > "$GPU_DIR/bundle.tar.xz"
rm -rf "$DEST"
ls -la "$GPU_DIR"
