#!/usr/bin/env bash
# Install EMAGE Studio into a virtual environment inside the checkout (.venv) on a fresh
# Debian/Ubuntu machine with only python3 present.
#   bash scripts/install.sh          # the app          then: .venv/bin/python app.py
#   bash scripts/install.sh --test   # the app + tests  then: .venv/bin/python -m pytest -q -rs
# Settings (environment): PYTHON (the interpreter that makes the venv, default python3),
# EMAGE_VENV (default .venv), TORCH_SPEC (default torch==2.13.0), TORCH_INDEX_URL (the CPU wheel index
# tried first on machines without an NVIDIA driver).
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (use --test or nothing)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
VENV=${EMAGE_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

# System packages: one list in packages.txt (a Hugging Face Space installs the same file), plus for the
# tests Chromium (the browser test), Blender with Debian's NumPy for its glTF add-on (the export tests
# import .glb/.bvh/.fbx into it) and, where there is no npm yet, Node.js with npm (the Khronos glTF
# validator; another Node.js, e.g. NodeSource's, bundles npm and conflicts with Debian's). python3-venv only
# where the interpreter cannot make a venv.
mapfile -t APT_PACKAGES < <(grep -vE '^\s*(#|$)' packages.txt)
[ "$TEST" = 1 ] && APT_PACKAGES+=(chromium blender python3-numpy)
[ "$TEST" = 1 ] && ! command -v npm >/dev/null && APT_PACKAGES+=(nodejs npm)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || APT_PACKAGES+=(python3-venv)
if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  fi
else
  echo "install.sh: no apt-get here; make sure these system packages are present: ${APT_PACKAGES[*]}" >&2
fi

# The virtual environment: made once, reused afterwards (PEP 668 refuses installs into a system Python).
if [ ! -x "$VENV/bin/python" ]; then
  echo "install.sh: creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

# torch first and on its own: an open range on a machine without torch would pull the newest CUDA
# build (several GB). Without an NVIDIA driver, the CPU wheel from PyTorch's CPU index; where that index
# is unreachable, the same version from the configured package index (which may be a CUDA build).
if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "${PIP[@]}" "$TORCH_SPEC"
  elif ! "${PIP[@]}" --retries 1 --timeout 20 --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC" 2>/dev/null; then
    echo "install.sh: the CPU index $TORCH_INDEX_URL is unreachable; installing $TORCH_SPEC from the package index"
    "${PIP[@]}" "$TORCH_SPEC"
  fi
fi

"${PIP[@]}" -r requirements.txt
[ "$TEST" = 1 ] && "${PIP[@]}" -r requirements-test.txt
# The Khronos glTF validator for the export tests: npm's gltf-validator, pinned, into the git-ignored .tools/
if [ "$TEST" = 1 ]; then
  if command -v npm >/dev/null; then
    npm install --prefix .tools/gltf-validator --no-save --no-audit --no-fund --loglevel=error \
      gltf-validator@2.0.0-dev.3.10
  else
    echo "install.sh: no npm here; the glTF validator tests will skip" >&2
  fi
fi
# emage_core itself (editable: bench/ and scripts/ import it like any installed package)
"${PIP[@]}" --no-deps -e .
echo "install.sh: done. Python: $PY"
