"""One Network, or one fitted estimator, called from several threads at once gives exactly
the results of the same calls made one after another."""
import threading

import numpy as np
import pytest

import ann_core
from ann_core import Network
from sparkann import MLPClassifier

pytestmark = pytest.mark.usefixtures("restore_blas")

LAYERS = [("dense", 19), ("activation", "tanh"), ("dense", 13), ("activation", "relu"),
          ("dense", 4)]


def run_threads(target, n_threads, timeout=300):
    """Start n_threads threads at once on target(i); re-raise the first error of any."""
    barrier = threading.Barrier(n_threads)
    errors = []

    def body(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def classifier():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 9)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0,
                         n_threads=1).fit(X, y)


def test_estimator_predict_proba_from_two_threads(classifier):
    """A web server's worker threads share one fitted model: a big and a small batch."""
    ann_core.set_blas_threads(2)
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(20000, 9)).astype(np.float32),
               rng.normal(size=(65, 9)).astype(np.float32)]
    calls = [40, 4000]
    expected = [classifier.predict_proba(X) for X in batches]
    wrong = [0, 0]

    def caller(i):
        for _ in range(calls[i]):
            if not np.array_equal(classifier.predict_proba(batches[i]), expected[i]):
                wrong[i] += 1

    run_threads(caller, 2)
    assert wrong == [0, 0]


def stress_problem(dtype, seed):
    rng = np.random.default_rng(seed)
    net = Network(7, LAYERS + [("loss", "softmax_cross_entropy")], dtype=dtype, block_size=29)
    w = rng.normal(scale=0.5, size=net.n_weights).astype(dtype)
    sizes = [1, 5, 31, 63, 64, 65, 200, 1001]   # below and above the row split
    data = []
    for n in sizes:
        X = rng.normal(size=(n, 7)).astype(dtype)
        y = rng.integers(0, 4, n).astype(np.int64)
        data.append((X, y))
    return net, w, data


def results(net, w, X, y):
    out = net.forward(w, X)
    raw = net.forward(w, X, raw=True)
    grad = np.full(net.n_weights, 0.25, net.dtype)
    loss, rows = net.loss_grad(w, X, y, grad)
    return out, raw, grad, loss, rows


def same(a, b):
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
               for x, y in zip(a, b))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_network_eight_threads_mixed_batches_bitwise(dtype):
    """8 threads, batch sizes that run on one thread and that split rows, 2 BLAS threads:
    every forward, raw forward and loss_grad equals the sequential call bit for bit."""
    ann_core.set_blas_threads(2)
    net, w, data = stress_problem(dtype, seed=3)
    expected = [results(net, w, X, y) for X, y in data]
    mismatches = []

    def caller(i):
        for r in range(12):
            j = (i + 3 * r) % len(data)
            if not same(results(net, w, *data[j]), expected[j]):
                mismatches.append((i, r, len(data[j][1])))

    run_threads(caller, 8)
    assert mismatches == []


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_estimator_eight_threads_predict_and_score_bitwise(dtype):
    ann_core.set_blas_threads(2)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=3, random_state=1, dtype=dtype,
                        block_size=50).fit(X, y)
    batches = [rng.normal(size=(n, 6)) for n in (2, 40, 64, 130, 777)]
    labels = [(b[:, 0] > 0).astype(int) for b in batches]
    expected = [(clf.predict_proba(b), clf.predict(b), clf.score(b, t))
                for b, t in zip(batches, labels)]
    mismatches = []

    def caller(i):
        for r in range(10):
            j = (i + r) % len(batches)
            got = (clf.predict_proba(batches[j]), clf.predict(batches[j]),
                   clf.score(batches[j], labels[j]))
            if not same(got, expected[j]):
                mismatches.append((i, r, j))

    run_threads(caller, 8)
    assert mismatches == []
