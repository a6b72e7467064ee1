#!/usr/bin/env bash
# Install everything EMAGE Studio needs on a fresh Debian/Ubuntu machine.
#   bash scripts/install.sh          # the app
#   bash scripts/install.sh --test   # the app and the test tools
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: EGL + Mesa for headless rendering (ffmpeg ships inside imageio-ffmpeg,
# libsndfile inside soundfile). Tests add Chromium for the browser test.
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgles2)
[ "${1:-}" = "--test" ] && APT_PACKAGES+=(chromium)
if [ ${#APT_PACKAGES[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  fi
fi

# torch first and on its own: an open range on a machine without torch would pull the newest
# CUDA build (several GB). 2.13.0 is the CPU wheel on CPU-only machines that provide one.
python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"

python -m pip install -r requirements.txt
if [ "${1:-}" = "--test" ]; then
  python -m pip install -r requirements-test.txt
fi
