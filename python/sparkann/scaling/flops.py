"""The FLOP rate of one worker: the native core's gradient timed on synthetic data."""
import time

import numpy as np


def _network(layers, dtype, activation="sigmoid"):
    from ann_core import Network

    spec = []
    for width in layers[1:-1]:
        spec += [("dense", int(width)), ("activation", activation)]
    spec += [("dense", int(layers[-1])), ("loss", "softmax_cross_entropy")]
    return Network(int(layers[0]), spec, dtype=dtype)


def measure_flop_rate(layers, dtype="float32", rows=4096, threads=1, repeats=3, seed=0,
                      statistic="median", block_rows=128):
    """FLOP/s of one worker: the native core's ``loss_grad`` on synthetic data.

    Counts the nominal ``6 * W`` FLOPs per example, as the model does. Calls ``loss_grad``
    once per block of ``block_rows`` rows, as training does over its cached blocks (``None``:
    one call for all rows). Runs with ``threads`` BLAS threads (a Spark task gets
    ``spark.task.cpus``) and returns the median rate, or with ``statistic='best'`` the
    fastest repeat (the rate of an uncontended core on a shared machine).
    """
    if statistic not in ("median", "best"):
        raise ValueError(f"statistic: expected 'median' or 'best', received {statistic!r}")
    from ann_core import blas_threads, set_blas_threads

    net = _network(layers, dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((int(rows), net.n_in)).astype(dtype)
    y = rng.integers(0, net.n_out, int(rows))
    step = int(rows) if block_rows is None else int(block_rows)
    blocks = [(np.ascontiguousarray(x[i:i + step]), y[i:i + step])
              for i in range(0, int(rows), step)]
    w = (0.05 * rng.standard_normal(net.n_weights)).astype(dtype)
    grad = np.zeros_like(w)

    def gradient():
        for xb, yb in blocks:
            net.loss_grad(w, xb, yb, grad)

    previous = blas_threads()["threads"]
    set_blas_threads(int(threads))
    try:
        gradient()                                        # warm-up: workspace, caches
        times = []
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            gradient()
            times.append(time.perf_counter() - t0)
    finally:
        set_blas_threads(previous)
    seconds = float(np.median(times)) if statistic == "median" else min(times)
    return 6.0 * net.n_weights * rows / seconds
