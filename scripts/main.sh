#!/usr/bin/env bash
# Set up, then train a network on Fashion-MNIST and print its test accuracy and time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
sparkann train "$@"
