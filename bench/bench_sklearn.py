"""sparkann.MLPClassifier against scikit-learn's MLPClassifier: same parameters, same data.

Both train on the Fashion-MNIST training images (float32 in [0, 1], so both train in
float32) and are scored on the test images. Rows (scikit-learn's parameter names, passed
unchanged to both; ``random_state=0``, ``tol=0`` so that both run every epoch/iteration):

    adam-256-128    (256, 128) relu, adam, batch 200, 20 epochs
    lbfgs-256-128   (256, 128) relu, lbfgs, 200 iterations
    adam-1024-1024  (1024, 1024) relu, adam, batch 200, 5 epochs

Each fit runs in a fresh Python process of its own (scikit-learn's uses numpy's BLAS, ours the
engine's: two BLAS thread pools in one process slow each other down), alternating between the
two; the table gives the median wall time of the fits (``fit`` only, data already loaded), the
test accuracy, and the ratio scikit-learn time / ours.

    python bench/bench_sklearn.py                       # all rows, 3 runs each (long)
    python bench/bench_sklearn.py --rows adam-256-128 --repeats 5 --threads 1
    python bench/bench_sklearn.py --rows adam-256-128 --epochs 2 --profile   # where time goes
"""
import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
import warnings


ROWS = {
    "adam-256-128": dict(hidden_layer_sizes=(256, 128), solver="adam", batch_size=200,
                         max_iter=20),
    "lbfgs-256-128": dict(hidden_layer_sizes=(256, 128), solver="lbfgs", max_iter=200,
                          max_fun=10**6),
    "adam-1024-1024": dict(hidden_layer_sizes=(1024, 1024), solver="adam", batch_size=200,
                           max_iter=5),
}
COMMON = dict(activation="relu", random_state=0, tol=0.0, n_iter_no_change=10**9)


def load(limit):
    from sparkann.datasets import load_fashion_mnist

    X, y = load_fashion_mnist(kind="train")
    X_test, y_test = load_fashion_mnist(kind="test")
    return (X[:limit], y[:limit]) if limit else (X, y), (X_test, y_test)


def estimator(which):
    if which == "scikit-learn":
        from sklearn.neural_network import MLPClassifier
    else:
        from sparkann import MLPClassifier
    return MLPClassifier


def fit_once(which, params, limit):
    """One fit in this process: prints {"seconds", "accuracy", "blas"} as JSON."""
    import threadpoolctl

    cls = estimator(which)
    (X, y), (X_test, y_test) = load(limit)
    seconds, accuracy = train(cls, params, X, y, X_test, y_test)
    blas = sorted({f"{p['internal_api']}x{p['num_threads']}"
                   for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"})
    print(json.dumps({"seconds": seconds, "accuracy": accuracy, "blas": blas}))


def fit_in_new_process(which, params, limit, threads):
    env = dict(os.environ)
    if threads:  # every BLAS either estimator may load
        env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "MKL_NUM_THREADS")})
    out = subprocess.run([sys.executable, __file__, "--one", which, json.dumps(params),
                          str(limit or 0)], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def train(cls, params, X, y, X_test, y_test):
    """(seconds, test accuracy) of one fit."""
    clf = cls(**COMMON, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: every row runs to max_iter
        start = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - start
    return seconds, clf.score(X_test, y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="override max_iter of every row")
    parser.add_argument("--limit", type=int, help="train on the first N rows only")
    parser.add_argument("--threads", type=int,
                        help="BLAS threads of both (default: each library's own choice)")
    parser.add_argument("--profile", action="store_true",
                        help="profile one fit of ours per row instead of timing")
    parser.add_argument("--one", nargs=3, metavar=("WHICH", "PARAMS", "LIMIT"),
                        help=argparse.SUPPRESS)  # a child process: one fit
    args = parser.parse_args(argv)
    if args.one:
        return fit_once(args.one[0], json.loads(args.one[1]), int(args.one[2]))

    print(f"training rows: {args.limit or 60000} of Fashion-MNIST's 60,000 (float32); test "
          "rows: 10,000")
    results = []
    for name in args.rows:
        params = dict(ROWS[name])
        if args.epochs:
            params["max_iter"] = args.epochs
        if args.profile:
            (X, y), (X_test, y_test) = load(args.limit)
            profile = cProfile.Profile()
            profile.runcall(train, estimator("sparkann"), params, X, y, X_test, y_test)
            print(f"\n{name}: ours, profile by own time")
            pstats.Stats(profile).sort_stats("tottime").print_stats(12)
            continue
        times = {"scikit-learn": [], "sparkann": []}
        accuracy = {}
        for run in range(args.repeats):
            for label in ("scikit-learn", "sparkann"):
                one = fit_in_new_process(label, params, args.limit, args.threads)
                times[label].append(one["seconds"])
                accuracy[label] = one["accuracy"]
                print(f"{name} run {run + 1}: {label:12s} {one['seconds']:7.2f} s  accuracy "
                      f"{one['accuracy']:.4f}  BLAS {', '.join(one['blas'])}", flush=True)
        theirs, ours = (statistics.median(times[k]) for k in ("scikit-learn", "sparkann"))
        results.append((name, theirs, accuracy["scikit-learn"], ours, accuracy["sparkann"]))
    if results:
        print(f"\nmedians of {args.repeats} runs")
        print("| row | scikit-learn s | accuracy | sparkann s | accuracy | ratio |")
        print("|---|---|---|---|---|---|")
        for name, theirs, acc_t, ours, acc_o in results:
            print(f"| {name} | {theirs:.2f} | {acc_t:.4f} | {ours:.2f} | {acc_o:.4f} | "
                  f"{theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
