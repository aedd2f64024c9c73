"""Rows split among engine threads: same numbers as one thread, no hang, no interference."""
import multiprocessing
import threading

import numpy as np
import pytest

import ann_core
from ann_core import Network

LAYERS = [("dense", 23), ("activation", "tanh"), ("dense", 17), ("activation", "relu"),
          ("dense", 5)]


# Every test leaves the backend and thread count as it found them.
pytestmark = pytest.mark.usefixtures("restore_blas")


def problem(loss, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    net = Network(11, LAYERS + [("loss", loss)], dtype=dtype, block_size=37)
    w = rng.normal(scale=0.4, size=net.n_weights).astype(dtype)
    X = rng.normal(size=(n, 11)).astype(dtype)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, 5, n).astype(np.int64)
    else:
        y = rng.random((n, 5)).astype(dtype)
    return net, w, X, y


def compute(net, w, X, y, threads):
    ann_core.set_blas_threads(threads)
    grad = np.full(net.n_weights, 0.5, net.dtype)   # loss_grad adds into what is there
    loss, rows = net.loss_grad(w, X, y, grad)
    assert net.last_threads == threads
    out = net.forward(w, X)
    assert net.last_threads == threads
    return loss, rows, grad, out


@pytest.mark.parametrize("backend", ["openblas", "mkl"])
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "squared_error"])
@pytest.mark.parametrize("n", [64, 65, 1001])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_split_rows_equal_one_thread(backend, loss, n, dtype):
    if backend == "mkl" and ann_core.find_mkl() is None:
        pytest.skip("MKL is not installed")
    ann_core.set_backend(backend)
    net, w, X, y = problem(loss, n, dtype)
    one = compute(net, w, X, y, 1)
    split = compute(net, w, X, y, 2)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    assert split[1] == one[1] == n
    np.testing.assert_allclose(split[0], one[0], rtol=rtol)
    np.testing.assert_allclose(split[2], one[2], rtol=rtol, atol=rtol * np.abs(one[2]).max())
    np.testing.assert_allclose(split[3], one[3], rtol=rtol, atol=1e-7)
    # Repeatable: the same split gives the same bits.
    again = compute(net, w, X, y, 2)
    assert again[0] == split[0] and np.array_equal(again[2], split[2])



@pytest.mark.parametrize("width, dtype, rows, threads", [
    (23, "float32", 64, 2),         # small weights: 32 rows a thread are worth a thread
    (23, "float32", 63, 1),
    (1200, "float32", 128, 1),      # > 2 MiB of weights: BLAS splits the weights instead
    (1200, "float32", 256, 2),
    (600, "float32", 128, 2),       # 1.4 MiB
    (600, "float64", 128, 1),       # the same network in float64: 2.9 MiB
])
def test_rows_split_only_when_each_thread_pays_for_its_weights(width, dtype, rows, threads):
    ann_core.set_blas_threads(2)
    net = Network(width, [("dense", width), ("activation", "relu"), ("dense", 3),
                          ("loss", "softmax_cross_entropy")], dtype=dtype)
    w = np.zeros(net.n_weights, dtype)
    X = np.ones((rows, width), dtype)
    net.forward(w, X)
    assert net.last_threads == threads

def test_two_callers_at_once_get_their_own_answers():
    # The engine threads serve one call at a time; the other caller computes on its own.
    ann_core.set_blas_threads(2)
    jobs = [problem("softmax_cross_entropy", 3000, "float64", seed=s) for s in (1, 2)]
    expected = [compute(*job, threads=1)[:3] for job in jobs]
    ann_core.set_blas_threads(2)
    results = [[] for _ in jobs]
    barrier = threading.Barrier(len(jobs))

    def run(i):
        net, w, X, y = jobs[i]
        barrier.wait()
        for _ in range(20):
            grad = np.full(net.n_weights, 0.5)
            results[i].append((net.loss_grad(w, X, y, grad)[0], grad))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    for (loss, _, grad), got in zip(expected, results):
        assert len(got) == 20
        for got_loss, got_grad in got:
            np.testing.assert_allclose(got_loss, loss, rtol=1e-12)
            np.testing.assert_allclose(got_grad, grad, rtol=1e-12, atol=1e-12)


def _child_loss(queue):
    net, w, X, y = problem("softmax_cross_entropy", 500, "float64")
    queue.put(net.loss_grad(w, X, y, np.zeros(net.n_weights))[0])


def test_a_forked_process_computes_with_its_own_threads():
    ann_core.set_blas_threads(2)
    net, w, X, y = problem("softmax_cross_entropy", 500, "float64")
    expected = net.loss_grad(w, X, y, np.zeros(net.n_weights))[0]   # threads now exist
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_loss, args=(queue,))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked process hung")
    assert child.exitcode == 0
    np.testing.assert_allclose(queue.get(timeout=10), expected, rtol=1e-12)


def test_thread_counts_above_the_machine_are_clamped():
    previous = ann_core.set_blas_threads(1)
    assert ann_core.set_blas_threads(100000) == 1
    assert ann_core.blas_threads()["threads"] == ann_core.threads.machine_threads()
    net, w, X, y = problem("softmax_cross_entropy", 50, "float32")
    assert np.isfinite(net.forward(w, X)).all()
    ann_core.set_blas_threads(previous)


def run_python(code, *args, timeout=300):
    """Run code in a fresh interpreter (a crash must fail the test, not end the run)."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-P", "-c", code, *args], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    return done.stdout


@pytest.mark.parametrize("backend", ["openblas", "mkl"])
def test_estimator_with_a_huge_n_threads_fits_and_predicts(backend):
    if backend == "mkl" and ann_core.find_mkl() is None:
        pytest.skip("MKL is not installed")
    out = run_python(
        "import sys, numpy as np, ann_core\n"
        "ann_core.set_backend(sys.argv[1])\n"
        "from sparkann import MLPClassifier\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.normal(size=(50, 50)).astype(np.float32)\n"
        "y = (X[:, 0] > 0).astype(int)\n"
        "clf = MLPClassifier(hidden_layer_sizes=(300,), solver='lbfgs', max_iter=3,\n"
        "                    n_threads=100000).fit(X, y)\n"
        "print(clf.score(X, y))\n", backend)
    assert 0.0 <= float(out.split()[-1]) <= 1.0


@pytest.mark.skipif(not __import__("os").path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs Debian's dataset-fashion-mnist")
def test_cli_train_with_a_huge_thread_count(tmp_path):
    out = run_python("import sys; from sparkann import cli; sys.exit(cli.main(sys.argv[1:]))",
                     "train", "--limit", "300", "--test-limit", "50", "--hidden", "16",
                     "--epochs", "1", "--threads", "100000", "--no-progress",
                     "--out", str(tmp_path / "m"))
    assert "test accuracy" in out
