#!/usr/bin/env bash
# Set up, then run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# -P: the source tree must not shadow the installed, compiled package
python3 -P -m pytest -q "$@"
