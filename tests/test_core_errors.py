"""Bad input never crashes the engine: it gets a ValueError that names the problem.

Each case asserts on fragments of the message (what was expected, what was received). A
hypothesis test then throws random shapes, dtypes, contiguity and values at ``Network(...)``,
``forward`` and ``loss_grad`` and accepts only success, ValueError or FloatingPointError
(the documented error for a computation that overflows with finite inputs).
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ann_core import Network

LAYERS = [("dense", 7), ("activation", "relu"), ("dense", 3), ("loss", "softmax_cross_entropy")]
N_IN, N_OUT, N_ROWS = 4, 3, 5


@pytest.fixture
def case():
    """A float64 network and valid arguments: (net, weights, X, labels, targets, grad)."""
    rng = np.random.default_rng(0)
    net = Network(N_IN, LAYERS, dtype="float64", block_size=2)
    w = rng.normal(size=net.n_weights)
    X = rng.normal(size=(N_ROWS, N_IN))
    labels = np.array([0, 1, 2, 1, 0], dtype=np.int64)
    targets = rng.uniform(size=(N_ROWS, N_OUT))
    return net, w, X, labels, targets, np.zeros(net.n_weights)


def raises(fragments, call, error=ValueError):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def still_works(net, w, X, labels):
    grad = np.zeros(net.n_weights)
    loss, n = net.loss_grad(w, X, labels, grad)
    assert n == X.shape[0] and math.isfinite(loss) and np.isfinite(grad).all()


# ---------------------------------------------------------------------- forward / loss_grad

def test_weights(case):
    net, w, X, labels, _, grad = case
    want = "weights: expected a C-contiguous float64 array of shape (59,)"
    raises([want, "received float64 array of shape (58,)"], lambda: net.forward(w[:-1], X))
    raises([want, "received float64 array of shape (60,)"],
           lambda: net.loss_grad(np.append(w, 0.0), X, labels, grad))
    raises([want, "received float32 array"], lambda: net.forward(w.astype(np.float32), X))
    raises([want, "received list"], lambda: net.forward(list(w), X))
    raises([want, "(1, 59)"], lambda: net.forward(w[None, :], X))
    raises([want, "non-contiguous"], lambda: net.forward(np.repeat(w, 2)[::2], X))
    still_works(net, w, X, labels)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_named(case, value):
    net, w, X, labels, _, grad = case
    bad = w.copy()
    bad[4 * 7 + 2] = value  # dense0.W is 4 x 7, then dense0.b
    raises(["weights: element 30 (dense0.b[2]) is not finite"],
           lambda: net.loss_grad(bad, X, labels, grad))
    raises(["element 30 (dense0.b[2])"], lambda: net.forward(bad, X))
    bad = w.copy()
    bad[35 + 2 * 3] = value  # dense1.W (7 x 3) starts at 35
    raises(["element 41 (dense1.W[2, 0])"], lambda: net.forward(bad, X))
    assert not grad.any()  # checked before any computation
    still_works(net, w, X, labels)


def test_data(case):
    net, w, X, labels, _, grad = case
    want = "X: expected a C-contiguous float64 array of shape (n, 4)"
    raises([want, "received float64 array of shape (4,)"], lambda: net.forward(w, X[0]))
    raises([want, "received float64 array of shape (1, 5, 4)"], lambda: net.forward(w, X[None]))
    raises([want, "(5, 3)"], lambda: net.loss_grad(w, X[:, :3].copy(), labels, grad))
    raises([want, "received int64 array"], lambda: net.forward(w, X.astype(np.int64)))
    raises([want, "received float32 array"],
           lambda: net.loss_grad(w, X.astype(np.float32), labels, grad))
    raises([want, "non-contiguous"], lambda: net.forward(w, np.asfortranarray(X)))
    raises([want, "non-contiguous"], lambda: net.loss_grad(w, X[::2], labels[:3].copy(), grad))
    raises([want, "non-contiguous"], lambda: net.forward(w, np.broadcast_to(X[0], (5, 4))))
    raises([want, "received list"], lambda: net.forward(w, X.tolist()))
    still_works(net, w, X, labels)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_data_names_row_and_column(case, value):
    net, w, X, labels, targets, _ = case
    bad = X.copy()
    bad[3, 2] = value
    expected = ["X: row 3, column 2", str(value), "expected a finite number"]
    raises(expected, lambda: net.forward(w, bad))
    raises(expected, lambda: net.loss_grad(w, bad, labels, np.zeros(net.n_weights)))
    raises(expected, lambda: net.loss_grad(w, bad, targets, np.zeros(net.n_weights)))
    still_works(net, w, X, labels)


def test_non_finite_targets_name_row_and_column(case):
    net, w, X, labels, targets, _ = case
    bad = targets.copy()
    bad[4, 1] = np.nan
    raises(["y: row 4, column 1 is nan", "expected a finite number"],
           lambda: net.loss_grad(w, X, bad, np.zeros(net.n_weights)))
    still_works(net, w, X, labels)


def test_labels(case):
    net, w, X, labels, _, grad = case
    raises(["y: row 2 has class index -1", "expected an integer in [0, 3)"],
           lambda: net.loss_grad(w, X, np.array([0, 1, -1, 0, 0]), grad))
    raises(["y: row 4 has class index 3", "[0, 3)"],
           lambda: net.loss_grad(w, X, np.array([0, 1, 2, 0, 3]), grad))
    raises(["row 0 has class index 9223372036854775807"],
           lambda: net.loss_grad(w, X, np.full(5, 2**63 - 1, np.int64), grad))
    assert not grad.any()  # labels are checked before anything is added
    want = "y: expected C-contiguous int64 class indices of shape (5,)"
    for dtype in (np.int32, np.uint64, np.float64, np.float32, bool):
        raises([want, f"received {np.dtype(dtype)} array of shape (5,)"],
               lambda: net.loss_grad(w, X, labels.astype(dtype), grad))
    raises([want, "received int64 array of shape (4,)"],
           lambda: net.loss_grad(w, X, labels[:4], grad))
    raises([want, "non-contiguous"], lambda: net.loss_grad(w, X, np.repeat(labels, 2)[::2], grad))
    raises(["y: expected int64 class indices of shape (5,) or float64 targets of shape (5, 3)",
            "received list"], lambda: net.loss_grad(w, X, labels.tolist(), grad))
    raises(["received int64 array of shape (1, 1, 5)"],
           lambda: net.loss_grad(w, X, labels[None, None], grad))
    still_works(net, w, X, labels)


def test_targets(case):
    net, w, X, labels, targets, grad = case
    want = "y: expected a C-contiguous float64 array of shape (5, 3)"
    raises([want, "received float32 array"],
           lambda: net.loss_grad(w, X, targets.astype(np.float32), grad))
    raises([want, "received float64 array of shape (5, 2)"],
           lambda: net.loss_grad(w, X, targets[:, :2].copy(), grad))
    raises([want, "received float64 array of shape (4, 3)"],
           lambda: net.loss_grad(w, X, targets[:4].copy(), grad))
    raises([want, "non-contiguous"], lambda: net.loss_grad(w, X, np.asfortranarray(targets), grad))
    raises([want, "received int64 array"],
           lambda: net.loss_grad(w, X, labels[:, None].repeat(3, axis=1), grad))
    still_works(net, w, X, labels)


def test_grad_and_out(case):
    net, w, X, labels, _, grad = case
    want = "grad: expected a C-contiguous writable float64 array of shape (59,)"
    read_only = grad.copy()
    read_only.flags.writeable = False
    raises([want], lambda: net.loss_grad(w, X, labels, read_only))
    raises([want, "received float32 array"],
           lambda: net.loss_grad(w, X, labels, grad.astype(np.float32)))
    raises([want, "shape (58,)"], lambda: net.loss_grad(w, X, labels, grad[:-1]))
    raises([want, "non-contiguous"], lambda: net.loss_grad(w, X, labels, np.zeros(118)[::2]))
    raises([want, "received NoneType"], lambda: net.loss_grad(w, X, labels, None))
    want = "out: expected a C-contiguous writable float64 array of shape (5, 3)"
    raises([want, "shape (4, 3)"], lambda: net.forward(w, X, out=np.empty((4, 3))))
    raises([want, "float32"], lambda: net.forward(w, X, out=np.empty((5, 3), np.float32)))
    frozen = np.empty((5, 3))
    frozen.flags.writeable = False
    raises([want], lambda: net.forward(w, X, out=frozen))
    still_works(net, w, X, labels)


def test_float32_network_refuses_float64(case):
    _, _, X, labels, _, _ = case
    net = Network(N_IN, LAYERS, dtype="float32")
    w = np.zeros(net.n_weights, np.float32)
    raises(["X: expected a C-contiguous float32 array", "received float64 array"],
           lambda: net.forward(w, X))
    raises(["weights: expected a C-contiguous float32 array", "received float64"],
           lambda: net.forward(w.astype(np.float64), X.astype(np.float32)))
    raises(["grad: expected", "float32", "received float64"],
           lambda: net.loss_grad(w, X.astype(np.float32), labels, np.zeros(net.n_weights)))


def test_non_finite_grad_or_overflow_is_a_floating_point_error(case):
    net, w, X, labels, _, grad = case
    raises(["not finite although the weights and data are"],
           lambda: net.loss_grad(w * 1e200, X, labels, grad), FloatingPointError)
    poisoned = np.zeros(net.n_weights)
    poisoned[0] = np.nan
    raises(["grad already held non-finite values"],
           lambda: net.loss_grad(w, X, labels, poisoned), FloatingPointError)
    still_works(net, w, X, labels)


def test_empty_batch(case):
    net, w, _, _, _, grad = case
    assert net.forward(w, np.empty((0, N_IN))).shape == (0, N_OUT)
    assert net.loss_grad(w, np.empty((0, N_IN)), np.empty(0, np.int64), grad) == (0.0, 0)
    assert not grad.any()


# -------------------------------------------------------------------------------- topology

BAD_TOPOLOGIES = [
    ([("dense", 3)], ["layers must end with ('loss', name)", "received ('dense', 3)"]),
    ([], ["layers must end with ('loss', name)", "empty list"]),
    ([("loss", "squared_error")], ["needs at least one ('dense', n_out)"]),
    ([("dense", 3), ("loss", "hinge")], ["loss must be one of", "'squared_error'",
                                         "received 'hinge'"]),
    ([("dense", 3), ("loss",)], ["expected ('loss', value)", "received ('loss',)"]),
    ([("dense", 3), ("loss", "squared_error"), ("dense", 2), ("loss", "squared_error")],
     ["layer 1: the loss must be the last layer"]),
    ([("dense", 3), ("activation", "swish"), ("loss", "squared_error")],
     ["layer 1: activation must be one of", "'tanh'", "received 'swish'"]),
    ([("dense", 3), ("activation", ["relu"]), ("loss", "squared_error")],
     ["activation must be one of", "received ['relu']"]),
    ([("activation", "relu"), ("dense", 3), ("loss", "squared_error")],
     ["layer 0: an activation must follow a dense or Python layer"]),
    ([("dense", 3), ("activation", "relu"), ("activation", "tanh"), ("loss", "squared_error")],
     ["layer 2: an activation must follow a dense or Python layer"]),
    ([("dense", 0), ("loss", "squared_error")],
     ["layer 0: dense size must be a positive integer", "received 0"]),
    ([("dense", -4), ("loss", "squared_error")], ["dense size", "received -4"]),
    ([("dense", 2.5), ("loss", "squared_error")], ["dense size", "received 2.5"]),
    ([("dense", "8"), ("loss", "squared_error")], ["dense size", "received '8'"]),
    ([("dense", True), ("loss", "squared_error")], ["dense size", "received True"]),
    ([("dense", 2**31), ("loss", "squared_error")], ["below 2**31", "received 2147483648"]),
    ([("dense",), ("loss", "squared_error")], ["layer 0: expected ('dense', value)"]),
    ([("dense", 3), ("activation", "leaky_relu", 1.0), ("loss", "squared_error")],
     ["leaky_relu slope must be in [0, 1)", "received 1.0"]),
    ([("dense", 3), ("activation", "leaky_relu", -0.1), ("loss", "squared_error")],
     ["slope", "received -0.1"]),
    ([("dense", 3), ("activation", "leaky_relu", float("nan")), ("loss", "squared_error")],
     ["slope", "received nan"]),
    ([("dense", 3), ("activation", "leaky_relu", "0.1"), ("loss", "squared_error")],
     ["slope", "received 0.1"]),
    ([("dense", 3), ("activation", "relu", 0.1), ("loss", "squared_error")],
     ["only leaky_relu takes a parameter"]),
    ([("dense", 3), (), ("loss", "squared_error")], ["layer 1: expected a non-empty tuple", "()"]),
    ([("dense", 3), ["activation", "relu"], ("loss", "squared_error")],
     ["layer 1: expected a non-empty tuple", "['activation', 'relu']"]),
    ([("dense", 3), 7, ("loss", "squared_error")], ["layer 1: expected a non-empty tuple"]),
    ([("conv", 3), ("loss", "squared_error")], ["layer 0: unknown kind 'conv'"]),
    ([("conv", 3), ("dense", 2), ("loss", "squared_error")], ["layer 0: unknown kind 'conv'"]),
    ([("dense", 1), ("loss", "softmax_cross_entropy")],
     ["softmax_cross_entropy needs at least 2 outputs", "has 1"]),
    ([("python", object()), ("loss", "squared_error")],
     ["a Python layer needs n_out, n_params, forward and backward", "lacks n_out"]),
    ([()], ["layer 0: expected a non-empty tuple"]),
]


@pytest.mark.parametrize("layers,fragments", BAD_TOPOLOGIES,
                         ids=[str(i) for i in range(len(BAD_TOPOLOGIES))])
def test_invalid_topology(layers, fragments):
    raises(fragments, lambda: Network(4, layers))


@pytest.mark.parametrize("kwargs,fragments", [
    ({"n_in": 0}, ["n_in must be a positive integer", "received 0"]),
    ({"n_in": 2.5}, ["n_in", "received 2.5"]),
    ({"n_in": "4"}, ["n_in", "received '4'"]),
    ({"n_in": 2**40}, ["n_in", "below 2**31"]),
    ({"block_size": 0}, ["block_size must be a positive integer", "received 0"]),
    ({"block_size": -3}, ["block_size", "received -3"]),
    ({"block_size": 64.0}, ["block_size", "received 64.0"]),
    ({"block_size": None}, ["block_size", "received None"]),
    ({"dtype": "int32"}, ["dtype must be 'float32', 'float64' or 'bfloat16'", "received 'int32'"]),
    ({"dtype": "float16"}, ["dtype must be", "received 'float16'"]),
    ({"layers": None}, ["layers must be a list of tuples", "received None"]),
    ({"layers": "dense"}, ["layers must be a list of tuples", "received 'dense'"]),
])
def test_invalid_constructor_arguments(kwargs, fragments):
    arguments = {"n_in": 4, "layers": [("dense", 2), ("loss", "squared_error")]} | kwargs
    raises(fragments, lambda: Network(**arguments))


def test_python_layer_with_bad_sizes():
    class Sized:
        def __init__(self, n_out, n_params):
            self.n_out, self.n_params = n_out, n_params

        def forward(self, params, x, out):
            out[...] = 0

        def backward(self, params, x, out, d_out, d_in, grad):
            pass

    raises(["Python layer n_out", "received 0"],
           lambda: Network(4, [("python", Sized(0, 1)), ("loss", "squared_error")]))
    raises(["Python layer n_params must be a non-negative integer", "received -1"],
           lambda: Network(4, [("python", Sized(3, -1)), ("loss", "squared_error")]))
    raises(["n_params", "received 1.5"],
           lambda: Network(4, [("python", Sized(3, 1.5)), ("loss", "squared_error")]))


# -------------------------------------------------------------------- Python layers that fail

class Flaky:
    """A Python layer (identity with no parameters) that raises when told to."""

    n_params = 0

    def __init__(self, width):
        self.n_out = width
        self.fail_in = None

    def forward(self, params, x, out):
        if self.fail_in == "forward":
            raise RuntimeError("forward failed on purpose")
        out[...] = x

    def backward(self, params, x, out, d_out, d_in, grad):
        if self.fail_in == "backward":
            raise RuntimeError("backward failed on purpose")
        if d_in is not None:
            d_in[...] = d_out


@pytest.mark.parametrize("stage", ["forward", "backward"])
def test_python_layer_exception_propagates_and_the_next_call_works(stage):
    flaky = Flaky(7)
    layers = [("dense", 7), ("activation", "tanh"), ("python", flaky), ("dense", 3),
              ("loss", "softmax_cross_entropy")]
    net = Network(N_IN, layers, dtype="float64", block_size=2)
    rng = np.random.default_rng(1)
    w = rng.normal(size=net.n_weights)
    X = rng.normal(size=(N_ROWS, N_IN))
    labels = np.array([0, 1, 2, 1, 0], dtype=np.int64)
    before = np.zeros(net.n_weights)
    expected_loss = net.loss_grad(w, X, labels, before)[0]
    flaky.fail_in = stage
    with pytest.raises(RuntimeError, match=f"{stage} failed on purpose"):
        net.loss_grad(w, X, labels, np.zeros(net.n_weights))
    if stage == "forward":
        with pytest.raises(RuntimeError, match="forward failed on purpose"):
            net.forward(w, X)
    flaky.fail_in = None
    after = np.zeros(net.n_weights)
    assert net.loss_grad(w, X, labels, after)[0] == expected_loss
    np.testing.assert_array_equal(after, before)
    assert np.isfinite(net.forward(w, X)).all()


# ------------------------------------------------------------------------------ hypothesis

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.float16, np.bool_, np.uint8]
VALUES = st.sampled_from([0.0, 1.0, -2.5, 1e30, -1e30, 1e300, np.nan, np.inf, -np.inf, 1e-40])


def rarely(draw):
    """True about one time in ten (hypothesis favours small integers, so not integers(0, 9))."""
    return draw(st.sampled_from(range(10))) == 9


@st.composite
def arrays(draw, shape_hint, dtype_hint):
    """An array of shape_hint, or rarely another shape, dtype, layout, value, or a list."""
    shape = draw(st.lists(st.integers(0, 6), max_size=3)) if rarely(draw) else shape_hint
    dtype = draw(st.sampled_from(DTYPES)) if rarely(draw) else None
    base = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=shape)
    if base.size and rarely(draw):
        base.reshape(-1)[draw(st.integers(0, base.size - 1))] = draw(VALUES)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 -> inf in float32 is wanted
        array = base.astype(dtype or dtype_hint)
    layout = "c"
    if rarely(draw):
        layout = draw(st.sampled_from(["fortran", "strided", "readonly", "list"]))
    if layout == "fortran":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = np.repeat(array, 2, axis=0)[::2]
    elif layout == "readonly":
        array.flags.writeable = False
    elif layout == "list":
        return array.tolist()
    return array


@st.composite
def mostly(draw, valid, invalid):
    """Draw from `valid` about nine times in ten, else from `invalid`."""
    return draw(invalid if rarely(draw) else valid)


@st.composite
def topologies(draw):
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        layers.append(("dense", draw(mostly(st.integers(1, 9),
                                            st.sampled_from([0, -1, 2.0, "3", None])))))
        if draw(st.booleans()):
            name = draw(mostly(st.sampled_from(["relu", "sigmoid", "tanh", "softplus",
                                                "identity", "leaky_relu"]),
                               st.sampled_from(["bogus", None, ["relu"]])))
            slope = draw(mostly(st.floats(0, 0.99),
                                st.sampled_from([-0.5, 1.0, 1.5, float("nan"), "0.1"])))
            layers.append(("activation", "leaky_relu", slope) if name == "leaky_relu"
                          else ("activation", name))
    loss = draw(mostly(st.sampled_from(["softmax_cross_entropy", "sigmoid_cross_entropy",
                                        "squared_error"]), st.just("nope")))
    if draw(mostly(st.just(True), st.just(False))):
        layers.append(("loss", loss))
    if draw(mostly(st.just(False), st.just(True))):
        layers.insert(draw(st.integers(0, len(layers) - 1)),
                      draw(st.sampled_from([(), 3, ["x"], ("loss", "squared_error"),
                                            ("activation", "relu")])))
    return layers


@settings(max_examples=250, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_random_input_never_crashes(data):
    """Random topologies, then random arguments: success, ValueError or FloatingPointError."""
    n_in = data.draw(mostly(st.integers(1, 6), st.sampled_from([0, -1, 2.5, "3", None])))
    dtype = data.draw(mostly(st.sampled_from(["float32", "float64"]), st.just("int8")))
    block = data.draw(mostly(st.integers(1, 5), st.sampled_from([0, 1.5])))
    try:
        net = Network(n_in, data.draw(topologies()), dtype=dtype, block_size=block)
    except ValueError as error:
        event(f"Network: ValueError {str(error)[:40]}")
        return
    n = data.draw(st.integers(0, 7))
    w = data.draw(arrays((net.n_weights,), net.dtype))
    X = data.draw(arrays((n, net.n_in), net.dtype))
    if data.draw(st.booleans()):
        y = data.draw(arrays((n, net.n_out), net.dtype))
    else:
        y = np.random.default_rng(n).integers(0, net.n_out, n)
        if n and rarely(data.draw):
            y[data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from([-1, net.n_out, 2**62]))
        if rarely(data.draw):
            y = (data.draw(arrays((n,), np.float64)) if data.draw(st.booleans())
                 else y.astype(np.int32))
    grad = data.draw(arrays((net.n_weights,), net.dtype))
    for name, call in (
            ("forward", lambda: net.forward(w, X, raw=data.draw(st.booleans()))),
            ("loss_grad", lambda: net.loss_grad(w, X, y, grad, zero=data.draw(st.booleans())))):
        try:
            call()
            event(f"{name}: success")
        except (ValueError, FloatingPointError) as error:
            assert str(error)
            event(f"{name}: {type(error).__name__}")
