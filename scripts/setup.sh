#!/usr/bin/env bash
# Set up fedrlprune on a fresh machine: the Fashion-MNIST Debian package (when apt is there)
# and a virtual environment at .venv with the package and its test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if $sudo apt-get update -qq >/dev/null 2>&1 &&
     $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
    echo "setup: installed dataset-fashion-mnist"
  else
    echo "setup: could not install dataset-fashion-mnist with apt; put its IDX files in a" \
         "folder and set data_path, or use dataset=digits" >&2
  fi
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 is pinned in pyproject.toml: the CPU build (no torchvision).
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: ready (.venv/bin/fedrlprune)"
