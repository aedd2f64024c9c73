"""sparkann.MLPClassifier against scikit-learn's MLPClassifier: same parameters, same data.

Both train on the Fashion-MNIST training images (float32 in [0, 1], so both train in
float32) and are scored on the test images. Rows (scikit-learn's parameter names, passed
unchanged to both; ``random_state=0``, ``tol=0`` so that both run every epoch/iteration):

    adam-256-128    (256, 128) relu, adam, batch 200, 20 epochs
    lbfgs-256-128   (256, 128) relu, lbfgs, 200 iterations
    adam-1024-1024  (1024, 1024) relu, adam, batch 200, 5 epochs

Each run trains scikit-learn's estimator and ours one after the other in this process with the
same BLAS threads; the table gives the median wall time of the runs, the test accuracy, and
the ratio scikit-learn time / ours.

    python bench/bench_sklearn.py                       # all rows, 3 runs each (long)
    python bench/bench_sklearn.py --rows adam-256-128 --repeats 5
    python bench/bench_sklearn.py --rows adam-256-128 --epochs 2 --profile   # where time goes
"""
import argparse
import cProfile
import pstats
import statistics
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
    parser.add_argument("--profile", action="store_true",
                        help="profile one fit of ours per row instead of timing")
    args = parser.parse_args(argv)

    import threadpoolctl
    from sklearn.neural_network import MLPClassifier as Theirs

    from sparkann import MLPClassifier as Ours
    from sparkann.datasets import load_fashion_mnist

    X, y = load_fashion_mnist(kind="train")
    X_test, y_test = load_fashion_mnist(kind="test")
    if args.limit:
        X, y = X[:args.limit], y[:args.limit]
    print(f"data: {X.shape} {X.dtype}; BLAS: {threadpoolctl.threadpool_info()[0]['internal_api']}"
          f" with {threadpoolctl.threadpool_info()[0]['num_threads']} threads")
    results = []
    for name in args.rows:
        params = dict(ROWS[name])
        if args.epochs:
            params["max_iter"] = args.epochs
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(train, Ours, params, X, y, X_test, y_test)
            print(f"\n{name}: ours, profile by own time")
            pstats.Stats(profile).sort_stats("tottime").print_stats(12)
            continue
        times = {"scikit-learn": [], "sparkann": []}
        accuracy = {}
        for run in range(args.repeats):
            for label, cls in (("scikit-learn", Theirs), ("sparkann", Ours)):
                seconds, acc = train(cls, params, X, y, X_test, y_test)
                times[label].append(seconds)
                accuracy[label] = acc
                print(f"{name} run {run + 1}: {label:12s} {seconds:7.2f} s  accuracy {acc:.4f}",
                      flush=True)
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
