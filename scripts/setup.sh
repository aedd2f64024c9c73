#!/usr/bin/env bash
# Install what sparkann needs on a fresh Debian machine: the Fashion-MNIST files and the
# package with its Spark, plotting, MKL and test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi
python3 -m pip install -q --disable-pip-version-check ".[spark,plot,mkl,dev]"
