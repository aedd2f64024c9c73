"""Reliability of the engine and the single-machine estimator: memory bounds, a memory soak,
divergence, a heavier fuzz of the native entry points, and the AddressSanitizer run."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ann_core import Network
from sparkann.estimator import MLPClassifier, MLPRegressor
from sparkann.optim import DivergenceError

from rss import rss_bytes

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small matrices: threads only add contention (and timing noise on a shared machine)."""
    import ann_core
    previous = ann_core.set_blas_threads(1)
    yield
    ann_core.set_blas_threads(previous)


# ----------------------------------------------------------------------------- memory bounds

@pytest.mark.parametrize("block_size, width", [(10**7, 4096), (2**31 - 1, 4096), (1024, 2**28)])
def test_workspace_larger_than_memory_is_refused_before_allocation(block_size, width):
    before = rss_bytes()
    with pytest.raises(MemoryError, match=r"block_size=\d+ needs [\d.]+ MiB.*smaller block_size"):
        Network(784, [("dense", width), ("activation", "relu"), ("dense", 10),
                      ("loss", "softmax_cross_entropy")], dtype="float64", block_size=block_size)
    assert rss_bytes() - before < 64 * MiB  # refused, not attempted


def test_workspace_size_is_known_and_bounded_by_the_block():
    stages = [("dense", 300), ("activation", "relu"), ("dense", 10),
              ("loss", "softmax_cross_entropy")]
    small = Network(784, stages, dtype="float32", block_size=128)
    big = Network(784, stages, dtype="float32", block_size=1024)
    # Activations (300 + 10), two delta buffers of the widest stage and the loss output, per row.
    per_row = 4 * (300 + 10 + 2 * 300 + 10)
    assert per_row * 128 <= small.workspace_bytes <= per_row * 128 + 4096
    assert per_row * 1024 <= big.workspace_bytes <= per_row * 1024 + 4096
    # A batch larger than the block is computed block by block in the same workspace.
    rng = np.random.default_rng(0)
    w = rng.normal(scale=0.05, size=small.n_weights).astype(np.float32)
    X = rng.normal(size=(5000, 784)).astype(np.float32)
    y, grad = rng.integers(0, 10, 5000), np.zeros_like(w)
    small.loss_grad(w, X[:128], y[:128], grad)  # BLAS allocates its buffers once
    before = rss_bytes()
    small.loss_grad(w, X, y, grad)
    assert rss_bytes() - before < 4 * MiB  # 5000 rows would need 18 MiB of activations


def test_loss_grad_soak_has_no_memory_growth():
    """10,000 loss_grad calls: resident memory before and after differ by noise only."""
    net = Network(64, [("dense", 128), ("activation", "tanh"), ("dense", 32),
                       ("activation", "relu"), ("dense", 10),
                       ("loss", "softmax_cross_entropy")], dtype="float32", block_size=64)
    rng = np.random.default_rng(1)
    w = rng.normal(scale=0.1, size=net.n_weights).astype(np.float32)
    X = rng.normal(size=(200, 64)).astype(np.float32)
    y = rng.integers(0, 10, 200)
    grad = np.zeros_like(w)
    out = np.empty((200, 10), np.float32)
    for _ in range(200):  # warm up allocator pools and BLAS buffers
        net.loss_grad(w, X, y, grad, zero=True)
        net.forward(w, X, out=out)
    before = rss_bytes()
    for _ in range(10_000):
        net.loss_grad(w, X, y, grad, zero=True)
    for _ in range(1000):
        net.forward(w, X, out=out)
    after = rss_bytes()
    print(f"\nloss_grad soak: RSS before {before / MiB:.1f} MiB, after 10,000 calls "
          f"{after / MiB:.1f} MiB")
    # A leak of 200 bytes per call would show as 2 MiB.
    assert after - before < 2 * MiB


# -------------------------------------------------------------------------------- divergence

def _blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    return X, (X[:, 0] - X[:, 1] > 0).astype(int)


@pytest.mark.parametrize("solver", ["sgd", "gd", "adam"])
def test_huge_learning_rate_stops_with_last_finite_weights(solver):
    X, y = _blobs()
    X = X * 100.0  # huge activations make the step blow up fast
    clf = MLPRegressor(hidden_layer_sizes=(16,), activation="relu", solver=solver,
                       learning_rate_init=1e30, max_iter=50, random_state=0, dtype="float32")
    with pytest.raises(DivergenceError, match="diverged") as info:
        clf.fit(X, y.astype(float) * 1e6)
    assert info.value.weights is not None and np.isfinite(info.value.weights).all()
    assert np.isfinite(clf.weights_).all()  # the estimator never holds a NaN model
    np.testing.assert_array_equal(clf.weights_, info.value.weights)
    clf.predict(X[:5])  # the kept model still predicts


def test_lbfgs_divergence_is_reported_not_silent():
    """L-BFGS on a loss that overflows: a DivergenceError or a finite model, never NaN."""
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=30, random_state=0)
    try:
        clf.fit(X * 1e30, y)
    except (DivergenceError, ValueError) as error:
        assert str(error)
        if isinstance(error, DivergenceError):
            assert np.isfinite(error.weights).all()
    else:
        assert np.isfinite(clf.weights_).all()


# ------------------------------------------------------------------------------ heavy fuzzing

def _views(draw, base):
    """A view of ``base`` with another layout: reversed, strided, transposed or offset."""
    kind = draw(st.sampled_from(["c"] * 4 + ["reversed", "strided", "fortran", "offset",
                                             "readonly", "zero_stride"]))
    if kind == "reversed" and base.ndim:
        return kind, base[::-1]
    if kind == "strided" and base.ndim:
        return kind, np.repeat(base, 3, axis=0)[1::3]
    if kind == "fortran" and base.ndim == 2:
        return kind, np.asfortranarray(base)
    if kind == "offset":  # a view that starts one element into a buffer: misaligned start
        flat = np.empty(base.size + 1, base.dtype)
        view = flat[1:].reshape(base.shape)
        view[...] = base
        return kind, view
    if kind == "readonly":
        base = base.copy()
        base.flags.writeable = False
        return kind, base
    if kind == "zero_stride" and base.ndim and base.shape[0]:
        return kind, np.broadcast_to(base[:1], base.shape)
    return "c", base


DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.complex64,
          np.bool_]


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_native_entry_points_survive_random_layouts(data):
    """Random shapes, strides, dtypes and values into forward and loss_grad: no crash; the
    only outcomes are success, ValueError or FloatingPointError, and success is finite or
    matches a C-contiguous copy."""
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    n_in = data.draw(st.integers(1, 9))
    hidden = data.draw(st.integers(1, 9))
    n_out = data.draw(st.integers(2, 5))
    loss = data.draw(st.sampled_from(["softmax_cross_entropy", "sigmoid_cross_entropy",
                                      "squared_error"]))
    block = data.draw(st.integers(1, 7))
    net = Network(n_in, [("dense", hidden), ("activation", data.draw(st.sampled_from(
        ["relu", "tanh", "sigmoid", "softplus"]))), ("dense", n_out), ("loss", loss)],
        dtype=dtype, block_size=block)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    n = data.draw(st.integers(0, 20))
    off = st.sampled_from([0] * 12 + [-1, 1])  # mostly the right shape
    shape_w = (net.n_weights + data.draw(off),)
    shape_X = (n, n_in + data.draw(off))
    scale = data.draw(st.sampled_from([1.0, 1e-30, 1e10, 1e38, 1e300]))
    cast = lambda a, dt: a.astype(dt) if np.dtype(dt).kind != "b" else a > 0  # noqa: E731
    dt_w = data.draw(st.sampled_from([dtype] * 24 + DTYPES))
    dt_X = data.draw(st.sampled_from([dtype] * 24 + DTYPES))
    with np.errstate(over="ignore", invalid="ignore"):
        w_kind, w = _views(data.draw, cast(rng.normal(size=max(shape_w[0], 0)) * 0.3, dt_w))
        X_kind, X = _views(data.draw, cast(rng.normal(size=(shape_X[0], max(shape_X[1], 0)))
                                           * scale, dt_X))
    if data.draw(st.booleans()):
        bad_label = data.draw(st.sampled_from([False] * 9 + [True]))
        y = rng.integers(-1 if bad_label else 0, n_out + 1 if bad_label else n_out, n)
        y = y.astype(data.draw(st.sampled_from([np.int64, np.int64, np.int32, np.float64])))
    else:
        y = rng.normal(size=(n, n_out + data.draw(off))).astype(dtype)
    y_kind, y = _views(data.draw, y)
    g_kind, grad = _views(data.draw, np.zeros(net.n_weights + data.draw(off), dtype=data.draw(
        st.sampled_from([dtype] * 24 + DTYPES))))
    event(f"layouts w={w_kind} X={X_kind} y={y_kind} grad={g_kind}")
    for name, call in (("forward", lambda: net.forward(w, X)),
                       ("loss_grad", lambda: net.loss_grad(w, X, y, grad))):
        try:
            result = call()
        except (ValueError, FloatingPointError) as error:
            assert str(error)
            event(f"{name}: {type(error).__name__}")
            continue
        event(f"{name}: success")
        if name == "forward":  # a view that was accepted computes what its copy does
            assert result.shape == (X.shape[0], n_out)
            reference = net.forward(np.ascontiguousarray(w), np.ascontiguousarray(X))
            np.testing.assert_array_equal(result, reference)
        else:
            copy = np.zeros(grad.shape, grad.dtype)
            np.testing.assert_array_equal(
                result, net.loss_grad(np.ascontiguousarray(w), np.ascontiguousarray(X),
                                      np.ascontiguousarray(y), copy))


# ------------------------------------------------------------------------- AddressSanitizer

@pytest.mark.slow
def test_core_tests_pass_under_address_sanitizer(tmp_path):
    """scripts/asan.sh builds ann_core with -fsanitize=address and runs the core tests."""
    gcc = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True)
    if gcc.returncode != 0 or not os.path.isabs(gcc.stdout.strip()):
        pytest.skip("gcc with libasan is not available")
    env = dict(os.environ, ASAN_BUILD_DIR=str(tmp_path / "asan"))
    run = subprocess.run(["bash", str(ROOT / "scripts" / "asan.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    output = run.stdout + run.stderr
    print(output[-3000:])
    assert "ERROR: AddressSanitizer" not in output
    assert run.returncode == 0, output[-3000:]
    assert " passed" in output
