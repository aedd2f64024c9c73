"""Topology: shapes, weight layout, initialisation, summary, serialisation."""
import json
import tracemalloc

import numpy as np
import pytest

from sparkann import layers as L
from sparkann.topology import Topology


def test_from_sizes_shapes_and_layout_match_the_engine():
    t = Topology.from_sizes([784, 256, 128, 10], activation="relu")
    assert (t.n_in, t.n_out, t.sizes) == (784, 10, [784, 256, 128, 10])
    assert t.n_weights == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    net = t.network(dtype="float32", block_size=64)
    assert (net.n_in, net.n_out, net.n_weights, net.sizes) == (784, 10, t.n_weights, t.sizes)
    assert [(o, s) for _, o, s in net.layout] == [(o, s) for _, _, o, s in t.layout]
    assert net.block_size == 64 and net.dtype == np.float32


def test_network_runs_forward_and_probabilities_sum_to_one():
    t = Topology(6, [L.Dense(5), L.Sigmoid(), L.Dense(3), L.SoftmaxCrossEntropy()])
    w = t.init_weights(seed=3)
    X = np.random.default_rng(0).random((9, 6), dtype=np.float32)
    p = t.network().forward(w, X)
    assert p.shape == (9, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)


def test_params_of_gives_views_in_the_flat_vector():
    t = Topology(3, [L.Dense(2), L.Tanh(), L.Dense(4), L.SquaredError()])
    w = np.arange(t.n_weights, dtype=np.float64)
    p = t.params_of(w, 2)
    assert p["W"].shape == (2, 4) and p["b"].shape == (4,)
    assert p["W"][0, 0] == 8 and p["b"][-1] == t.n_weights - 1
    p["b"][:] = -1
    assert np.all(w[-4:] == -1)


@pytest.mark.parametrize("scheme", ["spark", "glorot", "he"])
def test_init_is_deterministic_for_a_seed(scheme):
    t = Topology.from_sizes([20, 10, 3])
    a = t.init_weights(seed=7, scheme=scheme)
    b = t.init_weights(seed=7, scheme=scheme)
    c = t.init_weights(seed=8, scheme=scheme)
    assert a.dtype == np.float32 and a.shape == (t.n_weights,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert t.init_weights(seed=7, scheme=scheme, dtype="float64").dtype == np.float64


def test_spark_init_bounds_per_layer():
    t = Topology.from_sizes([100, 25, 4])
    w = t.init_weights(seed=0)
    first, second = w[:100 * 25 + 25], w[100 * 25 + 25:]
    assert np.abs(first).max() <= 2.4 / 10 and np.abs(first).max() > 0.2
    assert np.abs(second).max() <= 2.4 / 5 and np.abs(second).max() > 0.4


def test_l2_mask_excludes_biases():
    t = Topology.from_sizes([3, 2, 2])
    mask = t.l2_mask()
    assert mask.tolist() == [True] * 6 + [False] * 2 + [True] * 4 + [False] * 2


def test_summary_lists_layers_outputs_and_weights():
    text = Topology.from_sizes([784, 256, 10], activation="relu").summary()
    assert "Dense(n_out=256)" in text and "ReLU()" in text and "SoftmaxCrossEntropy()" in text
    assert "200,960" in text and "total weights: 203,530" in text


def test_to_dict_is_json_and_round_trips():
    t = Topology(5, [L.Dense(4), L.LeakyReLU(0.3), L.Dense(2), L.SigmoidCrossEntropy()])
    d = json.loads(json.dumps(t.to_dict()))
    again = Topology.from_dict(d)
    assert again == t and again.n_weights == t.n_weights


@pytest.mark.parametrize("make, match", [
    (lambda: Topology(0, [L.Dense(2), L.SquaredError()]), "n_in"),
    (lambda: Topology(3, []), "at least one layer"),
    (lambda: Topology(3, [L.Dense(2)]), "last layer must be a loss"),
    (lambda: Topology(3, [L.SquaredError(), L.Dense(2), L.SquaredError()]), "only come last"),
    (lambda: Topology(3, [L.ReLU(), L.SquaredError()]), "at least one Dense"),
    (lambda: Topology(3, [L.Dense(2), "relu", L.SquaredError()]), "layer 1"),
    (lambda: Topology(3, [L.Dense(1), L.SoftmaxCrossEntropy()]).network(), "at least 2 outputs"),
    (lambda: Topology.from_sizes([3, 2]).network(block_size=0), "block_size"),
    (lambda: Topology.from_sizes([3, 2]).init_weights(scheme="xavier"), "init scheme"),
    (lambda: Topology.from_dict({"n_in": 3}), "needs 'n_in' and 'layers'"),
    (lambda: Topology.from_dict({"format": 99, "n_in": 3, "layers": []}), "format 99"),
])
def test_bad_topologies_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


HUGE = r"the network \[4, 2000000, 2000000, 3\] has 4,000,018,000,003 weights: " \
    r"32,000,144,000,024 bytes"


def test_a_network_larger_than_memory_is_refused_before_any_allocation():
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=HUGE):
            Topology.from_sizes([4, 2000000, 2000000, 3])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
