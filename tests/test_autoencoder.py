"""The stacked autoencoder on one machine: its reconstruction losses against finite
differences and PyTorch, training, transform / inverse_transform, scikit-learn compatibility,
an encoder-initialised classifier, and bad input."""
import numpy as np
import pytest
from test_core_gradients import finite_difference_check, sample_indices
from test_core_reference import assert_close, engine_results, torch_results

from sparkann import Autoencoder, MLPClassifier, stacking
from sparkann.persist import load

SIZES = [9, 6, 4]


def unit_data(rows=300, n=12, seed=0):
    """Rows in [0, 1] with structure an autoencoder can learn: 3 hidden factors."""
    rng = np.random.default_rng(seed)
    factors = rng.uniform(size=(rows, 3))
    mix = rng.uniform(-2, 2, size=(3, n))
    return 1 / (1 + np.exp(-(factors @ mix)))


def reconstruction_case(data_in_01, activation, seed=0, rows=37):
    """The whole stack as the fine-tuning trains it, float64 weights and inputs as targets."""
    topology = stacking.stack_topology(SIZES, activation, data_in_01)
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(rows, SIZES[0])) if data_in_01 else rng.normal(size=(rows, SIZES[0]))
    w = rng.normal(scale=0.6, size=topology.n_weights)
    return topology, w, np.ascontiguousarray(X)


LOSS_CASES = [(True, "sigmoid"), (False, "sigmoid"), (False, "tanh")]
LOSS_IDS = ["sigmoid-cross-entropy", "linear-squared-error", "linear-squared-error-tanh"]


@pytest.mark.parametrize("data_in_01, activation", LOSS_CASES, ids=LOSS_IDS)
def test_reconstruction_gradient_matches_finite_differences(data_in_01, activation):
    topology, w, X = reconstruction_case(data_in_01, activation)
    assert topology.loss == ("sigmoid_cross_entropy" if data_in_01 else "squared_error")
    net = topology.network(dtype="float64", block_size=16)   # 37 rows: blocks of 16, 16, 5
    indices = sample_indices(net, np.random.default_rng(1), per_w=6, per_b=3)
    assert finite_difference_check(net, w, X, X, indices) == len(indices)


@pytest.mark.parametrize("data_in_01, activation", LOSS_CASES, ids=LOSS_IDS)
def test_reconstruction_matches_pytorch(data_in_01, activation):
    pytest.importorskip("torch")
    topology, w, X = reconstruction_case(data_in_01, activation, seed=2)
    spec = topology.spec()
    for dtype in ("float64", "float32"):
        net = topology.network(dtype=dtype, block_size=16)
        out, raw, loss, grad = engine_results(net, w.astype(dtype), X.astype(dtype),
                                              X.astype(dtype))
        t_out, t_raw, t_loss, t_grad = torch_results(spec, w.astype(dtype).astype(np.float64),
                                                     X.astype(dtype).astype(np.float64),
                                                     X.astype(dtype).astype(np.float64),
                                                     "float64")
        assert_close(out, t_out, dtype, "reconstruction vs torch")
        assert_close(loss, t_loss, dtype, "loss vs torch")
        assert_close(grad, t_grad, dtype, "gradient vs torch")


@pytest.mark.parametrize("data_in_01", [True, False])
def test_encoder_and_decoder_compose_to_the_stack(data_in_01):
    # transform then inverse_transform computes what the trained stack's network outputs
    topology, w, X = reconstruction_case(data_in_01, "sigmoid", seed=3)
    whole = topology.network(dtype="float64").forward(w, X)
    encoder, decoder = stacking.split_weights(w, SIZES)
    codes = stacking.Encoder(SIZES, "sigmoid", encoder).encode(X, "float64")
    back = stacking.decoder_topology(SIZES, "sigmoid", data_in_01).network(dtype="float64") \
        .forward(decoder, codes, raw=True)
    np.testing.assert_allclose(back, whole, rtol=1e-12, atol=1e-14)
    again = stacking.reconstruction_topology(SIZES, "sigmoid", data_in_01) \
        .network(dtype="float64").forward(w, X, raw=True)
    np.testing.assert_allclose(again, whole, rtol=1e-12, atol=1e-14)


def test_stack_weights_put_encoders_first_and_decoders_in_reverse():
    layer = [np.arange(2 * a * b + a + b, dtype=float) + 1000 * i
             for i, (a, b) in enumerate(zip(SIZES, SIZES[1:]))]
    w = stacking.stack_weights(layer, SIZES)
    (a, b), (c, d) = zip(SIZES, SIZES[1:])
    e0, e1 = a * b + b, c * d + d
    expected = np.concatenate([layer[0][:e0], layer[1][:e1], layer[1][e1:], layer[0][e0:]])
    np.testing.assert_array_equal(w, expected)
    assert w.size == stacking.stack_topology(SIZES, "sigmoid", True).n_weights


def fitted(**params):
    params = {"hidden_layer_sizes": (6, 3), "max_iter": 40, "learning_rate_init": 0.01,
              "batch_size": 16, "random_state": 0, **params}
    return Autoencoder(**params).fit(unit_data())


def test_layers_learn_and_transform_inverts():
    X = unit_data()
    ae = fitted()
    for curve in ae.layer_loss_curves_:     # cross-entropy: its floor is the data's entropy
        assert curve[-1] < curve[0]
    baseline = float(np.mean((X - X.mean(axis=0)) ** 2))   # the best constant reconstruction
    assert ae.layer_reconstruction_errors_[0] < 0.5 * baseline
    assert ae.reconstruction_error_ < baseline
    codes = ae.transform(X)
    assert codes.shape == (300, 3) and ((codes >= 0) & (codes <= 1)).all()
    back = ae.inverse_transform(codes)
    assert back.shape == X.shape
    assert np.mean((back - X) ** 2) == pytest.approx(ae.reconstruction_error_, rel=1e-6)
    np.testing.assert_array_equal(ae.fit_transform(X), codes)   # same seed, same result


def test_fine_tuning_lowers_the_stack_error():
    plain, tuned = fitted(), fitted(fine_tune=True)
    assert tuned.fine_tune_loss_curve_[-1] < tuned.fine_tune_loss_curve_[0]
    assert tuned.reconstruction_error_ < plain.reconstruction_error_


def test_linear_output_for_data_outside_0_1():
    X = (unit_data() - 0.5) * 6
    ae = Autoencoder(hidden_layer_sizes=(6,), data_in_01=False, activation="tanh",
                     max_iter=60, learning_rate_init=0.01, batch_size=16,
                     random_state=0).fit(X)
    assert ae.reconstruction_error_ < np.mean((X - X.mean(axis=0)) ** 2)   # the best constant
    assert ae.inverse_transform(ae.transform(X)).min() < 0   # no sigmoid on the output


def test_scikit_learn_clone_and_pipeline():
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline

    ae = Autoencoder(hidden_layer_sizes=(5,), max_iter=5, random_state=1)
    assert clone(ae).get_params() == ae.get_params()
    X, y = unit_data(), (unit_data()[:, 0] > 0.5).astype(int)
    pipe = make_pipeline(ae, MLPClassifier(hidden_layer_sizes=(4,), max_iter=5,
                                           random_state=0)).fit(X, y)
    assert pipe.predict(X).shape == (300,)


def test_encoder_initialises_a_classifier():
    from sklearn.base import clone

    X = unit_data()
    y = (X[:, 0] > np.median(X[:, 0])).astype(int) + (X[:, 1] > np.median(X[:, 1]))
    ae = fitted()
    # a step of ~0 keeps the starting weights: the encoder's, then the output layer as "auto"
    # draws it with the same random_state
    start = dict(hidden_layer_sizes=(6, 3), activation="logistic", solver="gd", max_iter=1,
                 learning_rate_init=1e-300, random_state=5)
    from_encoder = clone(MLPClassifier(init=ae.encoder_, **start)).fit(X, y)
    auto = MLPClassifier(**start).fit(X, y)
    k = ae.encoder_.weights.size
    np.testing.assert_array_equal(from_encoder.weights_[:k], ae.encoder_.weights)
    np.testing.assert_array_equal(from_encoder.weights_[k:], auto.weights_[k:])
    assert not np.array_equal(from_encoder.weights_[:k], auto.weights_[:k])


def test_encoder_initialised_classifier_saves_and_loads(tmp_path):
    X = unit_data()
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(6, 3, 2), activation="logistic", max_iter=3,
                        init=fitted().encoder_, random_state=0).fit(X, y)
    clf.save(tmp_path / "m")
    again = load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("params, match", [
    ({"hidden_layer_sizes": ()}, "hidden_layer_sizes must be a non-empty sequence"),
    ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes must be a non-empty sequence"),
    ({"data_in_01": "yes"}, "data_in_01 must be True or False"),
    ({"fine_tune": 1}, "fine_tune must be True or False"),
    ({"activation": "nope"}, "unknown activation 'nope'"),
    ({"solver": "newton"}, "solver must be one of"),
])
def test_bad_parameters_are_named(params, match):
    with pytest.raises(ValueError, match=match):
        Autoencoder(**params).fit(unit_data(rows=20))


def test_bad_data_is_named():
    X = unit_data(rows=20)
    X[4, 7] = 1.5
    with pytest.raises(ValueError, match=r"X: row 4, column 7 is 1.5; data_in_01=True"):
        Autoencoder(hidden_layer_sizes=(3,)).fit(X)
    X[4, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Autoencoder(hidden_layer_sizes=(3,), data_in_01=False).fit(X)
    ae = fitted(max_iter=2)
    with pytest.raises(ValueError, match="12 features"):
        ae.transform(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"codes must have shape \(n_samples, 3\)"):
        ae.inverse_transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="row 1, column 0 is inf"):
        ae.inverse_transform(np.array([[0.0, 0, 0], [np.inf, 0, 0]]))


def test_encoder_that_does_not_start_the_network_is_refused():
    X, y = unit_data(rows=40), np.arange(40) % 2
    enc = fitted(max_iter=2).encoder_
    for params in ({"hidden_layer_sizes": (5, 3)}, {"hidden_layer_sizes": (6, 3)},
                   {"hidden_layer_sizes": (6,), "activation": "logistic"}):
        params = {"activation": "relu", **params}
        with pytest.raises(ValueError, match="must be the first layers of the network"):
            MLPClassifier(init=enc, max_iter=1, **params).fit(X, y)
    with pytest.raises(ValueError, match="init must be one of"):
        MLPClassifier(init=object(), max_iter=1).fit(X, y)


def test_autoencoder_saves_and_loads(tmp_path):
    import json

    from sparkann import ModelFileError, model_file
    X = unit_data()
    ae = fitted(max_iter=3, fine_tune=True)
    ae.save(tmp_path / "ae")
    again = load(tmp_path / "ae")
    assert isinstance(again, Autoencoder) and again.get_params() == ae.get_params()
    np.testing.assert_array_equal(again.weights_, ae.weights_)
    np.testing.assert_array_equal(again.transform(X), ae.transform(X))
    codes = ae.transform(X)
    np.testing.assert_array_equal(again.inverse_transform(codes), ae.inverse_transform(codes))
    for name in ("layer_loss_curves_", "layer_reconstruction_errors_", "fine_tune_loss_curve_",
                 "reconstruction_error_", "sizes_", "n_iter_"):
        assert getattr(again, name) == getattr(ae, name), name
    assert repr(again.encoder_) == repr(ae.encoder_)
    # the saved stack must be the one the hyperparameters describe (the digest is redone, so
    # only the consistency check can refuse it)
    path = tmp_path / "ae" / model_file.META_FILE
    meta = json.loads(path.read_text())
    meta["params"]["hidden_layer_sizes"] = [6, 2]
    meta[model_file.DIGEST_KEY] = model_file.meta_digest(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"not the stack of sizes \[12, 6, 2\]"):
        load(tmp_path / "ae")
