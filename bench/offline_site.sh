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
# what the image lacks, at the versions `make install` put into .venv (pyproject.toml decides them)
NAMES="envpool envpool-assets ale-py gymnasium farama-notifications tyro docstring-parser typeguard dm-env dm-tree optree minatar"
PINS=$($PIP freeze | awk -F'==' -v names="$NAMES" 'BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
  { key = tolower($1); gsub(/_/, "-", key) } (key in want) { print; found++ } END { if (found < n) exit 1 }') || {
  echo "offline_site: .venv lacks one of: $NAMES (run make install first)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2086  # one argument per pin
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work/wheels" $PINS
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
