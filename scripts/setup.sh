#!/usr/bin/env bash
# Set up fedrlprune on a fresh machine: the Fashion-MNIST Debian package (when apt is there)
# and a virtual environment at .venv with the package and its test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
apt_updated=""
apt_install() {  # apt_install PACKAGE...: quietly, with one `apt-get update` per set-up
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq >/dev/null 2>&1 || return 1
    apt_updated=1
  fi
  $sudo apt-get install -y -qq "$@" >/dev/null 2>&1
}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if apt_install dataset-fashion-mnist; then
    echo "setup: installed dataset-fashion-mnist"
  else
    echo "setup: could not install dataset-fashion-mnist with apt; put its IDX files in a" \
         "folder and set data_path, or use dataset=digits" >&2
  fi
fi

# The deployment engine's certificates and SuperNode keys (scripts/make_certs.sh, and the
# end-to-end test) need openssl and ssh-keygen.
if ! command -v openssl >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
  if apt_install openssl openssh-client; then
    echo "setup: installed openssl and openssh-client"
  else
    # not fatal: training runs without them; the deployment test then fails saying this
    echo "setup: could not install openssl and openssh-client with apt; they are needed for" \
         "TLS certificates and SuperNode keys (scripts/make_certs.sh, tests/test_deployment.py):" \
         "install them (Debian: apt-get install openssl openssh-client)" >&2
  fi
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 is pinned in pyproject.toml: the CPU build (no torchvision).
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: ready (.venv/bin/fedrlprune)"
