"""Single-machine estimators with scikit-learn conventions: MLPClassifier and MLPRegressor.

scikit-learn is optional: when it is installed the estimators are real scikit-learn estimators
(``clone``, ``Pipeline``, ``GridSearchCV``); without it they keep the same methods.

The objective minimised is the mean loss over rows plus ``alpha / 2 * ||W||^2`` over the dense
weight matrices (biases are not regularised)::

    J(w) = (1 / n) * sum_i loss(x_i, y_i; w) + alpha / 2 * sum(W ** 2)

For mini-batch solvers ``n`` is the batch size and the gradient is the batch mean.
"""
import copy
import inspect
import math

import numpy as np

from sparkann import hyperparams
from sparkann import layers as L
from sparkann import model_file
from sparkann.hyperparams import is_int, is_number
from sparkann.optim import (Cosine, DivergenceError, EarlyStopping, History, InverseSqrt, gd,
                            lbfgs, mean_objective)
from sparkann.solvers import get_solver, make_optimizer
from sparkann.topology import Topology

try:  # scikit-learn is an optional dependency
    from sklearn.base import BaseEstimator as _SkBase
    from sklearn.base import ClassifierMixin as _SkClassifier
    from sklearn.base import RegressorMixin as _SkRegressor
except ImportError:  # scikit-learn absent: plain bases, same methods
    class _SkBase:
        pass

    class _SkClassifier:
        _estimator_type = "classifier"

    class _SkRegressor:
        _estimator_type = "regressor"

SCHEDULE_NAMES = ("constant", "cosine", "inverse_sqrt")


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit``."""


# ---------------------------------------------------------------------------- validation

def _where(bad, ndim):
    return f"row {bad[0]}, column {bad[1]}" if ndim == 2 else f"row {bad[0]}"


def _check_finite(a, name, dtype=None):
    """Refuse NaN, infinities and (with ``dtype``) values that overflow ``dtype``."""
    if a.size and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name}: {_where(bad, a.ndim)} is {a[tuple(bad)]}, expected a finite "
                         "number")
    if dtype is not None and a.size:
        largest = np.finfo(dtype).max
        too_large = np.abs(a) > largest
        if too_large.any():
            bad = np.argwhere(too_large)[0]
            raise ValueError(f"{name}: {_where(bad, a.ndim)} is {a[tuple(bad)].item()!r}, too "
                             f"large for {np.dtype(dtype)} (largest {float(largest):.4g})")


#: class indices must fit int64
_MAX_CLASS = 2**63


def _first_bad_label(y):
    """Index of the first label that is not a class index in [0, 2**63), or None."""
    if y.dtype.kind == "O":  # Python ints beyond int64, or mixed objects
        for i, v in enumerate(y.tolist()):
            if not (is_number(v) and 0 <= v < _MAX_CLASS and v == int(v)):
                return i
        return None
    bad = y < 0
    if y.dtype.kind == "f":
        bad |= ~np.isfinite(y) | (y >= _MAX_CLASS)
        with np.errstate(invalid="ignore"):
            bad |= y != np.round(y)
    elif y.dtype.kind == "u":
        bad |= y >= np.uint64(_MAX_CLASS)
    return int(np.argmax(bad)) if bad.any() else None


def _as_matrix(X, dtype, name="X"):
    """X as a C-contiguous 2-D array of ``dtype``; clear errors for what cannot be one."""
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):  # scipy.sparse
        X = X.toarray()
    try:
        X = np.asarray(X)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name}: cannot be read as a 2-D numeric array ({e})") from None
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows, features), received shape "
                         f"{X.shape}" + (" (reshape 1-D data with X.reshape(-1, 1))"
                                         if X.ndim == 1 else ""))
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name}: empty data of shape {X.shape}; need at least one row and "
                         "one feature")
    if X.dtype.kind not in "biuf":
        try:
            X = X.astype(np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"{name}: expected numbers, received values of type {X.dtype}"
                             ) from None
    X = np.ascontiguousarray(X, dtype=dtype)
    _check_finite(X, name)
    return X


class _MLPBase:
    """Parameters, training loops and prediction shared by the classifier and the regressor."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", layers=None,
                 solver="adam", alpha=0.0, batch_size="auto", learning_rate=None,
                 lr_schedule=None, momentum=0.9, nesterov=False, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, max_iter=200, tol=1e-4, early_stopping=False,
                 validation_fraction=0.1, patience=10, init="auto", shuffle=True,
                 dtype="float32", block_size=128, seed=None, n_threads=None, verbose=False,
                 warm_start=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.layers = layers
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.init = init
        self.shuffle = shuffle
        self.dtype = dtype
        self.block_size = block_size
        self.seed = seed
        self.n_threads = n_threads
        self.verbose = verbose
        self.warm_start = warm_start

    # -------------------------------------------------------------- scikit-learn protocol

    @classmethod
    def _param_names(cls):
        return [n for n in inspect.signature(_MLPBase.__init__).parameters if n != "self"]

    def get_params(self, deep=True):
        """The constructor parameters, as scikit-learn expects."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor parameters; unknown names are an error."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters: {valid}")
            setattr(self, name, value)
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_network", None)  # native workspace: rebuilt on demand
        return state

    def __repr__(self):
        defaults = {n: p.default for n, p in
                    inspect.signature(_MLPBase.__init__).parameters.items() if n != "self"}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not (isinstance(v, type(defaults[k])) and v == defaults[k])]
        return f"{type(self).__name__}({', '.join(changed)})"

    # ------------------------------------------------------------------ hyperparameters

    def _validate_params(self):
        """Check every hyperparameter; raise ValueError naming the first bad one."""
        p = self.get_params()
        hyperparams.check(p)
        if p["layers"] is None:
            sizes = p["hidden_layer_sizes"]
            sizes = (sizes,) if is_int(sizes) else sizes
            try:
                sizes = list(sizes)
            except TypeError:
                raise ValueError("hidden_layer_sizes must be a sequence of positive integers, "
                                 f"received {p['hidden_layer_sizes']!r}") from None
            for i, s in enumerate(sizes):
                if not is_int(s) or s <= 0:
                    raise ValueError(f"hidden_layer_sizes[{i}] must be a positive integer "
                                     f"(a layer needs at least one unit), received {s!r}")
            L.get_activation(p["activation"])  # raises for an unknown name
        else:
            if not isinstance(p["layers"], (list, tuple)) or len(p["layers"]) == 0:
                raise ValueError("layers must be a non-empty list of sparkann layers (the hidden "
                                 f"layers; the output layer is added), received {p['layers']!r}")
            for i, layer in enumerate(p["layers"]):
                if not isinstance(layer, L.Layer) or layer.is_loss:
                    raise ValueError(f"layers[{i}] must be a hidden sparkann layer (Dense, an "
                                     f"activation or a Python layer), received {layer!r}")
        schedule = p["lr_schedule"]
        if not (schedule is None or schedule in SCHEDULE_NAMES
                or (callable(schedule) and not isinstance(schedule, str))):
            raise ValueError(f"lr_schedule must be one of {SCHEDULE_NAMES}, a sparkann.optim."
                             f"Schedule or a callable step -> multiplier, received {schedule!r}")
        if p["nesterov"] and get_solver(p["solver"]).name == "sgd" and p["momentum"] == 0:
            raise ValueError("nesterov=True needs momentum > 0")

    def _hidden_layers(self):
        if self.layers is not None:
            # fresh objects, so fitted estimators never share layer instances
            return copy.deepcopy(list(self.layers))
        sizes = (self.hidden_layer_sizes,) if is_int(self.hidden_layer_sizes) \
            else self.hidden_layer_sizes
        hidden = []
        for n in sizes:
            hidden += [L.Dense(int(n)), L.get_activation(self.activation)]
        return hidden

    def _init_scheme(self, topology):
        if self.init != "auto":
            return self.init
        relu_like = any(isinstance(x, (L.ReLU, L.LeakyReLU)) for x in topology.layers)
        return "he" if relu_like else "spark"

    # ------------------------------------------------------------------ state and engine

    def _check_fitted(self):
        if not hasattr(self, "weights_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _net(self):
        key = (id(self.topology_), str(np.dtype(self.dtype)), self.block_size)
        if getattr(self, "_network_key", None) != key or getattr(self, "_network", None) is None:
            self._network = self.topology_.network(dtype=self.dtype, block_size=self.block_size)
            self._network_key = key
        return self._network

    def _start(self, n_features, n_outputs):
        """Build the topology and initial weights for a fresh fit."""
        self.topology_ = Topology(n_features, self._hidden_layers()
                                  + [L.Dense(n_outputs), self._loss_layer()])
        self.weights_ = self.topology_.init_weights(
            seed=self.seed, scheme=self._init_scheme(self.topology_), dtype=self.dtype)
        self.n_features_in_ = n_features
        self.n_outputs_ = n_outputs
        self.history_ = History()
        self.n_iter_ = 0
        self._optimizer = None
        self._l2_mask = self.topology_.l2_mask()

    def _check_X(self, X):
        X = _as_matrix(X, self.dtype)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted "
                             f"with {self.n_features_in_} features")
        return X

    # ------------------------------------------------------------------------ objective

    def _objective(self, w, X, y, grad):
        """Mean loss + L2 penalty over (X, y) at w; the gradient is written into grad."""
        loss_sum, n = self._net().loss_grad(w, X, y, grad, zero=True)
        return mean_objective(loss_sum, grad, n, w, self.alpha, self._l2_mask)

    def _validation(self, w, X_val, y_val):
        if X_val is None:
            return math.nan, math.nan
        out = self._net().forward(w, X_val)
        return self._loss_from_output(out, y_val), self._metric_from_output(out, y_val)

    # -------------------------------------------------------------------------- training

    def _fit(self, X, y, incremental=False):
        self._validate_params()
        if incremental and not get_solver(self.solver).mini_batch:
            raise ValueError(f"partial_fit needs a mini-batch solver ('sgd' or 'adam'), "
                             f"solver is {self.solver!r}")
        X = _as_matrix(X, self.dtype)
        y = self._check_y(y, X.shape[0])
        fresh = not hasattr(self, "weights_") or (not incremental and not self.warm_start)
        if not fresh and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted "
                             f"with {self.n_features_in_} features")
        if fresh:
            self._start(X.shape[1], self._n_outputs(y))
        else:
            self._check_outputs(y)
        y = self._encode(y)
        if not incremental:
            self._optimizer = None  # like scikit-learn: each fit starts a new optimizer
        X_val = y_val = None
        if self.early_stopping and not incremental:
            X, y, X_val, y_val = self._split(X, y)
        if self.weights_.dtype != np.dtype(self.dtype):
            self.weights_ = self.weights_.astype(self.dtype)
        self._network = None
        self._net()

        import ann_core

        previous_threads = (ann_core.set_blas_threads(self.n_threads)
                            if self.n_threads is not None else None)
        try:
            if get_solver(self.solver).mini_batch:
                self._fit_mini_batch(X, y, X_val, y_val, epochs=1 if incremental
                                     else self.max_iter)
            else:
                self._fit_full_batch(X, y, X_val, y_val)
        finally:
            if previous_threads is not None:
                ann_core.set_blas_threads(previous_threads)
        return self

    def _split(self, X, y):
        rng = np.random.default_rng(None if self.seed is None else self.seed + 2)
        n = X.shape[0]
        n_val = max(1, int(round(self.validation_fraction * n)))
        if n - n_val < 1:
            raise ValueError(f"early_stopping needs at least 2 rows to split off a validation "
                             f"set; received {n}")
        perm = rng.permutation(n)
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        return X[train], y[train], X[val], y[val]

    def _progress(self, total, unit):
        from tqdm.auto import tqdm

        return tqdm(total=total, unit=unit, disable=not self.verbose, leave=False,
                    desc=type(self).__name__)

    def _record(self, loss, w, X_val, y_val, bar):
        val_loss, val_metric = self._validation(w, X_val, y_val)
        self.history_.append(loss, val_loss, val_metric)
        self.loss_ = loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4g}", **({} if math.isnan(val_metric)
                                               else {"val": f"{val_metric:.4g}"}))
        return val_loss

    def _fit_full_batch(self, X, y, X_val, y_val):
        w = self.weights_.copy()
        grad = np.empty_like(w)
        stopper = EarlyStopping(self.tol, self.patience) if X_val is not None else None

        def fun_grad(w64):
            w[...] = w64
            return self._objective(w, X, y, grad), grad

        with self._progress(self.max_iter, "iter") as bar:
            def callback(iteration, w64, loss):
                self.n_iter_ += 1
                val_loss = self._record(loss, w64.astype(self.dtype), X_val, y_val, bar)
                if stopper is not None and stopper.update(val_loss, w64.astype(self.dtype)):
                    raise StopIteration

            try:
                if get_solver(self.solver).name == "lbfgs":
                    result = lbfgs(fun_grad, self.weights_, max_iter=self.max_iter,
                                   tol=self.tol, callback=callback)
                else:
                    result = gd(fun_grad, self.weights_, step_size=self._lr(),
                                max_iter=self.max_iter, tol=self.tol, callback=callback,
                                schedule=self._schedule(self.max_iter))
            except DivergenceError as e:
                self._diverged(e, e.weights)
        self.weights_ = result.x.astype(self.dtype)
        self.solver_message_ = str(result.message)
        if stopper is not None and stopper.best_weights is not None:
            self.weights_ = stopper.best_weights.astype(self.dtype)

    def _lr(self):
        return self.learning_rate if self.learning_rate is not None \
            else get_solver(self.solver).learning_rate

    def _schedule(self, total_steps):
        """The schedule object; names cover the whole run (``max_iter`` epochs/iterations)."""
        if self.lr_schedule == "constant":
            return None
        if self.lr_schedule == "cosine":
            return Cosine(total_steps)
        if self.lr_schedule == "inverse_sqrt":
            return InverseSqrt()
        return self.lr_schedule

    def _make_optimizer(self, steps_per_epoch):
        schedule = self._schedule(self.max_iter * steps_per_epoch)
        return make_optimizer(self.solver, self._lr(), schedule, **self.get_params())

    def _fit_mini_batch(self, X, y, X_val, y_val, epochs):
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)
        if self._optimizer is None:
            self._optimizer = self._make_optimizer(math.ceil(n / batch))
        opt = self._optimizer
        rng = np.random.default_rng(None if self.seed is None
                                    else [self.seed, 1, self.n_iter_])
        w = self.weights_
        grad = np.empty_like(w)
        # validation loss when there is a validation set, else the training loss
        stopper = EarlyStopping(self.tol, self.patience)
        with self._progress(epochs, "epoch") as bar:
            for _ in range(epochs):
                order = rng.permutation(n) if self.shuffle else np.arange(n)
                total = 0.0
                for start in range(0, n, batch):
                    idx = order[start:start + batch]
                    Xb, yb = (X[idx], y[idx]) if self.shuffle else (X[start:start + batch],
                                                                    y[start:start + batch])
                    try:
                        loss = self._objective(w, Xb, yb, grad)
                    except FloatingPointError as e:
                        self._diverged(e, w)
                    if not math.isfinite(loss):
                        self._diverged(f"non-finite loss {loss}", w)
                    before = w.copy()
                    opt.step(w, grad)
                    if not np.isfinite(w).all():
                        self._diverged("the update produced non-finite weights", before)
                    total += loss * len(idx)
                self.n_iter_ += 1
                val_loss = self._record(total / n, w, X_val, y_val, bar)
                monitored = val_loss if X_val is not None else total / n
                if stopper.update(monitored, w) and epochs > 1:
                    break
        if X_val is not None and stopper.best_weights is not None:
            w[...] = stopper.best_weights
        self.weights_ = w

    def _diverged(self, error, last_finite):
        self.weights_ = np.asarray(last_finite, dtype=self.dtype).copy()
        raise DivergenceError(
            f"training diverged after {self.n_iter_} iterations ({error}); the estimator keeps "
            "the last finite weights. Lower learning_rate or raise alpha.",
            weights=self.weights_, iteration=self.n_iter_) from (
                error if isinstance(error, BaseException) else None)

    # ------------------------------------------------------------------------ public API

    def fit(self, X, y):
        """Train on (X, y).

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : array-like (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self
        """
        return self._fit(X, y)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing from the current weights and optimizer state.

        Only for mini-batch solvers (``"sgd"``, ``"adam"``).
        """
        if classes is not None and not hasattr(self, "weights_"):
            self._partial_classes = classes
        return self._fit(X, y, incremental=True)

    def save(self, path):
        """Save the fitted model to the directory ``path``; :func:`sparkann.persist.load` reads
        it back (the files are described in :mod:`sparkann.model_file`)."""
        return model_file.save(self, path, ESTIMATORS)

    @property
    def coefs_(self):
        """Per dense layer weight matrices (n_in, n_out): views into ``weights_``."""
        self._check_fitted()
        return [v for (i, name, o, s) in self.topology_.layout if name == "W"
                for v in [self.weights_[o:o + int(np.prod(s))].reshape(s)]]

    @property
    def intercepts_(self):
        """Per dense layer biases: views into ``weights_``."""
        self._check_fitted()
        return [self.weights_[o:o + s[0]] for (i, name, o, s) in self.topology_.layout
                if name == "b"]

    def _raw_output(self, X):
        self._check_fitted()
        return self._net().forward(self.weights_, self._check_X(X))


@L.lists_activations
class MLPClassifier(_MLPBase, _SkClassifier, _SkBase):
    """Feed-forward neural network classifier trained on one machine.

    Labels are class indices ``0 .. k-1`` (as in Spark MLlib); ``classes_`` is
    ``arange(k)`` with ``k = max(label) + 1``. The output layer is ``Dense(k)`` with a
    softmax cross-entropy loss.

    Parameters
    ----------
    hidden_layer_sizes : sequence of int, default (100,)
        Width of each hidden layer, each followed by ``activation``. ``()`` gives a linear
        (multinomial logistic) model.
    activation : str, default "relu"
        {activations} or a registered Python activation.
    layers : list of Layer, optional
        The hidden layers as objects (overrides ``hidden_layer_sizes`` and ``activation``);
        may mix native and Python layers.
    solver : {"adam", "sgd", "lbfgs", "gd"}
        "lbfgs" and "gd" are full batch (``max_iter`` iterations); "adam" and "sgd" are
        mini-batch (``max_iter`` epochs).
    alpha : float, default 0
        L2 penalty ``alpha / 2 * ||W||^2`` on the weight matrices (not the biases).
    batch_size : int or "auto"
        Mini-batch rows ("auto": min(200, n)).
    learning_rate : float, optional
        Step size; default 0.001 (adam), 0.01 (sgd), 0.03 (gd).
    lr_schedule : {"constant", "cosine", "inverse_sqrt"} or sparkann.optim.Schedule, optional
        Multiplier of the learning rate as a function of the optimizer step; "cosine"
        decays to 0 over the whole run (``max_iter`` epochs or iterations).
    momentum, nesterov : SGD momentum (default 0.9) and Nesterov's variant.
    beta1, beta2, epsilon : Adam's parameters.
    max_iter : int, default 200
        Epochs (mini-batch solvers) or iterations (full batch).
    tol, patience : float, int
        Stop when the monitored loss (validation loss with ``early_stopping``, else the
        training loss of mini-batch solvers) has not improved by ``tol`` for ``patience``
        epochs/iterations. L-BFGS also stops when the relative loss reduction is below tol.
    early_stopping : bool
        Hold out ``validation_fraction`` of the rows; keep the weights of the best
        validation loss.
    init : {"auto", "spark", "glorot", "he"}
        "auto": "he" for networks with ReLU layers, else Spark's uniform +-2.4/sqrt(n_in).
    shuffle : bool
        Shuffle rows every epoch (mini-batch solvers).
    dtype : {"float32", "float64"}
    block_size : int, default 128
        Rows the native engine computes at a time.
    seed : int, optional
        Makes initialisation, shuffling and the validation split reproducible.
    n_threads : int, optional
        BLAS threads during fit (restored afterwards); more than the machine's CPUs
        count as its CPUs.
    verbose : bool
        Show a progress bar.
    warm_start : bool
        ``fit`` continues from the previous weights.

    Attributes
    ----------
    classes_, n_features_in_, topology_, weights_ (flat), coefs_, intercepts_, history_
    (sparkann.optim.History), n_iter_, loss_.
    """

    def _loss_layer(self):
        return L.SoftmaxCrossEntropy()

    def _check_y(self, y, n_rows):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y: expected class indices of shape ({n_rows},), received shape "
                             f"{y.shape}")
        if y.shape[0] != n_rows:
            raise ValueError(f"y has {y.shape[0]} labels but X has {n_rows} rows")
        numbers_only = y.dtype.kind == "O" and all(is_int(v) or isinstance(v, float)
                                                    for v in y.tolist())
        if y.dtype.kind not in "iuf" and not numbers_only:
            raise ValueError(f"y: labels must be class indices 0, 1, ..., k-1; received values "
                             f"of type {y.dtype} such as {y[0]!r} (encode them first, e.g. with "
                             "sklearn.preprocessing.LabelEncoder)")
        i = _first_bad_label(y)
        if i is not None:
            value = y[i].item() if hasattr(y[i], "item") else y[i]
            raise ValueError(f"y: row {i} has label {value!r}, expected a class index (an "
                             "integer >= 0 that fits in int64)")
        return y.astype(np.int64)

    def _n_outputs(self, y):
        classes = getattr(self, "_partial_classes", None)
        if classes is None and len(np.unique(y)) < 2:
            raise ValueError(f"y: needs at least 2 classes, received only class {y[0]}")
        k = int(y.max()) + 1
        if classes is not None:
            classes = np.asarray(classes)
            if classes.dtype.kind not in "iu" or len(classes) < 2 or classes.min() < 0:
                raise ValueError(f"classes must be at least 2 class indices, received {classes!r}")
            k = max(k, int(classes.max()) + 1)
            del self._partial_classes
        self.classes_ = np.arange(k)
        return k

    def _check_outputs(self, y):
        if y.max() >= self.n_outputs_:
            raise ValueError(f"y has class index {int(y.max())} but the model was fitted with "
                             f"{self.n_outputs_} classes (0..{self.n_outputs_ - 1})")

    def _encode(self, y):
        return np.ascontiguousarray(y, dtype=np.int64)

    def _loss_from_output(self, p, y):
        return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-300))))

    def _metric_from_output(self, p, y):
        return float(np.mean(p.argmax(1) == y))

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes)."""
        return self._raw_output(X)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """Most probable class index for each row."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def score(self, X, y, sample_weight=None):
        """Accuracy on (X, y)."""
        correct = self.predict(X) == np.asarray(y).ravel()
        return float(np.average(correct, weights=sample_weight))


class MLPRegressor(_MLPBase, _SkRegressor, _SkBase):
    """Feed-forward neural network regressor trained on one machine.

    The output layer is ``Dense(n_targets)`` with identity output and the loss
    ``0.5 * sum((y - t)**2)`` per row (averaged over rows). Parameters as for
    :class:`MLPClassifier`; ``score`` is the coefficient of determination R^2.
    """

    def _loss_layer(self):
        return L.SquaredError()

    def _check_y(self, y, n_rows):
        try:
            y = np.asarray(y, dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError("y: regression targets must be numbers") from None
        if y.ndim not in (1, 2):
            raise ValueError(f"y: expected shape ({n_rows},) or ({n_rows}, n_targets), "
                             f"received {y.shape}")
        if y.shape[0] != n_rows:
            raise ValueError(f"y has {y.shape[0]} targets but X has {n_rows} rows")
        _check_finite(y, "y", self.dtype)
        return y

    def _n_outputs(self, y):
        self._y_1d = y.ndim == 1
        return 1 if y.ndim == 1 else y.shape[1]

    def _check_outputs(self, y):
        k = 1 if y.ndim == 1 else y.shape[1]
        if k != self.n_outputs_:
            raise ValueError(f"y has {k} targets but the model was fitted with "
                             f"{self.n_outputs_}")

    def _encode(self, y):
        return np.ascontiguousarray(y.reshape(len(y), -1), dtype=self.dtype)

    def _loss_from_output(self, out, y):
        return float(0.5 * np.mean(np.sum((out - y) ** 2, axis=1)))

    def _metric_from_output(self, out, y):
        return _r2(y, out)

    def predict(self, X):
        """Predicted targets: shape (n_samples,) if fitted on 1-D y, else (n_samples, k)."""
        out = self._raw_output(X)
        return out[:, 0] if getattr(self, "_y_1d", False) else out

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R^2 (averaged over targets)."""
        pred = self.predict(X)
        return _r2(np.asarray(y, dtype=np.float64).reshape(len(pred), -1),
                   pred.reshape(len(pred), -1), sample_weight)



#: the estimators a model file can hold, by the class name it records
ESTIMATORS = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}

def _r2(y, pred, sample_weight=None):
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    mean = np.average(y, axis=0, weights=w)
    ss_res = (w[:, None] * (y - pred) ** 2).sum(0)
    ss_tot = (w[:, None] * (y - mean) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res > 0, 0.0, 1.0))
    return float(np.mean(r2))

