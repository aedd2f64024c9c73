#!/usr/bin/env bash
# Set up, then train a network on Fashion-MNIST with Spark on this machine (local[*], or
# $SPARK_MASTER): the IDX files become Parquet, the Spark estimator trains printing each
# round's time and the total (under a progress bar on a terminal), the
# model is saved to sparkann-run/model, then loaded again and evaluated; test accuracy and
# times are printed. Extra arguments go to the job (python3 examples/fashion_mnist_spark.py -h),
# e.g. --max-iter 5 for a short run; the Parquet files of a first run are used again
# (--data sparkann-run/small --train-rows 10000 --test-rows 2000 prepares fewer rows elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
# Python (and Spark's Python workers, which start with the driver's folder as their own) must not
# put the current folder on sys.path: the source tree's ann_core/ would shadow the installed,
# compiled package.
export PYTHONSAFEPATH=1
bash scripts/setup.sh
export SPARK_LOCAL_IP=127.0.0.1
# The example's defaults are the recipe: [784, 256, 128, 10] ReLU, Adam, 15 rounds of one
# local pass per partition then averaging.
python3 examples/fashion_mnist_spark.py all --data sparkann-run/data --model sparkann-run/model "$@"
