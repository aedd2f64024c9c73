#!/usr/bin/env bash
# Set up, then run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
# Python (and Spark's Python workers, which start with the driver's folder as their own) must not
# put the current folder on sys.path: the source tree's ann_core/ would shadow the installed,
# compiled package.
export PYTHONSAFEPATH=1
bash scripts/setup.sh
# PyTorch (CPU) is the tests' independent reference (and the contender of bench/).
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
python3 -m pytest -q "$@"
