"""Dropout: the engine's masks (deterministic, counter-based, independent of how rows are
split), inference as the identity, rate 0 as no dropout, bad rates refused, the layer saved
and loaded. Gradients are checked in test_core_gradients.py (finite differences with the mask
fixed) and test_core_reference.py (numpy and PyTorch with the same masks)."""
import math

import numpy as np
import pytest

import reference as ref

import ann_core
from ann_core import Network
from sparkann import layers as L
from sparkann.topology import Topology


def mask_of(rate, rows, cols, key, dtype="float64", block_size=64):
    """The multipliers the engine draws for a lone dropout stage (its training output on 1s)."""
    net = Network(cols, [("dropout", rate), ("loss", "squared_error")], dtype=dtype,
                  block_size=block_size)
    return net.forward(np.zeros(0, dtype), np.ones((rows, cols), dtype), key=key)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cols", [1, 6, 33])
def test_the_mask_is_the_documented_stream(dtype, cols):
    got = mask_of(0.4, 75, cols, (1, 2, 3), dtype, block_size=16)
    want = ref.dropout_multipliers((1, 2, 3), 0, 75, cols, 0.4, dtype)
    assert got.tobytes() == want.tobytes()


def test_same_key_same_mask_other_key_other_mask():
    base = mask_of(0.5, 200, 50, (7, 10, 0))
    assert mask_of(0.5, 200, 50, (7, 10, 0)).tobytes() == base.tobytes()
    for other in [(7, 11, 0), (7, 10, 1), (8, 10, 0)]:   # iteration, block, seed
        changed = np.mean(mask_of(0.5, 200, 50, other) != base)
        assert 0.4 < changed < 0.6, (other, changed)   # independent masks differ in half


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_units_are_kept_with_probability_one_minus_rate(rate):
    m = mask_of(rate, 1000, 100, (3, 0, 0))
    kept = np.mean(m > 0)
    assert abs(kept - (1 - rate)) < 4 * math.sqrt(rate * (1 - rate) / m.size)
    assert set(np.unique(m)) <= {0.0, 1 / (1 - rate)}
    assert abs(np.mean(m) - 1) < 0.02   # inverted dropout keeps the mean


def test_the_mask_does_not_depend_on_blocks_or_threads(restore_blas):
    """A row's mask depends on its index in the call, not on the block or engine thread that
    computes it: the same rows give the same gradient with any block size and thread count."""
    rng = np.random.default_rng(0)
    layers = [("dropout", 0.3), ("dense", 40), ("activation", "relu"), ("dropout", 0.5),
              ("dense", 4), ("loss", "softmax_cross_entropy")]
    X = rng.normal(size=(700, 20))
    y = rng.integers(0, 4, 700).astype(np.int64)
    results = []
    for block_size, threads in [(700, 1), (64, 1), (37, 2)]:
        ann_core.set_blas_threads(threads)
        net = Network(20, layers, dtype="float64", block_size=block_size)
        w = np.random.default_rng(1).normal(scale=0.3, size=net.n_weights)
        grad = np.zeros(net.n_weights)
        loss = net.loss_grad(w, X, y, grad, key=(5, 6, 7))[0]
        results.append((loss, grad, net.forward(w, X, raw=True, key=(5, 6, 7))))
    assert mask_of(0.3, 700, 20, (5, 6, 7), block_size=700).tobytes() == \
        mask_of(0.3, 700, 20, (5, 6, 7), block_size=37).tobytes()
    for loss, grad, raw in results[1:]:
        np.testing.assert_allclose(loss, results[0][0], rtol=1e-12)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(raw, results[0][2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_inference_is_the_identity_and_rate_zero_is_no_dropout(dtype):
    rng = np.random.default_rng(2)
    plain = [("dense", 9), ("activation", "tanh"), ("dense", 3), ("loss", "softmax_cross_entropy")]
    dropped = [("dropout", 0.5), ("dense", 9), ("activation", "tanh"), ("dropout", 0.5),
               ("dense", 3), ("loss", "softmax_cross_entropy")]
    zero = [(s[0], 0.0) if s[0] == "dropout" else s for s in dropped]
    nets = {name: Network(5, spec, dtype=dtype, block_size=16)
            for name, spec in [("plain", plain), ("dropped", dropped), ("zero", zero)]}
    w = rng.normal(size=nets["plain"].n_weights).astype(dtype)
    X = rng.normal(size=(50, 5)).astype(dtype)
    y = rng.integers(0, 3, 50).astype(np.int64)
    expected = nets["plain"].forward(w, X)
    assert nets["dropped"].forward(w, X).tobytes() == expected.tobytes()
    assert nets["dropped"].forward(w, X, key=(1, 1, 1)).tobytes() != expected.tobytes()
    g_plain, g_zero = np.zeros_like(w), np.zeros_like(w)
    l_plain = nets["plain"].loss_grad(w, X, y, g_plain)[0]
    l_zero = nets["zero"].loss_grad(w, X, y, g_zero, key=(1, 1, 1))[0]
    assert l_zero == l_plain and g_zero.tobytes() == g_plain.tobytes()


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_bad_rates_are_refused_naming_the_rate(rate):
    with pytest.raises(ValueError, match="Dropout rate must be a number in \\[0, 1\\)"):
        L.Dropout(rate)
    with pytest.raises(ValueError, match="layer 1: dropout rate must be a number in \\[0, 1\\)"):
        Network(4, [("dense", 3), ("dropout", rate), ("dense", 2), ("loss", "squared_error")])


def test_loss_grad_of_a_dropout_network_needs_a_key():
    net = Network(4, [("dropout", 0.5), ("dense", 2), ("loss", "squared_error")])
    assert net.stochastic and not Network(4, [("dense", 2), ("loss", "squared_error")]).stochastic
    w, X, y = np.zeros(net.n_weights, np.float32), np.ones((3, 4), np.float32), \
        np.ones((3, 2), np.float32)
    grad = np.zeros_like(w)
    with pytest.raises(ValueError, match="key=\\(seed, iteration, block\\)"):
        net.loss_grad(w, X, y, grad)
    for key in [(1, 2), (1, 2, -1), (1, 2, 2**64), (1.0, 2, 3), "abc"]:
        with pytest.raises(ValueError, match="key: expected \\(seed, iteration, block\\)"):
            net.loss_grad(w, X, y, grad, key=key)


def test_input_dropout_skips_the_first_layers_input_gradient():
    """Dropout before the first dense layer: no delta is computed for the data, as without it."""
    plain = Network(784, [("dense", 64), ("loss", "squared_error")])
    dropped = Network(784, [("dropout", 0.2), ("dense", 64), ("loss", "squared_error")])
    assert dropped.flops_per_example() == plain.flops_per_example()


def test_dropout_layer_compiles_saves_and_loads():
    layers = [L.Dropout(0.2), L.Dense(8), L.ReLU(), L.Dropout(0.5), L.Dense(3),
              L.SoftmaxCrossEntropy()]
    topology = Topology(5, layers)
    assert topology.sizes == [5, 8, 3] and topology.n_weights == 5 * 8 + 8 + 8 * 3 + 3
    # the ReLU is fused to its dense stage; nothing runs in Python
    assert topology.spec() == [("dropout", 0.2), ("dense", 8), ("activation", "relu"),
                               ("dropout", 0.5), ("dense", 3), ("loss", "softmax_cross_entropy")]
    again = Topology.from_dict(topology.to_dict())
    assert again == topology and again.layers[3].rate == 0.5
    assert L.layer_from_dict({"type": "dropout", "rate": 0.25}) == L.Dropout(0.25)
    net = topology.network("float64")
    assert net.stochastic and not net.has_python_layers
