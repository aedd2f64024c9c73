"""Full-batch gradient speed of the native core against PyTorch CPU and plain numpy.

For each topology (A, B, C), block size, thread count and dtype, one "gradient" is the summed
loss and its gradient over the Fashion-MNIST training images (sigmoid hidden layers, softmax
output), computed block by block with gradients accumulated and no weight update. Contenders
run in this one process with the same threads, dtype, block size, weights and data, in rounds
that time each of them once (a load that drifts over minutes weighs on all alike); the medians
over the rounds are printed with the GEMM rate of the BLAS in use, and each contender's speed
against PyTorch as the median of its per-round ratios.

With --caffe PATH (a `caffe` binary or its build directory, see bench/caffe/build_caffe.sh),
the bench instead times one batch's forward and backward pass, float32, per network, batch
size and thread count: `caffe time` on the same network (bench/caffe/caffe_nets.py writes it),
the engine's `loss_grad` on one block of rows and PyTorch, in interleaved rounds, with the
share of Caffe's time spent in its Sigmoid layers and the floor set by the best sgemm rate.

    python bench/bench_core.py                 # everything (long: about an hour)
    python bench/bench_core.py --quick         # A and B, float32, 2 threads
    python bench/bench_core.py --topologies C --dtypes float32 --threads 2 --blocks 1024
    python bench/bench_core.py --caffe ~/caffe-build --repeats 5    # against Caffe (~10 min)
    python bench/bench_core.py --dropout --repeats 7   # B with and without dropout (~3 min)
    python bench/bench_core.py --dtypes float32,bfloat16 --threads 2 --blocks 1024 --no-numpy

dtype bfloat16 is the engine's mixed precision (bfloat16 GEMM operands through oneDNN,
float32 everything else) against PyTorch's CPU autocast to bfloat16 (the same roundings);
with float32 in the same run, a last table gives each bfloat16 row's speed-up over the
fastest float32 sparkann row and over PyTorch's autocast, same topology, threads and block.
Its "% gemm" column stays empty: the GEMM rate printed under the float32 and float64 tables
is that of the BLAS (sgemm, dgemm), which bfloat16 GEMMs do not use.

With --dropout, the bench times the gradient of B at block 1024 (float32) with dropout 0.2 on
the input and 0.5 after each hidden layer beside the same network without it, in alternating
runs, a new mask every run: the per-gradient cost of drawing and applying the masks.

For peak numbers, unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in that one command.
"""
import argparse
import contextlib
import os
import pathlib
import statistics
import sys
import time

import numpy as np

import ann_core
from ann_core._blas import gemm
from sparkann.datasets import load_fashion_mnist

TOPOLOGIES = {
    "A": [784, 256, 128, 10],
    "B": [784, 1024, 1024, 10],
    "C": [784, 2500, 2000, 1500, 1000, 500, 10],
}


def spec(sizes, dropout=None):
    """The engine's stages of ``sizes``; ``dropout=(input rate, hidden rate)`` adds dropout."""
    layers = [("dropout", dropout[0])] if dropout else []
    for n in sizes[1:-1]:
        layers += [("dense", n), ("activation", "sigmoid")]
        layers += [("dropout", dropout[1])] if dropout else []
    return layers + [("dense", sizes[-1]), ("loss", "softmax_cross_entropy")]


def median_time(fn, repeats):
    fn()  # warm up: workspace pages, BLAS buffers, thread start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(contenders, repeats):
    """Seconds of each contender's runs, taken in rounds that run every contender once, so a
    load that drifts over minutes weighs on all of them alike. ``contenders`` maps a label to
    (setup, run): setup (threads, backend) is not timed. Each run is warmed up first."""
    for setup, run in contenders.values():
        setup()
        run()
    times = {label: [] for label in contenders}
    for _ in range(repeats):
        for label, (setup, run) in contenders.items():
            setup()
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return times


def round_ratio(numerator, denominator):
    """Median over the rounds of numerator's seconds over denominator's (same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def use_backend(name, threads):
    ann_core.set_backend(name)
    ann_core.set_blas_threads(threads)


def spark_init(sizes, dtype, seed=0):
    """Spark MLlib's initialisation: uniform in +-2.4/sqrt(n_in)."""
    rng = np.random.default_rng(seed)
    parts = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        scale = 2.4 / np.sqrt(n_in)
        parts.append(rng.uniform(-scale, scale, n_in * n_out + n_out))
    return np.concatenate(parts).astype(dtype)


def sparkann_gradient(sizes, dtype, block, X, y, w):
    net = ann_core.Network(sizes[0], spec(sizes), dtype=dtype, block_size=block)
    grad = np.zeros_like(w)
    return lambda: net.loss_grad(w, X, y, grad, zero=True)


def numpy_gradient(sizes, dtype, block, X, y, w):
    """Plain numpy: the same blocks, the same GEMMs, no fusion."""
    mats = []
    offset = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        W = w[offset:offset + n_in * n_out].reshape(n_in, n_out)
        b = w[offset + n_in * n_out:offset + n_in * n_out + n_out]
        mats.append((W, b))
        offset += n_in * n_out + n_out
    grads = [(np.zeros_like(W), np.zeros_like(b)) for W, b in mats]

    def run():
        for gW, gb in grads:
            gW[:] = 0
            gb[:] = 0
        for r in range(0, len(X), block):
            acts = [X[r:r + block]]
            for i, (W, b) in enumerate(mats):
                z = acts[-1] @ W + b
                if i < len(mats) - 1:
                    acts.append(1 / (1 + np.exp(-z)))
                else:
                    z -= z.max(axis=1, keepdims=True)
                    p = np.exp(z)
                    p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(p)), y[r:r + block]] -= 1
            delta = p
            for i in range(len(mats) - 1, -1, -1):
                gW, gb = grads[i]
                gW += acts[i].T @ delta
                gb += delta.sum(axis=0)
                if i > 0:
                    delta = (delta @ mats[i][0].T) * acts[i] * (1 - acts[i])
    return run


def torch_gradient(sizes, dtype, block, X, y, w):
    """PyTorch's gradient; dtype "bfloat16" is float32 under CPU autocast to bfloat16."""
    import torch
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    autocast = dtype == "bfloat16"
    layers = []
    offset = 0
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.Linear(n_in, n_out).to(tdtype)
        with torch.no_grad():
            W = w[offset:offset + n_in * n_out].reshape(n_in, n_out)
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(w[offset + n_in * n_out:offset + n_in * n_out + n_out]))
        offset += n_in * n_out + n_out
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    tX, ty = torch.from_numpy(X), torch.from_numpy(y)

    def run():
        model.zero_grad(set_to_none=False)
        for r in range(0, len(X), block):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = model(tX[r:r + block])
            loss_fn(out.float(), ty[r:r + block]).backward()
    return run


def gemm_rate(dtype, repeats):
    """GFLOP/s of the backend's GEMM on 2048 x 2048 x 2048."""
    rng = np.random.default_rng(0)
    A, B = (rng.random((2048, 2048)).astype(dtype) for _ in range(2))
    C = np.empty((2048, 2048), dtype)
    return 2 * 2048 ** 3 / median_time(lambda: gemm(A, B, C), repeats) / 1e9


def torch_threads_set(n):
    import torch
    torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n):
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def saturated_weights(sizes, X, y, iterations):
    """Weights after `iterations` L-BFGS iterations in float32 (sigmoids saturate, denormals
    appear)."""
    from scipy.optimize import minimize
    net = ann_core.Network(sizes[0], spec(sizes), dtype="float32", block_size=1024)
    grad = np.zeros(net.n_weights, np.float32)

    def fun(w64):
        w = w64.astype(np.float32)
        loss, n = net.loss_grad(w, X, y, grad, zero=True)
        return loss / n, grad.astype(np.float64) / n
    w0 = spark_init(sizes, np.float64)
    res = minimize(fun, w0, jac=True, method="L-BFGS-B",
                   options={"maxiter": iterations, "maxfun": 2 * iterations})
    return res.x.astype(np.float32), res.nit


def per_batch_ms(fn, calls):
    """Milliseconds per call of `fn`, over `calls` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1000 * (time.perf_counter() - start) / calls


def caffe_comparison(args, backend, X_all, y_all, have_torch):
    """One batch's forward + backward: `caffe time`, the engine and PyTorch, in interleaved
    rounds."""
    import tempfile
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "caffe"))
    from caffe_nets import write_nets
    from caffe_time import best_coretype, blas_library, caffe_time, find_caffe

    binary = find_caffe(args.caffe)
    caffe_blas = blas_library(binary)
    topologies = {t: TOPOLOGIES[t] for t in args.topologies.split(",")}
    blocks = [int(b) for b in args.blocks.split(",")]
    print(f"caffe: {binary} (BLAS {caffe_blas}); sparkann: {backend}; float32; "
          f"medians of {args.repeats} interleaved rounds; load average {_load()}", flush=True)
    header = (f"{'topo':4} {'thr':>3} {'batch':>5} {'caffe ms':>9} {'sigm %':>6} "
              f"{'sparkann ms':>11} "
              f"{'pytorch ms':>10} {'caffe/ours':>10} {'torch/ours':>10} {'floor ms':>8} "
              f"{'ours/floor':>10}")
    with tempfile.TemporaryDirectory(prefix="sparkann-caffe-") as tmp:
        nets = write_nets(tmp, topologies, blocks, spec)
        for threads in map(int, args.threads.split(",")):
            ann_core.set_backend(backend)
            ann_core.set_blas_threads(threads)
            ours_rate = gemm_rate("float32", args.repeats)
            coretype, caffe_rates = (best_coretype(caffe_blas, threads, args.repeats)
                                     if caffe_blas else (None, {}))
            peak = max([ours_rate, *caffe_rates.values()])
            print(f"sgemm 2048^3, {threads} thread(s), GFLOP/s: sparkann {backend} "
                  f"{ours_rate:.0f}; "
                  "caffe's BLAS " + ", ".join(f"{k} {v:.0f}" for k, v in caffe_rates.items()) +
                  f"; caffe runs with OPENBLAS_CORETYPE={coretype or '(unset)'}", flush=True)
            print(header)
            print("-" * len(header), flush=True)
            for topo, sizes in topologies.items():
                actual = ann_core.Network(sizes[0], spec(sizes)).flops_per_example()[1]
                w = spark_init(sizes, "float32")
                for block in blocks:
                    X = np.ascontiguousarray(X_all[:block], dtype="float32")
                    y = y_all[:block]
                    ours = sparkann_gradient(sizes, "float32", block, X, y, w)
                    ours()  # warm up, then size the rounds to about half a second of ours
                    calls = int(min(400, max(5, 500 / per_batch_ms(ours, 3))))
                    contenders = {"sparkann": lambda: per_batch_ms(ours, calls)}
                    if have_torch:
                        torch_run = torch_gradient(sizes, "float32", block, X, y, w)
                        with torch_threads(threads):
                            torch_run()
                        contenders["pytorch"] = lambda: _with_torch_threads(threads, torch_run,
                                                                            calls)
                    ms = {name: [] for name in ["caffe", *contenders]}
                    sigmoid = []
                    for _ in range(args.repeats):
                        total, layers = caffe_time(binary, nets[topo, block], calls, threads,
                                                   coretype)
                        ms["caffe"].append(total)
                        sigmoid.append(sum(f + b for name, (f, b) in layers.items()
                                           if name.startswith("sigmoid")) / total)
                        for name, run in contenders.items():
                            ann_core.set_blas_threads(threads)
                            ms[name].append(run())
                    med = {name: statistics.median(v) for name, v in ms.items()}
                    floor = 1000 * actual * block / (peak * 1e9)
                    torch_ms = med.get("pytorch", float("nan"))
                    print(f"{topo:4} {threads:>3} {block:>5} {med['caffe']:9.3f} "
                          f"{100 * statistics.median(sigmoid):6.1f} {med['sparkann']:11.3f} "
                          f"{torch_ms:10.3f} {med['caffe'] / med['sparkann']:10.2f} "
                          f"{torch_ms / med['sparkann']:10.2f} {floor:8.3f} "
                          f"{med['sparkann'] / floor:10.2f}", flush=True)
    print(f"load average at the end: {_load()}")


def dropout_overhead(args, X_all, y_all):
    """Seconds per full gradient of B, block 1024, float32, without and with dropout (0.2
    input, 0.5 hidden), alternating runs; each dropout run draws new masks."""
    sizes, block, dtype = TOPOLOGIES["B"], 1024, "float32"
    X = np.ascontiguousarray(X_all[:args.examples], dtype=dtype)
    y = y_all[:args.examples]
    w = spark_init(sizes, dtype)
    print(f"{'thr':>3} {'block':>5} {'plain s':>8} {'dropout s':>9} {'overhead':>8} {'runs':>4}")
    for threads in map(int, args.threads.split(",")):
        ann_core.set_blas_threads(threads)
        nets = {rates: ann_core.Network(sizes[0], spec(sizes, rates), dtype=dtype,
                                        block_size=block) for rates in (None, (0.2, 0.5))}
        grad = np.zeros_like(w)
        times = {rates: [] for rates in nets}
        for run in range(args.repeats + 1):   # the first round warms up
            for rates, net in nets.items():
                start = time.perf_counter()
                net.loss_grad(w, X, y, grad, zero=True, key=(0, run, 0) if rates else None)
                if run:
                    times[rates].append(time.perf_counter() - start)
        plain, dropped = (statistics.median(times[r]) for r in nets)
        print(f"{threads:>3} {block:>5} {plain:8.3f} {dropped:9.3f} "
              f"{100 * (dropped / plain - 1):7.1f}% {args.repeats:>4}   load {_load()}",
              flush=True)


def _load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _with_torch_threads(threads, run, calls):
    with torch_threads(threads):
        return per_batch_ms(run, calls)


def bf16_speedups(table):
    """Each bfloat16 row against the fastest float32 sparkann row (ratio of medians: float32
    runs in other rounds) and PyTorch's autocast (median of the ratios of the same rounds)."""
    rows = [(key, times) for key, times in table.items()
            if any(d == "bfloat16" and c.startswith("sparkann") for d, c in times)]
    if not rows:
        return
    print(f"\n{'topo':4} {'thr':>3} {'block':>5} {'bf16 s':>8} {'fp32 s':>8} {'x fp32':>7} "
          f"{'torch bf16 s':>12} {'x torch bf16':>12}")
    nan = [float("nan")]
    for (topo, threads, block), times in rows:
        ours = min((t for (d, c), t in times.items()
                    if d == "bfloat16" and c.startswith("sparkann")), key=statistics.median)
        fp32 = [statistics.median(t) for (d, c), t in times.items()
                if d == "float32" and c.startswith("sparkann")]
        torch_bf16 = times.get(("bfloat16", "pytorch"), nan * len(ours))
        ours_s = statistics.median(ours)
        fp32_s = min(fp32) if fp32 else float("nan")
        print(f"{topo:4} {threads:>3} {block:>5} {ours_s:8.3f} {fp32_s:8.3f} "
              f"{fp32_s / ours_s:7.2f} {statistics.median(torch_bf16):12.3f} "
              f"{round_ratio(torch_bf16, ours):12.2f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topologies", default="A,B,C")
    parser.add_argument("--blocks", default="128,1024")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--backends", default="openblas,mkl")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=60000,
                        help="training images per gradient (C uses a quarter of them and "
                             "scales the seconds to 60,000: throughput does not depend on it)")
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy reference")
    parser.add_argument("--denormal-iterations", type=int, default=100)
    parser.add_argument("--caffe", metavar="PATH",
                        help="a BVLC Caffe binary or build directory: time one batch against "
                             "`caffe time` instead of the full-batch gradients")
    parser.add_argument("--dropout", action="store_true",
                        help="B at block 1024, float32, with and without dropout")
    parser.add_argument("--quick", action="store_true",
                        help="A and B, float32, 2 threads, blocks 128 and 1024")
    args = parser.parse_args(argv)
    if args.quick:
        args.topologies, args.dtypes, args.threads = "A,B", "float32", "2"
    backends = [b for b in args.backends.split(",") if b != "mkl" or ann_core.find_mkl()]
    X_all, y_all = load_fashion_mnist(kind="train", dtype="float64")
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("PyTorch is not installed: its columns are empty")
    if args.caffe:
        caffe_comparison(args, backends[0], X_all, y_all, have_torch)
        return 0
    if args.dropout:
        ann_core.set_backend(backends[0])
        dropout_overhead(args, X_all, y_all)
        return 0

    header = (f"{'topo':4} {'dtype':7} {'thr':>3} {'block':>5} {'contender':17} {'s/60k':>7} "
              f"{'ex/s':>8} {'GF/s nom':>8} {'GF/s act':>8} {'x torch':>7} {'% gemm':>6} "
              f"{'ms/batch':>8}")
    print(header)
    print("-" * len(header))
    table = {}   # (topo, threads, block) -> {(dtype, contender): seconds}
    for threads in map(int, args.threads.split(",")):
        for dtype in args.dtypes.split(","):
            bf16 = dtype == "bfloat16"
            array_dtype = "float32" if bf16 else dtype   # bfloat16's arrays are float32
            rates = {}   # the BLAS GEMM rate behind "% gemm"; bfloat16 GEMMs are oneDNN's
            for name in [] if bf16 else backends:
                ann_core.set_backend(name)
                ann_core.set_blas_threads(threads)
                rates[name] = gemm_rate(array_dtype, args.repeats)
            for topo in args.topologies.split(","):
                sizes = TOPOLOGIES[topo]
                n = args.examples // 4 if topo == "C" else args.examples
                X = np.ascontiguousarray(X_all[:n], dtype=array_dtype)
                y = y_all[:n]
                w = spark_init(sizes, array_dtype)
                probe = ann_core.Network(sizes[0], spec(sizes), dtype=dtype)
                nominal, actual = probe.flops_per_example()
                for block in map(int, args.blocks.split(",")):
                    if threads == 1 and block != 1024 and topo != "A":
                        continue  # one thread: block 1024 only (and A at 128): a short run
                    contenders = {}   # label -> (untimed setup, one gradient)
                    if have_torch:
                        contenders["pytorch"] = (
                            lambda: torch_threads_set(threads),
                            torch_gradient(sizes, dtype, block, X, y, w))
                    # bfloat16 GEMMs are oneDNN's whichever BLAS is chosen: one row
                    for name in backends[:1] if bf16 else backends:
                        label = "sparkann-onednn" if probe.precision == "bfloat16" else \
                            f"sparkann-{name}"
                        contenders[label] = (lambda name=name: use_backend(name, threads),
                                             sparkann_gradient(sizes, dtype, block, X, y, w))
                    if not args.no_numpy and threads == 2 and not bf16:
                        contenders["numpy"] = (lambda: use_backend("openblas", threads),
                                               numpy_gradient(sizes, dtype, block, X, y, w))
                    rounds = interleaved_times(contenders, args.repeats)
                    results = {c: statistics.median(t) for c, t in rounds.items()}
                    table.setdefault((topo, threads, block), {}).update(
                        {(dtype, c): t for c, t in rounds.items()})
                    for contender, seconds in results.items():
                        scale = 60000 / n
                        ex_s = n / seconds
                        backend = "mkl" if contender.endswith("mkl") else "openblas"
                        vs_torch = (round_ratio(rounds["pytorch"], rounds[contender])
                                    if "pytorch" in rounds else float("nan"))
                        pct = (100 * actual * ex_s / 1e9 / rates[backend]
                               if contender.startswith("sparkann") and not bf16
                               else float("nan"))
                        ms = 1000 * seconds / -(-n // block)
                        print(f"{topo:4} {dtype:7} {threads:>3} {block:>5} {contender:17} "
                              f"{seconds * scale:7.3f} {ex_s:8.0f} {nominal * ex_s / 1e9:8.1f} "
                              f"{actual * ex_s / 1e9:8.1f} {vs_torch:7.2f} {pct:6.1f} {ms:8.2f}",
                              flush=True)
            if rates:
                print(f"GEMM rate ({dtype}, {threads} threads, 2048^3): " +
                      ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()), flush=True)

    bf16_speedups(table)
    if args.denormal_iterations:
        sizes = TOPOLOGIES["A"]
        X = np.ascontiguousarray(X_all, dtype=np.float32)
        y = y_all
        ann_core.set_backend(backends[0])
        ann_core.set_blas_threads(2)
        w_sat, nit = saturated_weights(sizes, X, y, args.denormal_iterations)
        w0 = spark_init(sizes, np.float32)
        before = median_time(sparkann_gradient(sizes, "float32", 1024, X, y, w0), args.repeats)
        after = median_time(sparkann_gradient(sizes, "float32", 1024, X, y, w_sat), args.repeats)
        print(f"denormals: A float32 block 1024, gradient at initial weights {before:.3f} s, "
              f"after {nit} L-BFGS iterations {after:.3f} s: ratio {after / before:.2f} "
              "(target <= 1.10)")
        if have_torch:
            with torch_threads(2):
                t0 = median_time(torch_gradient(sizes, "float32", 1024, X, y, w0), args.repeats)
                t1 = median_time(torch_gradient(sizes, "float32", 1024, X, y, w_sat), args.repeats)
            print(f"denormals: PyTorch on the same weights {t0:.3f} s -> {t1:.3f} s: ratio "
                  f"{t1 / t0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
