"""``Autoencoder``: a stacked autoencoder with scikit-learn's transformer interface.

Greedy layer-wise pretraining (each layer learns to reconstruct the codes of the layers below
it, :mod:`sparkann.stacking`), then optionally fine-tuning of the whole stack; every network is
trained by the same loop as :class:`sparkann.MLPRegressor`, in the native engine.
``transform`` encodes, ``inverse_transform`` decodes, and ``encoder_`` starts a classifier::

    ae = Autoencoder(hidden_layer_sizes=(256, 64)).fit(X_unlabelled)
    clf = MLPClassifier(hidden_layer_sizes=(256, 64), activation="logistic",
                        init=ae.encoder_).fit(X_labelled, y)
"""
import numpy as np

from sparkann import model_file, stacking
from sparkann.estimator import MLPRegressor, _activation, _MLPBase, _validate
from sparkann.hyperparams import is_int
from sparkann.layers import get_loss
from sparkann.skcompat import (BaseEstimator, TransformerMixin, check_is_fitted,
                               check_random_state)

__all__ = ["Autoencoder"]

#: the hyperparameters passed on to every network trained (MLPRegressor's meaning)
_SHARED = ("activation", "solver", "alpha", "batch_size", "learning_rate_init", "max_iter", "tol",
           "n_iter_no_change", "shuffle", "verbose", "dtype", "block_size", "n_threads")


class _Reconstruction(MLPRegressor):
    """One network trained to give back its input (targets = X): MLPRegressor's training with
    a reconstruction loss, ``"squared_error"`` (identity output) or ``"sigmoid_cross_entropy"``
    (sigmoid output, targets in [0, 1]); the objective is the engine's loss per row."""

    def _validate_params(self):
        if self.loss == "sigmoid_cross_entropy":
            _MLPBase._validate_params(self)
        else:
            super()._validate_params()

    def _loss_layer(self):
        return get_loss(self.loss)

    def _default_out_activation(self, n_outputs):
        return "logistic" if self.loss == "sigmoid_cross_entropy" else "identity"

    def _engine_loss_is_exact(self):
        return True

    def _loss_divisor(self):
        return 1


class Autoencoder(TransformerMixin, BaseEstimator):
    """Stacked autoencoder: learns codes of ``hidden_layer_sizes[-1]`` values per row.

    Parameters
    ----------
    hidden_layer_sizes : sequence of int, default (256, 64)
        Width of each encoding layer; the decoder mirrors them.
    activation : str, default "logistic"
        Activation of the hidden layers (scikit-learn's names or ours, as in MLPClassifier).
    data_in_01 : bool, default True
        True: the data lie in [0, 1]; the first layer reconstructs them through a sigmoid with
        cross-entropy. False: a linear output with half the squared error. Deeper layers
        reconstruct codes: cross-entropy for a logistic activation, else squared error.
    fine_tune : bool, default False
        After the layer-wise pretraining, train the whole stack (encoder and decoder) as one
        network on the reconstruction of X.
    solver, alpha, batch_size, learning_rate_init, max_iter, tol, n_iter_no_change, shuffle,
    verbose, dtype, block_size, n_threads
        Those of :class:`sparkann.MLPRegressor`, for each layer and for the fine-tuning.
    random_state : int, RandomState or None
        Seeds every network's initialisation and shuffling.

    Attributes
    ----------
    encoder_ : sparkann.stacking.Encoder
        The trained encoder: ``MLPClassifier(..., init=encoder_)`` starts from it.
    weights_ : ndarray
        The stack's flat weights (encoder, then decoder), the network
        ``[n_features, *hidden_layer_sizes, ..., n_features]``.
    layer_loss_curves_ : list of list of float
        The training loss of each layer's network, per epoch (the fine-tuning's is
        ``fine_tune_loss_curve_``).
    layer_reconstruction_errors_ : list of float
        Mean squared error per value with which each trained layer reconstructs its input.
    reconstruction_error_ : float
        Mean squared error per value of the whole stack's reconstruction of X.
    """

    def __init__(self, hidden_layer_sizes=(256, 64), activation="logistic", *, data_in_01=True,
                 fine_tune=False, solver="adam", alpha=0.0001, batch_size="auto",
                 learning_rate_init=0.001, max_iter=20, tol=1e-4, n_iter_no_change=10,
                 shuffle=True, random_state=None, verbose=False, dtype=None, block_size=128,
                 n_threads=None):
        vars(self).update({name: value for name, value in locals().items() if name != "self"})

    def _validate_params(self):
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if is_int(sizes) else sizes
        try:
            sizes = list(sizes)
        except TypeError:
            sizes = None
        if not sizes or not all(is_int(s) and s > 0 for s in sizes):
            raise ValueError("hidden_layer_sizes must be a non-empty sequence of positive "
                             f"integers, received {self.hidden_layer_sizes!r}")
        for name in ("data_in_01", "fine_tune"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, received "
                                 f"{getattr(self, name)!r}")
        return [int(s) for s in sizes], _activation(self.activation).type_name

    def _network(self, loss, hidden, rng, init="auto"):
        params = {name: getattr(self, name) for name in _SHARED}
        return _Reconstruction(loss, hidden_layer_sizes=tuple(hidden), init=init,
                               random_state=int(rng.randint(2**31 - 1)), **params)

    def fit(self, X, y=None):
        """Pretrain layer by layer on the rows of X (y is ignored), then fine-tune if asked."""
        hidden, act = self._validate_params()
        X = _validate(self, X, dtype=(np.float64, np.float32), reset=True)
        if self.data_in_01:
            outside = (X < 0) | (X > 1)
            if outside.any():
                r, c = np.argwhere(outside)[0]
                raise ValueError(f"X: row {r}, column {c} is {float(X[r, c])!r}; "
                                 "data_in_01=True needs every value in [0, 1] (scale the "
                                 "data, or set data_in_01=False for a linear output)")
        sizes = [X.shape[1]] + hidden
        rng = check_random_state(self.random_state)
        self.layer_loss_curves_, self.layer_reconstruction_errors_ = [], []
        layer_weights, codes = [], X
        for i, h in enumerate(hidden):
            net = self._network(stacking.layer_loss(i, self.data_in_01, act), [h], rng)
            net.fit(codes, codes)
            self.layer_loss_curves_.append(list(net.loss_curve_))
            self.layer_reconstruction_errors_.append(
                float(np.mean((net.predict(codes) - codes) ** 2)))
            layer_weights.append(net.weights_)
            dtype = net.weights_.dtype
            codes = stacking.Encoder(sizes[i:i + 2], act, net.weights_[:sizes[i] * h + h]) \
                .encode(codes, dtype, self.block_size)
        weights = stacking.stack_weights(layer_weights, sizes)
        self.fine_tune_loss_curve_ = []
        if self.fine_tune:
            net = self._network(stacking.layer_loss(0, self.data_in_01, act),
                                stacking.stack_sizes(sizes)[1:-1], rng,
                                stacking.StartWeights(weights))
            net.fit(X, X)
            self.fine_tune_loss_curve_ = list(net.loss_curve_)
            weights = net.weights_.astype(np.float64)
        self._set_weights(sizes, act, weights.astype(dtype))
        self.reconstruction_error_ = float(np.mean((self.inverse_transform(self.transform(X))
                                                    - X) ** 2))
        return self

    def _set_weights(self, sizes, activation, weights):
        self.sizes_ = sizes
        self.n_features_in_ = sizes[0]
        self.weights_ = weights
        self.encoder_ = stacking.Encoder(sizes, activation,
                                         stacking.split_weights(weights, sizes)[0])

    # ------------------------------------------------------------------- persistence
    # model_file writes what it reads from MLPClassifier/MLPRegressor; an autoencoder's
    # network is its whole stack (input to reconstruction) and its history its curves

    def _check_fitted(self):
        check_is_fitted(self, "weights_")

    @property
    def topology_(self):
        return stacking.reconstruction_topology(self.sizes_, self.encoder_.activation,
                                                self.data_in_01)

    @property
    def n_outputs_(self):
        return self.sizes_[0]

    @property
    def n_iter_(self):
        """Epochs trained over all networks (every layer's, then the fine-tuning's)."""
        return sum(map(len, self.layer_loss_curves_)) + len(self.fine_tune_loss_curve_)

    @property
    def history_(self):
        return _Curves(self.layer_loss_curves_, self.layer_reconstruction_errors_,
                       self.fine_tune_loss_curve_, self.reconstruction_error_)

    def save(self, path):
        """Save the fitted autoencoder to the directory ``path`` (``model.json`` and
        ``weights.npz``, as the other estimators); :func:`sparkann.load` reads it back."""
        return model_file.save(self, path, {"Autoencoder": Autoencoder})

    def _restore(self, topology, weights, n_iter, history, classes=None):
        """Set the fitted state of a saved autoencoder (:func:`sparkann.persist.load`)."""
        hidden, act = self._validate_params()
        sizes = [topology.n_in] + hidden
        expected = stacking.reconstruction_topology(sizes, act, self.data_in_01)
        if topology.to_dict() != expected.to_dict():
            raise ValueError(f"the saved network {topology.layers} is not the stack of "
                             f"sizes {sizes}, activation {act!r}, data_in_01="
                             f"{self.data_in_01} its hyperparameters describe")
        if len(history.layer_loss_curves) != len(hidden) or \
                len(history.layer_reconstruction_errors) != len(hidden):
            raise ValueError(f"the history holds {len(history.layer_loss_curves)} layer "
                             f"curves for {len(hidden)} layers")
        self._set_weights(sizes, act, weights)
        self.layer_loss_curves_ = history.layer_loss_curves
        self.layer_reconstruction_errors_ = history.layer_reconstruction_errors
        self.fine_tune_loss_curve_ = history.fine_tune_loss_curve
        self.reconstruction_error_ = history.reconstruction_error
        if self.n_iter_ != n_iter:
            raise ValueError(f"'n_iter' is {n_iter}, the curves hold {self.n_iter_} epochs")

    @classmethod
    def _history_from_dict(cls, d):
        return _Curves.from_dict(d)


    def transform(self, X):
        """The codes of the rows of X, shape (n_samples, hidden_layer_sizes[-1])."""
        check_is_fitted(self, "weights_")
        X = _validate(self, X, dtype=(np.float64, np.float32), reset=False)
        return self.encoder_.encode(X, self.weights_.dtype, self.block_size)

    def inverse_transform(self, Z):
        """The reconstructions, shape (n_samples, n_features), of the codes Z."""
        check_is_fitted(self, "weights_")
        Z = np.atleast_2d(np.asarray(Z, dtype=self.weights_.dtype))
        if Z.ndim != 2 or Z.shape[1] != self.sizes_[-1]:
            raise ValueError(f"inverse_transform: codes must have shape (n_samples, "
                             f"{self.sizes_[-1]}), received {Z.shape}")
        if not np.isfinite(Z).all():
            r, c = np.argwhere(~np.isfinite(Z))[0]
            raise ValueError(f"inverse_transform: codes row {r}, column {c} is "
                             f"{float(Z[r, c])!r}; "
                             "values must be finite")
        topology = stacking.decoder_topology(self.sizes_, self.encoder_.activation,
                                             self.data_in_01)
        net = topology.network(dtype=self.weights_.dtype,
                               block_size=max(1, min(self.block_size, len(Z))))
        decoder = stacking.split_weights(self.weights_, self.sizes_)[1]
        return net.forward(np.ascontiguousarray(decoder), np.ascontiguousarray(Z), raw=True)


class _Curves:
    """What a fitted :class:`Autoencoder` records about its training, as saved in
    ``model.json``'s ``history``."""

    _LISTS = ("layer_loss_curves", "layer_reconstruction_errors", "fine_tune_loss_curve")

    def __init__(self, layer_loss_curves, layer_reconstruction_errors, fine_tune_loss_curve,
                 reconstruction_error):
        self.layer_loss_curves = [[float(v) for v in c] for c in layer_loss_curves]
        self.layer_reconstruction_errors = [float(v) for v in layer_reconstruction_errors]
        self.fine_tune_loss_curve = [float(v) for v in fine_tune_loss_curve]
        self.reconstruction_error = float(reconstruction_error)

    def to_dict(self):
        return {name: getattr(self, name) for name in (*self._LISTS, "reconstruction_error")}

    @classmethod
    def from_dict(cls, d):
        def numbers(x):
            return isinstance(x, list) and all(isinstance(v, (int, float))
                                               and not isinstance(v, bool) for v in x)

        ok = (isinstance(d, dict) and set(d) == set(cls._LISTS) | {"reconstruction_error"}
              and isinstance(d["layer_loss_curves"], list)
              and all(numbers(c) for c in d["layer_loss_curves"])
              and numbers(d["layer_reconstruction_errors"]) and numbers(d["fine_tune_loss_curve"])
              and numbers([d["reconstruction_error"]]))
        if not ok:
            raise ValueError(f"'history' of an Autoencoder needs the lists {list(cls._LISTS)} "
                             f"and the number 'reconstruction_error', received {str(d)[:200]}")
        return cls(**d)
