#!/usr/bin/env bash
# Set up everything ainode needs on a fresh Debian/Ubuntu machine:
#   system packages (Orthanc + DICOMweb plugin, dcmtk, dicom3tools) and a
#   Python virtual environment in .venv with ainode installed (editable).
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(orthanc orthanc-dicomweb dcmtk dicom3tools)
PYTHON="${PYTHON:-python3}"
# Debian's python3 lacks venv/ensurepip until python3-venv is installed.
if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-venv)
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "bootstrap: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a system Orthanc on 4242/8042 where systemd runs; ainode's tests
    # use free ports, so it is harmless, but stop it where we can.
    $SUDO systemctl disable --now orthanc >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    # Pinned first, so nothing later pulls a different (multi-GB CUDA) build.
    echo "bootstrap: installing torch 2.13.0"
    .venv/bin/pip install -q torch==2.13.0
fi
stamp=.venv/.ainode-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing ainode and its test dependencies"
    .venv/bin/pip install -q -e ".[test]"
    touch "$stamp"
fi
if [ -f tests/js/package.json ] && command -v npm >/dev/null && [ ! -d tests/js/node_modules ]; then
    echo "bootstrap: installing the Node.js test dependencies (dcmjs)"
    (cd tests/js && npm ci --silent --no-audit --no-fund)
fi
echo "bootstrap: ready"
