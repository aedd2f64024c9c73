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

from sparkann import stacking
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

    def _check_params(self):
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
        hidden, act = self._check_params()
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
        self.sizes_ = sizes
        self.n_features_in_ = sizes[0]
        self.weights_ = weights.astype(dtype)
        self.encoder_ = stacking.Encoder(sizes, act, stacking.split_weights(weights, sizes)[0])
        self.reconstruction_error_ = float(np.mean((self.inverse_transform(self.transform(X))
                                                    - X) ** 2))
        return self

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
