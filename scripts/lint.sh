#!/usr/bin/env bash
# Lint: ruff on the Python code, cython-lint on the Cython code (both configured in
# pyproject.toml; both come with the dev extra that scripts/setup.sh installs).
set -euo pipefail
cd "$(dirname "$0")/.."
# cython-lint runs pycodestyle from PATH: the scripts folder of this Python
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
python3 -m ruff check python tests bench examples setup.py
cython-lint ann_core/*.pyx ann_core/*.pxd
