"""The BLAS backend table and the thread-count helper."""
import os

import numpy as np
import pytest

import ann_core
from ann_core import Network


# Every test leaves the backend and thread count as it found them.
pytestmark = pytest.mark.usefixtures("restore_blas")


def gradient(dtype="float64"):
    """A gradient computed through the current backend (enough rows to exercise GEMM)."""
    rng = np.random.default_rng(0)
    net = Network(30, [("dense", 40), ("activation", "tanh"), ("dense", 5),
                       ("loss", "softmax_cross_entropy")], dtype=dtype, block_size=100)
    w = rng.normal(scale=0.3, size=net.n_weights).astype(dtype)
    X = rng.normal(size=(250, 30)).astype(dtype)
    grad = np.zeros(net.n_weights, dtype)
    net.loss_grad(w, X, rng.integers(0, 5, 250).astype(np.int64), grad)
    return grad


def test_openblas_backend_reports_itself():
    assert ann_core.set_backend("openblas") == "openblas"
    state = ann_core.backend()
    assert state["name"] == "openblas" and set(state) == {"name", "library"}
    threads = ann_core.blas_threads()
    assert threads["backend"] == "openblas"
    assert "openblas" in os.path.basename(threads["library"]).lower()
    assert os.path.exists(threads["library"])
    assert threads["threads"] >= 1


def test_mkl_backend_reports_its_library():
    path = ann_core.find_mkl()
    if path is None:
        pytest.skip("MKL (pip install mkl) is not installed")
    assert os.path.exists(path) and "mkl_rt" in os.path.basename(path)
    assert ann_core.set_backend("mkl") == "mkl"
    assert ann_core.backend() == {"name": "mkl", "library": path}
    threads = ann_core.blas_threads()
    assert threads["backend"] == "mkl" and threads["library"] == path
    ann_core.set_backend("openblas")
    assert ann_core.backend()["name"] == "openblas"


def test_auto_takes_mkl_when_installed():
    expected = "mkl" if ann_core.find_mkl() else "openblas"
    assert ann_core.set_backend("auto") == expected
    assert ann_core.backend()["name"] == expected


def test_switching_backends_keeps_results():
    ann_core.set_backend("openblas")
    reference = gradient()
    if ann_core.find_mkl() is not None:
        ann_core.set_backend("mkl")
        np.testing.assert_allclose(gradient(), reference, rtol=1e-10, atol=1e-12)
    ann_core.set_backend("openblas")
    np.testing.assert_array_equal(gradient(), reference)


@pytest.mark.parametrize("name", ["cublas", "", "OpenBLAS", None, 3])
def test_unknown_backend_is_a_value_error(name):
    before = ann_core.backend()
    with pytest.raises(ValueError, match="BLAS backend must be 'auto', 'openblas' or 'mkl', "
                                         "received"):
        ann_core.set_backend(name)
    assert ann_core.backend() == before


def test_mkl_asked_for_but_missing(monkeypatch, tmp_path):
    """An explicit library path that does not exist means no MKL: a clear error."""
    monkeypatch.setenv("SPARKANN_MKL_LIBRARY", str(tmp_path / "libmkl_rt.so.missing"))
    assert ann_core.find_mkl() is None
    before = ann_core.backend()
    with pytest.raises(ValueError, match="'mkl' asked for, but no libmkl_rt was found"):
        ann_core.set_backend("mkl")
    assert ann_core.backend() == before


@pytest.mark.parametrize("backend", ["openblas", "mkl"])
def test_thread_count_round_trip(backend):
    if backend == "mkl" and ann_core.find_mkl() is None:
        pytest.skip("MKL is not installed")
    ann_core.set_backend(backend)
    ann_core.set_blas_threads(2)
    assert ann_core.blas_threads()["threads"] == 2
    assert ann_core.set_blas_threads(1) == 2  # returns the previous count
    assert ann_core.blas_threads() == {"backend": backend,
                                       "library": ann_core.blas_threads()["library"],
                                       "threads": 1}
    single = gradient("float32")
    assert ann_core.set_blas_threads(2) == 1
    assert ann_core.blas_threads()["threads"] == 2
    np.testing.assert_allclose(gradient("float32"), single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [0, -1])
def test_thread_count_must_be_positive(n):
    before = ann_core.blas_threads()
    with pytest.raises(ValueError, match=f"number of BLAS threads must be >= 1, received {n}"):
        ann_core.set_blas_threads(n)
    assert ann_core.blas_threads() == before


def test_mkl_holds_openblas_to_one_thread():
    """Two busy pools on the same cores slow GEMM tenfold: with MKL, OpenBLAS gets 1 thread."""
    if ann_core.find_mkl() is None:
        pytest.skip("MKL is not installed")
    from threadpoolctl import threadpool_info

    ann_core.set_backend("mkl")
    ann_core.set_blas_threads(2)
    pools = threadpool_info()
    assert any(p["internal_api"] == "mkl" and p["num_threads"] == 2 for p in pools)
    assert all(p["num_threads"] == 1 for p in pools if p["internal_api"] == "openblas")
