#!/usr/bin/env bash
# Install what sparkann needs on a fresh Debian machine: the Fashion-MNIST files and the
# package with its Spark, plotting, MKL, bfloat16 (oneDNN), ONNX, MLflow and test extras.
# Safe to run again: each install is skipped when what it would install is there already
# (SPARKANN_REINSTALL=1 forces pip).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

EXTRAS="spark,connect,plot,mkl,bf16,onnx,mlflow,dev"
# What pip would build: the package's sources and build files (not the generated C of
# Cython), so an edit of any of them installs again.
fingerprint() {
    find python ann_core csrc setup.py pyproject.toml MANIFEST.in README.md -type f \
        \( -name '*.py' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' -o -name '*.h' \
           -o -name '*.toml' -o -name '*.in' -o -name '*.md' \) ! -path 'ann_core/*.c' \
        ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum
}
# The stamp names the interpreter, the extras and the sources of the last install.
stamp_file=build/setup-stamp
stamp="$(command -v python3) [$EXTRAS] $(fingerprint)"

# The stamp alone is not enough: the package or a dependency may have been removed since.
# From / so that the source tree's ann_core/ cannot stand in for the installed one.
installed() {
    (cd / && python3 - "$EXTRAS" <<'EOF'
import importlib.metadata as md
import re
import sys

import ann_core  # noqa: F401  (the compiled engine imports)

extras = set(sys.argv[1].split(","))
for requirement in md.requires("sparkann") or []:
    name, _, marker = requirement.partition(";")
    extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    if marker.strip() and (extra is None or extra.group(1) not in extras):
        continue
    md.version(re.match(r"[A-Za-z0-9_.\-]+", name.strip()).group(0))  # raises when missing
EOF
    ) >/dev/null 2>&1
}

if [[ "${SPARKANN_REINSTALL:-0}" != 1 && -f $stamp_file && "$(cat $stamp_file)" == "$stamp" ]] \
        && installed; then
    echo "sparkann and its extras are installed and up to date (SPARKANN_REINSTALL=1 reinstalls)"
else
    python3 -m pip install -q --disable-pip-version-check ".[$EXTRAS]"
    mkdir -p build
    echo "$stamp" > $stamp_file
fi
