#!/usr/bin/env bash
# Set up, then run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# PyTorch (CPU) is the tests' independent reference (and the contender of bench/).
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
# -P: the source tree must not shadow the installed, compiled package
python3 -P -m pytest -q "$@"
