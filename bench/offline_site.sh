#!/usr/bin/env bash
# Packs what the agent needs beyond a stock CUDA PyTorch image into one tarball, for a GPU machine
# that cannot reach a package registry (how `make gpu-check` was run on the lent H200).
#
#   bench/offline_site.sh [python-version] [out.tgz]      # default: 3.12, .gpusite/site.tgz
#   # there:  mkdir -p /tmp/site && tar xzf site.tgz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
#   #         python3 bench/gpu_check.py
#
# envpool's wheel holds every suite it supports (about 300 MB unpacked); only its Atari part is kept
# (the other suites' compiled modules and assets are dropped, and its entry point registers Atari
# alone), so the tarball is about 13 MB. The target image must already have torch, numpy,
# tensorboard, matplotlib, pillow, imageio, scipy, pytest and hypothesis.
set -euo pipefail
PYVER=${1:-3.12}
OUT=${2:-.gpusite/site.tgz}
PIP=${PIP:-.venv/bin/python -m pip}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work/wheels" \
  envpool==1.2.5 envpool-assets==0.3.0 ale-py==0.12.1 gymnasium==1.4.0 farama-notifications \
  tyro==1.0.17 docstring_parser==0.18.0 typeguard==4.6.1 dm-env==1.6 dm-tree optree==0.20.0 MinAtar==1.0.15
mkdir -p "$work/site"
for w in "$work"/wheels/*.whl; do (cd "$work/site" && unzip -q -o "$w"); done
cd "$work/site"
find envpool -name "*.so" -not -path "envpool/atari/*" -delete
for d in envpool_assets/*/; do case $d in *atari*) ;; *) rm -rf "$d" ;; esac; done
sed -i '/^import envpool\./{/atari/!d}' envpool/entry.py
cd - >/dev/null
mkdir -p "$(dirname "$OUT")"
tar czf "$OUT" -C "$work/site" .
echo "$OUT: $(du -h "$OUT" | cut -f1) (python $PYVER)"
