"""Layer objects: compilation, gradient checks (native and Python layers), registry, the
native activations' names."""
import contextlib
import io
import os
import re

import ann_core
import numpy as np
import pytest
from gradcheck import central_differences

from sparkann import cli, estimator
from sparkann import layers as L
from sparkann.topology import Topology


@pytest.fixture(autouse=True)
def one_blas_thread():
    # tiny matrices: one thread avoids contention on a shared machine
    import ann_core

    previous = ann_core.set_blas_threads(1)
    yield
    ann_core.set_blas_threads(previous)


def numeric_check(topology, n=7, seed=0, y=None, n_checked=60):
    """Largest relative error between loss_grad and central differences, in float64."""
    rng = np.random.default_rng(seed)
    net = topology.network(dtype="float64", block_size=3)  # several blocks, a partial one
    w = topology.init_weights(seed=seed, scheme="glorot", dtype="float64")
    w += rng.normal(0, 0.1, w.shape)  # non-zero biases too
    X = rng.normal(size=(n, topology.n_in))
    if y is None:
        if topology.loss == "softmax_cross_entropy":
            y = rng.integers(0, topology.n_out, n).astype(np.int64)
        else:
            y = rng.uniform(0.05, 0.95, (n, topology.n_out))
    grad = np.zeros_like(w)
    loss, rows = net.loss_grad(w, X, y, grad)
    assert rows == n and np.isfinite(loss)
    estimates = central_differences(lambda v: net.loss_grad(v, X, y, np.zeros_like(w))[0], w,
                                    rng.choice(w.size, min(n_checked, w.size), replace=False),
                                    1e-6)
    return max(abs(estimate - grad[i]) / max(1.0, abs(grad[i]))
               for i, estimate in estimates.items())


# every activation of the engine's table, leaky_relu with a slope of its own
ACTIVATIONS = [L.LeakyReLU(0.1) if cls is L.LeakyReLU else cls()
               for cls in L.ACTIVATION_NAMES.values()]
WRITTEN = [act for act in ACTIVATIONS if not isinstance(act, L._EngineActivation)]
LOSSES = [L.SoftmaxCrossEntropy(), L.SigmoidCrossEntropy(), L.SquaredError()]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_native_layers_gradient(act, loss):
    t = Topology(5, [L.Dense(4), act, L.Dense(3), loss])
    assert numeric_check(t) < 1e-6


@pytest.mark.parametrize("act", WRITTEN, ids=repr)
def test_activation_where_engine_cannot_fuse_uses_numpy(act):
    # first stage and a second activation in a row run as Python layers
    t = Topology(4, [type(act)(**act.get_config()), L.Dense(4), L.Tanh(), act, L.Dense(3),
                     L.SoftmaxCrossEntropy()])
    kinds = [s[0] for s in t.spec()]
    assert kinds == ["python", "dense", "activation", "python", "dense", "loss"]
    assert numeric_check(t) < 1e-6


def test_numpy_fallback_matches_native_forward():
    native = Topology(4, [L.Dense(5), L.Softplus(), L.Dense(3), L.SoftmaxCrossEntropy()])
    fallback = Topology(4, [L.Dense(5), L.Identity(), L.Softplus(), L.Dense(3),
                            L.SoftmaxCrossEntropy()])
    w = native.init_weights(seed=1, dtype="float64")
    X = np.random.default_rng(1).normal(size=(6, 4))
    np.testing.assert_allclose(native.network("float64").forward(w, X),
                               fallback.network("float64").forward(w, X), rtol=1e-12)


# ------------------------------------------------- the native activations: the engine's table

ENGINE = list(ann_core.ACTIVATIONS)   # csrc/ann_kernels.h's ANN_ACTIVATIONS, in its order
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_engine_activation_has_a_registered_layer_class():
    assert list(L.ACTIVATION_NAMES) == ENGINE
    for name, cls in L.ACTIVATION_NAMES.items():
        assert cls.native_name == name and L.get_layer_class(name) is cls
        assert type(L.get_activation(name)) is cls


def test_an_engine_activation_without_a_class_of_its_own_runs_natively_everywhere():
    # what a row added to the engine's table gets until someone writes its layer class
    generated = L._engine_activation("gelu")
    for hidden, kinds in [
        ([L.Dense(5), "act", L.Dense(3)], ["dense", "activation", "dense"]),
        (["act", L.Dense(5), L.Tanh(), "act", L.Dense(3)],      # nothing to fuse to, twice
         ["python", "activation", "dense", "activation", "python", "activation", "dense"]),
    ]:
        def topology(act):
            return Topology(4, [act() if x == "act" else x for x in hidden]
                            + [L.SoftmaxCrossEntropy()])

        t, written = topology(generated), topology(L.GELU)
        assert [s[0] for s in t.spec()] == kinds + ["loss"]
        assert numeric_check(t) < 1e-6
        w = t.init_weights(seed=2, dtype="float64")
        X = np.random.default_rng(2).normal(size=(6, 4))
        np.testing.assert_allclose(t.network("float64").forward(w, X),
                                   written.network("float64").forward(w, X), rtol=1e-12)


def _train_help():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    return out.getvalue()


def _spark_param_doc():
    pytest.importorskip("pyspark")
    from sparkann.spark import MultilayerPerceptronClassifier, MultilayerPerceptronRegressor

    docs = {MultilayerPerceptronClassifier.activation.doc,
            MultilayerPerceptronRegressor.activation.doc}
    assert len(docs) == 1
    return docs.pop()


def _unknown_activation_error():
    with pytest.raises(ValueError) as error:
        L.get_activation("swish")
    return str(error.value)


def _readme_list():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"hidden `activation` \(([^)]*)\)", text).group(1)


@pytest.mark.parametrize("where, text", [
    ("the Spark activation Param's doc", _spark_param_doc),
    ("sparkann train --help", _train_help),
    ("MLPClassifier's docstring", lambda: estimator.MLPClassifier.__doc__),
    ("the error for an unknown activation", _unknown_activation_error),
    ("README's Beyond MLlib", _readme_list),
])
def test_every_list_of_activations_names_every_engine_activation(where, text):
    missing = [name for name in ENGINE if not re.search(rf"\b{name}\b", text())]
    assert not missing, f"{where} does not mention {missing}"


# ------------------------------------------------------------------ custom Python layers

@L.register("test_square")
class Square(L.PythonActivation):
    """y = x**2 (a custom activation)."""

    def function(self, x):
        return x * x

    def derivative(self, x, y):
        return 2.0 * x


@L.register("test_scale_shift")
class ScaleShift(L.PythonLayer):
    """y = x * a + c with per-feature parameters a, c (a custom layer with weights)."""

    def __init__(self, init_scale=1.0):
        self.init_scale = init_scale

    def n_params(self, n_in):
        return 2 * n_in

    def init_params(self, n_in, rng, scheme="spark"):
        return np.concatenate([np.full(n_in, self.init_scale), np.zeros(n_in)])

    def forward(self, params, x, out):
        a, c = np.split(params, 2)
        np.multiply(x, a, out=out)
        out += c

    def backward(self, params, x, out, d_out, d_in, grad):
        a, _ = np.split(params, 2)
        ga, gc = np.split(grad, 2)
        ga += (d_out * x).sum(axis=0)
        gc += d_out.sum(axis=0)
        if d_in is not None:
            np.multiply(d_out, a, out=d_in)


@L.register("test_pairwise_max")
class PairwiseMax(L.PythonLayer):
    """Changes the width: max of neighbouring features (n_in must be even)."""

    def output_size(self, n_in):
        return n_in // 2

    def forward(self, params, x, out):
        np.maximum(x[:, 0::2], x[:, 1::2], out=out)

    def backward(self, params, x, out, d_out, d_in, grad):
        if d_in is not None:
            first = x[:, 0::2] >= x[:, 1::2]
            d_in[:, 0::2] = np.where(first, d_out, 0)
            d_in[:, 1::2] = np.where(first, 0, d_out)


@pytest.mark.parametrize("custom", [Square(), ScaleShift(0.5), PairwiseMax()], ids=repr)
@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_custom_python_layers_gradient(custom, loss):
    t = Topology(5, [L.Dense(6), L.Tanh(), custom, L.Dense(3), loss])
    assert numeric_check(t) < 1e-6


def test_custom_layer_as_first_stage_and_with_parameters_in_layout():
    t = Topology(4, [ScaleShift(), L.Dense(3), Square(), L.Dense(2), L.SoftmaxCrossEntropy()])
    assert t.n_weights == 8 + 4 * 3 + 3 + 3 * 2 + 2
    assert numeric_check(t) < 1e-6
    assert [name for _, name, _, _ in t.layout] == ["params", "W", "b", "W", "b"]


def test_custom_layers_train():
    from sparkann.optim import Adam

    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)  # XOR-like: needs the non-linearity
    t = Topology(4, [ScaleShift(), L.Dense(8), Square(), L.Dense(2), L.SoftmaxCrossEntropy()])
    net = t.network("float64", block_size=64)
    w = t.init_weights(seed=0, scheme="glorot", dtype="float64")
    opt = Adam(lr=0.05)
    grad = np.zeros_like(w)
    first = net.loss_grad(w, X, y, grad, zero=True)[0] / len(X)
    for _ in range(300):
        loss = net.loss_grad(w, X, y, grad, zero=True)[0] / len(X)
        opt.step(w, grad / len(X))
    assert loss < 0.25 * first
    accuracy = (net.forward(w, X).argmax(1) == y).mean()
    assert accuracy > 0.95


# ------------------------------------------------------------------------ registry, config

def test_register_and_round_trip():
    for layer in [L.Dense(7), L.LeakyReLU(0.2), Square(), ScaleShift(2.0), L.SquaredError()]:
        again = L.layer_from_dict(layer.to_dict())
        assert again == layer and again is not layer
    assert "test_square" in L.registered()


def test_register_rejects_name_clash_and_non_layers():
    with pytest.raises(ValueError, match="already registered"):
        @L.register("dense")
        class Other(L.PythonLayer):
            pass
    with pytest.raises(TypeError, match="subclass"):
        L.register("thing")(int)


def test_unregistered_layer_cannot_be_saved_and_unknown_type_is_clear():
    class Unnamed(L.PythonActivation):
        pass

    with pytest.raises(ValueError, match="not registered"):
        Unnamed().to_dict()
    with pytest.raises(ValueError, match="unknown layer type 'nope'"):
        L.layer_from_dict({"type": "nope"})
    with pytest.raises(ValueError, match="cannot build layer 'dense'"):
        L.layer_from_dict({"type": "dense", "units": 3})


def test_from_sizes_is_sparks_shorthand():
    layers = L.from_sizes([784, 256, 128, 10], activation="relu")
    assert layers == [L.Dense(256), L.ReLU(), L.Dense(128), L.ReLU(), L.Dense(10),
                      L.SoftmaxCrossEntropy()]
    assert L.from_sizes([3, 2], loss="squared_error") == [L.Dense(2), L.SquaredError()]
    assert L.from_sizes([4, 5, 2], activation="test_square")[1] == Square()


@pytest.mark.parametrize("bad, match", [
    (lambda: L.Dense(0), "positive integer"),
    (lambda: L.Dense(2.5), "positive integer"),
    (lambda: L.LeakyReLU(1.5), r"\[0, 1\)"),
    (lambda: L.from_sizes([784]), "at least an input and an output"),
    (lambda: L.from_sizes([784, 0, 10]), "layer size 1"),
    (lambda: L.from_sizes([4, 2], activation="swish"), "unknown activation 'swish'"),
    (lambda: L.from_sizes([4, 2], loss="hinge"), "unknown loss 'hinge'"),
])
def test_bad_layer_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_spark_init_of_dense_covers_bias():
    rng = np.random.default_rng(0)
    p = L.Dense(50).init_params(100, rng, "spark")
    assert p.shape == (5050,)
    bound = 2.4 / np.sqrt(100)
    assert np.abs(p).max() <= bound and np.abs(p[-50:]).max() > 0.5 * bound
    g = L.Dense(50).init_params(100, rng, "glorot")
    assert np.all(g[-50:] == 0) and np.abs(g).max() <= np.sqrt(6 / 150)
    h = L.Dense(400).init_params(200, rng, "he")
    assert abs(h[:-400].std() - np.sqrt(2 / 200)) < 0.01
