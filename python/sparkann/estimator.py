"""Single-machine estimators with scikit-learn's interface: MLPClassifier and MLPRegressor.

The constructor, fitted attributes, objective and training loop are those of
``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``, so either can replace the other;
the forward and backward passes run in the native engine. Ours on top: ``layers`` (layer
objects), ``init``, ``dtype``, ``block_size``, ``n_threads``, ``dropout``, the solver ``"gd"``,
the learning-rate schedule ``"cosine"`` (or any :class:`sparkann.optim.Schedule`) and the
activations ``"leaky_relu"``, ``"softplus"``, ``"elu"``, ``"gelu"``.

The objective minimised over ``n`` rows (the batch for ``sgd``/``adam``; with sample weights
``n`` is their sum and each row's loss is weighted)::

    J(w) = (1 / n) * sum_i loss_i + alpha / (2 n) * sum(W ** 2)

over the dense weight matrices (biases are not regularised). ``loss_i`` is the cross-entropy
(softmax for several classes, logistic for two classes and for multilabel targets, summed over
the outputs), half the squared error averaged over the targets, or half the Poisson deviance
summed over the targets (``loss="poisson"``, exponential output).
"""
import copy
import inspect
import math
import warnings

import numpy as np

from sparkann import hyperparams
from sparkann import layers as L
from sparkann import model_file
from sparkann.hyperparams import is_int
from sparkann.optim import Cosine, DivergenceError, History, InverseSqrt, gd
from sparkann.skcompat import (BaseEstimator, ClassifierMixin, ConvergenceWarning,
                               NotFittedError, RegressorMixin, check_is_fitted,
                               check_random_state, check_sample_weight, column_or_1d,
                               train_test_split, type_of_target, unique_labels, validate_data)
from sparkann.solvers import get_solver, make_optimizer
from sparkann.topology import Topology

__all__ = ["MLPClassifier", "MLPRegressor", "NotFittedError", "TrainingDivergedError"]

#: learning-rate schedules by name (``learning_rate=``); a Schedule object is accepted too
LEARNING_RATES = ("constant", "invscaling", "adaptive", "cosine", "inverse_sqrt")
#: scikit-learn's activation names that differ from ours
_ACTIVATION_ALIASES = {"logistic": "sigmoid"}
_NON_FINITE = ("Solver produced non-finite parameter weights. The input data may contain "
               "large values and need to be preprocessed.")


class TrainingDivergedError(DivergenceError, ValueError):
    """Training produced non-finite weights; ``weights`` are the last finite ones."""


def _activation(name):
    if isinstance(name, str):
        name = _ACTIVATION_ALIASES.get(name, name)
    return L.get_activation(name)


def _dense(X, dtype):
    """X (validated, maybe sparse) as a C-contiguous array of ``dtype``."""
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):
        X = X.toarray()
    return np.ascontiguousarray(X, dtype=dtype)


def _validate(estimator, X, y="no_validation", **kwargs):
    """``validate_data``; a non-finite value's error also names its row and column."""
    try:
        return validate_data(estimator, X, y, **kwargs)
    except ValueError as e:
        if "NaN" not in str(e) and "infinity" not in str(e):
            raise
        for name, a in (("X", X), ("y", y)):
            try:
                a = np.asarray(a, dtype=np.float64)
            except (TypeError, ValueError):
                continue
            bad = np.argwhere(~np.isfinite(a))
            if len(bad):
                where = ", column ".join(str(i) for i in bad[0])
                raise ValueError(f"{e} ({name}: row {where} is {a[tuple(bad[0])]})") from None
        raise


def _batch_weight(n):
    """The rows (or summed sample weights) of a batch, which the objective divides by."""
    if n <= 0:
        raise ValueError("the sample weights of a batch sum to zero: nothing to learn from")
    return n


def _runs(mask):
    """``[(start, stop)]`` of the runs of True in the boolean vector ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


class _MiniBatchOnly:
    """``partial_fit`` exists only for the mini-batch solvers (``hasattr`` says so)."""

    def __init__(self, method):
        self.method = method
        self.__doc__ = method.__doc__

    def __get__(self, obj, owner=None):
        if obj is None:
            return self.method
        if obj.solver not in ("sgd", "adam"):
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{obj.solver} is not stochastic.")
        return self.method.__get__(obj, owner)


def _with_first_parameter(init, name, default):
    """The signature of ``init`` with one more positional parameter right after ``self``."""
    self_, *others = inspect.signature(init).parameters.values()
    first = inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
    return inspect.signature(init).replace(parameters=[self_, first, *others])


class _MLPBase(BaseEstimator):
    """Parameters, training loops and prediction shared by the classifier and the regressor."""

    # ------------------------------------------------------------------ hyperparameters

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 layers=None, init="auto", dtype=None, block_size=128, n_threads=None,
                 dropout=0.0):
        vars(self).update({name: value for name, value in locals().items() if name != "self"})

    def _validate_params(self):
        """Check every hyperparameter; raise ValueError naming the first bad one."""
        p = self.get_params(deep=False)
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
                    raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}: "
                                     f"hidden_layer_sizes[{i}] is {s!r}")
            _activation(p["activation"])  # raises for an unknown name
            if any(hyperparams.dropout_rates(p["dropout"], len(sizes))):
                hyperparams.check_dropout_solver(p["solver"])
        else:
            if not isinstance(p["layers"], (list, tuple)) or len(p["layers"]) == 0:
                raise ValueError("layers must be a non-empty list of sparkann layers (the hidden "
                                 f"layers; the output layer is added), received {p['layers']!r}")
            for i, layer in enumerate(p["layers"]):
                if not isinstance(layer, L.Layer) or layer.is_loss:
                    raise ValueError(f"layers[{i}] must be a hidden sparkann layer (Dense, an "
                                     f"activation or a Python layer), received {layer!r}")
            if p["dropout"] != 0:
                raise ValueError(f"dropout applies to hidden_layer_sizes; with layers, put "
                                 f"Dropout layers in the list, received dropout={p['dropout']!r}")
            if any(isinstance(layer, L.Dropout) and layer.rate for layer in p["layers"]):
                hyperparams.check_dropout_solver(p["solver"], "a Dropout layer")
        rate = p["learning_rate"]
        if not (isinstance(rate, str) and rate in LEARNING_RATES
                or (callable(rate) and not isinstance(rate, str))):
            raise ValueError(f"learning_rate must be one of {LEARNING_RATES}, a sparkann.optim."
                             f"Schedule or a callable step -> multiplier, received {rate!r}")

    def _hidden_layers(self):
        if self.layers is not None:
            # fresh objects, so fitted estimators never share layer instances
            return copy.deepcopy(list(self.layers))
        sizes = (self.hidden_layer_sizes,) if is_int(self.hidden_layer_sizes) \
            else self.hidden_layer_sizes
        return L.with_dropout([[L.Dense(int(n)), _activation(self.activation)] for n in sizes],
                              hyperparams.dropout_rates(self.dropout, len(sizes)))

    # ------------------------------------------------------------------ state and engine

    def _net(self):
        # a bfloat16 network computes on the float32 weights
        dtype = "bfloat16" if str(self.dtype) == "bfloat16" else str(self.weights_.dtype)
        key = (id(self.topology_), dtype, self.block_size)
        if getattr(self, "_network_key", None) != key or getattr(self, "_network", None) is None:
            self._network = self.topology_.network(dtype=dtype, block_size=self.block_size)
            self._network_key = key
        return self._network

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state if isinstance(state, dict) else self.__dict__)
        state.pop("_network", None)  # native workspace: rebuilt on demand
        state.pop("_network_key", None)
        return state

    def _fit_dtype(self, X):
        """The network's dtype: ``dtype`` when set, else X's (float32 stays float32)."""
        if self.dtype is not None:
            return np.dtype(hyperparams.array_dtype(self.dtype))
        return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)

    def _start(self, n_features, n_outputs, out_activation=None, dtype=None):
        """Build the topology and initial weights for a fresh fit."""
        self.out_activation_ = out_activation or self._default_out_activation(n_outputs)
        self.topology_ = Topology(n_features, self._hidden_layers()
                                  + [L.Dense(n_outputs), self._loss_layer()])
        self.weights_ = self._initial_weights(
            np.dtype(dtype or hyperparams.array_dtype(self.dtype or "float32")))
        self._dropout_seed = None
        self.n_features_in_ = n_features
        self.n_outputs_ = n_outputs
        self.n_layers_ = sum(isinstance(x, L.Dense) for x in self.topology_.layers) + 1
        self.history_ = History()
        self.loss_curve_ = []
        self.n_iter_ = 0
        self._reset_stopping()
        self._l2_runs = _runs(self.topology_.l2_mask())

    def _reset_stopping(self):
        """The counters of scikit-learn's stopping rule, as a fresh fit starts them."""
        self.t_ = 0
        self._no_improvement_count = 0
        if get_solver(self.solver).mini_batch and self.early_stopping:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = min(self.loss_curve_, default=np.inf)
        self._best_weights = None

    def _initial_weights(self, dtype):
        rng = getattr(self, "_random_state", None) or check_random_state(self.random_state)
        if not isinstance(self.init, str):
            # a trained encoder (or another start): the rest starts as "auto" would, with the
            # same draws as without it, then the encoder's layers are written over theirs
            w = self._auto_weights(rng)
            return self.init.initialise(self.topology_, w).astype(dtype)
        if self.init != "auto":
            return self.topology_.init_weights(seed=int(rng.randint(2**31 - 1)),
                                               scheme=self.init, dtype=dtype)
        return self._auto_weights(rng).astype(dtype)

    def _auto_weights(self, rng):
        """The "auto" start as float64 weights."""
        # scikit-learn's: W and b uniform in +-sqrt(f / (fan_in + fan_out)), f = 2 for a
        # logistic network, else 6; layers without a matrix get the layer's own "glorot"
        # (the same draws from the same RandomState as scikit-learn: equal random_state, equal
        # initial weights); parameters of other layers get their own fixed "glorot" start
        factor = 2.0 if self.activation == "logistic" and self.layers is None else 6.0
        w = self.topology_.init_weights(seed=0, scheme="glorot", dtype=np.float64)
        for (W, b) in self._dense_views(w):
            bound = math.sqrt(factor / sum(W.shape))
            W[...] = rng.uniform(-bound, bound, W.shape)
            b[...] = rng.uniform(-bound, bound, b.shape)
        return w

    def _restore(self, topology, weights, n_iter, history, classes=None):
        """Set the fitted state of a saved model (:func:`sparkann.persist.load`)."""
        last = topology.layers[-1]
        if isinstance(self, MLPClassifier):
            self.classes_ = np.asarray(classes)
            self._multilabel = isinstance(last, L.SigmoidCrossEntropy) and topology.n_out > 1
            self.out_activation_ = ("softmax" if isinstance(last, L.SoftmaxCrossEntropy)
                                    else "logistic")
        else:
            self.out_activation_ = self._default_out_activation(topology.n_out)
        self.topology_ = topology
        self.weights_ = weights
        self.n_features_in_ = topology.n_in
        self.n_outputs_ = topology.n_out
        self.n_layers_ = sum(isinstance(x, L.Dense) for x in topology.layers) + 1
        self.n_iter_ = int(n_iter)
        self.history_ = history
        self.loss_curve_ = list(history.loss)
        if self.loss_curve_:
            self.loss_ = self.loss_curve_[-1]
        self._reset_stopping()
        self._l2_runs = _runs(topology.l2_mask())
        self._optimizer = None

    def _dense_views(self, w):
        """(W, b) views into the flat vector ``w``, one pair per dense layer."""
        views, pending = [], None
        for (_, name, offset, shape) in self.topology_.layout:
            size = int(np.prod(shape))
            view = w[offset:offset + size].reshape(shape)
            if name == "W":
                pending = view
            elif name == "b" and pending is not None:
                views.append((pending, view))
                pending = None
        return views

    def _views(self, which):
        self._check_fitted()
        return [pair[which] for pair in self._dense_views(self.weights_)]

    def _set_views(self, values, which, name):
        views = self._views(which)
        if len(values) != len(views):
            raise ValueError(f"{name}: expected {len(views)} arrays, received {len(values)}")
        for i, (view, value) in enumerate(zip(views, values)):
            value = np.asarray(value)
            if value.shape != view.shape:
                raise ValueError(f"{name}[{i}]: expected shape {view.shape}, received "
                                 f"{value.shape}")
            view[...] = value

    coefs_ = property(lambda self: self._views(0),
                      lambda self, values: self._set_views(values, 0, "coefs_"),
                      doc="Weight matrices (n_in, n_out), one per dense layer: views into "
                          "``weights_`` (assigning copies the values in).")
    intercepts_ = property(lambda self: self._views(1),
                           lambda self, values: self._set_views(values, 1, "intercepts_"),
                           doc="Bias vectors, one per dense layer: views into ``weights_``.")

    def _check_fitted(self):
        if "weights_" not in vars(self):
            check_is_fitted(self, "weights_")

    # ------------------------------------------------------------------------ objective

    def _objective(self, w, X, y, grad, sw=None, key=None):
        """J(w) over the rows of X (see the module docstring); its gradient into grad.
        ``key``: where dropout draws its masks (``_dropout_key``), None without dropout."""
        return self._mean_objective(*self._summed_loss_grad(w, X, y, grad, sw, key), w)

    def _summed_loss_grad(self, w, X, y, grad, sw=None, key=None):
        """``(loss_sum, n, grad)``: the loss summed over the rows of X (weighted by sw), their
        number (or weight), and the summed gradient written into grad; no L2 term."""
        net = self._net()
        if self._engine_loss_is_exact():
            # the loss kernel multiplies each row's loss and output delta by its weight
            loss_sum, _ = net.loss_grad(w, X, y, grad, zero=True, key=key, sample_weight=sw)
        else:
            out = net.forward(w, X, key=key)   # the same masks as the loss_grad below
            loss_sum, delta = self._weighted_loss_delta(out, y, sw)
            # the engine's output delta is out - target: aim it at the weighted delta
            net.loss_grad(w, X, np.ascontiguousarray(out - delta, dtype=out.dtype), grad,
                          zero=True, key=key)
        n = len(X) if sw is None else float(sw.sum())
        return loss_sum / self._loss_divisor(), _batch_weight(n), grad

    def _mean_objective(self, loss_sum, n, grad, w):
        """``loss_sum / n + alpha / (2 n) ||W||^2``; ``grad`` becomes its gradient, in place.

        :func:`sparkann.optim.mean_objective` with ``alpha / n``, summed over the contiguous
        runs of regularised weights instead of through a boolean mask. The full-batch solvers
        use it; the mini-batch loop has the optimizer's step compute both terms in its pass.
        """
        grad /= n
        if not self.alpha:
            return float(loss_sum) / n
        from scipy.linalg import blas

        axpy = blas.saxpy if grad.dtype == np.float32 else blas.daxpy
        coef, squares = self.alpha / n, 0.0
        for start, stop in self._l2_runs:
            v = w[start:stop]
            squares += float(np.dot(v, v))
            axpy(v, grad[start:stop], a=coef)  # grad += coef * v in one pass, in place
        return float(loss_sum) / n + 0.5 * coef * squares

    def _engine_loss_is_exact(self):
        return True

    def _dropout_key(self, step):
        """The engine's random key for optimizer step ``step``: (seed, step, 0), the seed drawn
        once per fresh fit from ``random_state`` (None without dropout)."""
        if not self._net().stochastic:
            return None
        if getattr(self, "_dropout_seed", None) is None:
            self._dropout_seed = int(self._random_state.randint(2**31 - 1))
        return (self._dropout_seed, int(step), 0)

    def _loss_divisor(self):
        return 1

    # -------------------------------------------------------------------------- training

    def _validate_input(self, X, y, incremental, reset):
        raise NotImplementedError

    def _fit(self, X, y, sample_weight=None, incremental=False, validation_data=None):
        self._validate_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = "weights_" not in vars(self) or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first)
        dtype = self._fit_dtype(X) if first else self.weights_.dtype
        X = _dense(X, dtype)
        sw = check_sample_weight(sample_weight, X.shape[0], dtype)
        self._random_state = check_random_state(self.random_state)
        if first:
            self._start(X.shape[1], self._n_outputs(y), self._out_activation(y), dtype)
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        self._l2_runs = _runs(self.topology_.l2_mask())
        y = self._encode(y, dtype)
        self._network = None
        self._monitored = self._monitored_set(validation_data, dtype)

        import ann_core

        previous = (ann_core.set_blas_threads(self.n_threads)
                    if self.n_threads is not None else None)
        try:
            if get_solver(self.solver).mini_batch:
                self._fit_stochastic(X, y, sw, incremental)
            elif get_solver(self.solver).name == "lbfgs":
                self._fit_lbfgs(X, y, sw)
            else:
                self._fit_gd(X, y, sw)
        finally:
            if previous is not None:
                ann_core.set_blas_threads(previous)
        if not np.isfinite(self.weights_).all():
            self._diverged("the weights are not finite", self.weights_)
        return self

    def _diverged(self, error, last_finite):
        self.weights_ = np.array(last_finite, dtype=self.weights_.dtype)
        raise TrainingDivergedError(
            f"{_NON_FINITE} Training diverged after {self.n_iter_} iterations ({error}); lower "
            "learning_rate_init or raise alpha.", weights=self.weights_, iteration=self.n_iter_
        ) from (error if isinstance(error, BaseException) else None)

    def _monitored_set(self, validation_data, dtype):
        """``fit``'s ``validation_data`` validated and encoded as the training data is; None
        when not given."""
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be (X_val, y_val) or (X_val, y_val, "
                             f"sample_weight_val), received {type(validation_data).__name__}")
        X, y = self._validate_input(*validation_data[:2], incremental=True, reset=False)
        X = _dense(X, dtype)
        sw = check_sample_weight(validation_data[2] if len(validation_data) == 3 else None,
                                 X.shape[0], dtype)
        return X, self._encode(y, dtype), sw

    def _monitored_loss_score(self, w):
        """The data loss (no L2 term) and score of ``w`` on ``fit``'s ``validation_data``,
        from one inference pass (dropout off)."""
        X, y, sw = self._monitored
        w = np.asarray(w, dtype=self.weights_.dtype)
        out = self._net().forward(w, X) if np.isfinite(w).all() else None
        if out is None or not np.isfinite(out).all():
            return math.nan, math.nan
        loss = self._outputs_loss(out, y, sw) / (len(X) if sw is None else float(sw.sum()))
        return loss, float(self._score_outputs(out, y, sw))

    def _outputs_loss(self, out, y, sw):
        """The loss of the network's outputs ``out`` (inference, no dropout) summed over rows,
        weighted by sw, as the engine's loss kernels define it."""
        raise NotImplementedError

    def _record(self, loss, val_score=math.nan, w=None):
        self.loss_ = float(loss)
        self.loss_curve_.append(self.loss_)
        val_loss = math.nan
        if getattr(self, "_monitored", None) is not None and w is not None:
            val_loss, score = self._monitored_loss_score(w)
            if not self.early_stopping:   # early stopping records the score it stops on
                val_score = score
        self.history_.append(loss, val_loss, val_score)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")

    # ---- mini-batch solvers: scikit-learn's epoch loop

    def _learning_rate_schedule(self, steps):
        rate = self.learning_rate
        if isinstance(rate, str):
            if rate == "cosine":
                return Cosine(steps)
            if rate == "inverse_sqrt":
                return InverseSqrt()
            return None  # constant, invscaling, adaptive: set per epoch below
        return rate

    def _new_optimizer(self, steps):
        params = self.get_params(deep=False)
        params["nesterovs_momentum"] = self.nesterovs_momentum and self.momentum > 0
        return make_optimizer(self.solver, self.learning_rate_init,
                              self._learning_rate_schedule(steps), **params)

    def _validation_split(self, X, y, sw):
        stratify = self._stratify_labels(y)
        parts = train_test_split(X, y, *(() if sw is None else (sw,)),
                                 random_state=self._random_state,
                                 test_size=self.validation_fraction, stratify=stratify)
        X_train, X_val, y_train, y_val = parts[:4]
        sw_train, sw_val = (parts[4], parts[5]) if sw is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        return X_train, y_train, sw_train, X_val, y_val, sw_val

    def _stratify_labels(self, y):
        return None

    def _fit_stochastic(self, X, y, sw, incremental):
        if self.early_stopping != (self.validation_scores_ is not None):
            self._reset_stopping()  # early_stopping was switched between warm-started fits
        if self.early_stopping:
            X, y, sw, X_val, y_val, sw_val = self._validation_split(X, y, sw)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped")
            batch = int(np.clip(self.batch_size, 1, n))
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._new_optimizer(self.max_iter * math.ceil(n / batch))
            self._dropout_seed = None   # a new run of steps draws new masks
        opt, w = self._optimizer, self.weights_
        grad = np.empty_like(w)
        l2_runs = np.array(self._l2_runs, dtype=np.int64).reshape(-1, 2)
        order = np.arange(n)
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            if self.shuffle:
                order = self._random_state.permutation(order)
            total, loss, last_finite = 0.0, 0.0, w.copy()
            for start in range(0, n, batch):
                idx = order[start:start + batch] if self.shuffle else slice(start, start + batch)
                Xb, yb, swb = X[idx], y[idx], None if sw is None else sw[idx]
                if swb is not None and not swb.any():
                    continue   # every row of the batch weighs 0: nothing to step on
                try:
                    loss_sum, rows, _ = self._summed_loss_grad(
                        w, Xb, yb, grad, swb, self._dropout_key(opt.t))
                except FloatingPointError:  # the engine's overflow report
                    loss_sum = math.nan
                if not math.isfinite(loss_sum):
                    loss = math.nan
                    break
                # the mean gradient, its L2 term and the step in one pass, which also gives
                # ||W||^2 before the step for the batch loss
                coef = self.alpha / rows
                squares, finite = opt.update(w, grad, grad_scale=1 / rows, l2=coef,
                                             l2_runs=l2_runs, squares=bool(coef))
                loss = loss_sum / rows + (0.5 * coef * squares if coef else 0.0)
                if not finite:
                    loss = math.nan
                    break
                total += loss * Xb.shape[0]
            self.n_iter_ += 1
            self.t_ += n
            diverged = not (math.isfinite(loss) and np.isfinite(w).all())
            score = self._validation_score(w, X_val, y_val, sw_val) if self.early_stopping \
                else math.nan
            self._record(math.nan if diverged else total / n, score, w)
            stop = self._no_improvement(score, w) or diverged
            if diverged and not (self.early_stopping and self._best_weights is not None):
                self._diverged("the loss or the weights became non-finite", last_finite)
            if self.learning_rate == "invscaling" and self.solver == "sgd":
                opt.lr = self.learning_rate_init / (self.t_ + 1) ** self.power_t
            if not stop and self._no_improvement_count > self.n_iter_no_change:
                if self.learning_rate == "adaptive" and self.solver == "sgd" and opt.lr > 1e-6:
                    opt.lr /= 5.0
                    self._no_improvement_count = 0
                    if self.verbose:
                        print(f"Setting learning rate to {opt.lr:f}")
                else:
                    stop = True
            if stop or incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning)
        if self.early_stopping and self._best_weights is not None:
            w[...] = self._best_weights
        self.weights_ = w

    def _no_improvement(self, score, w):
        """Update the count of epochs without improvement; keep the best weights."""
        if self.early_stopping:
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if not score >= self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_weights = w.copy()
        else:
            loss = self.loss_curve_[-1]
            if not loss <= self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if loss < self.best_loss_:
                self.best_loss_ = loss
        return False

    def _validation_score(self, w, X, y, sw):
        if not np.isfinite(w).all():
            return math.nan
        out = self._net().forward(w, X)
        if not np.isfinite(out).all():
            return math.nan
        return float(self._score_outputs(out, y, sw))

    # ---- full-batch solvers

    def _full_batch_fun(self, X, y, sw):
        w = self.weights_.copy()
        grad = np.empty_like(w)

        def fun_grad(w64):
            w[...] = w64
            loss = self._objective(w, X, y, grad, sw)
            return loss, grad.astype(np.float64)
        return fun_grad

    def _fit_lbfgs(self, X, y, sw):
        import scipy.optimize

        fun_grad = self._full_batch_fun(X, y, sw)
        self.n_iter_ = 0

        def callback(intermediate_result):
            self.n_iter_ += 1
            self._record(intermediate_result.fun, w=intermediate_result.x)

        try:
            result = scipy.optimize.minimize(
                fun_grad, self.weights_.astype(np.float64), method="L-BFGS-B", jac=True,
                callback=callback, options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                                            "gtol": self.tol})
        except FloatingPointError as e:
            self._diverged(e, self.weights_)
        self.weights_ = result.x.astype(self.weights_.dtype)
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        self.best_loss_ = min(self.loss_curve_, default=self.loss_)
        if result.status != 0:
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"(status={result.status}): {result.message}. Increase the number "
                          "of iterations (max_iter) or scale the data.", ConvergenceWarning)

    def _fit_gd(self, X, y, sw):
        fun_grad = self._full_batch_fun(X, y, sw)
        self.n_iter_ = 0

        def callback(iteration, w64, loss):
            self.n_iter_ += 1
            self._record(loss, w=w64)

        try:
            result = gd(fun_grad, self.weights_, step_size=self.learning_rate_init,
                        max_iter=self.max_iter, tol=self.tol, callback=callback,
                        schedule=self._learning_rate_schedule(self.max_iter))
        except DivergenceError as e:
            self._diverged(e, e.weights if e.weights is not None else self.weights_)
        self.weights_ = result.x.astype(self.weights_.dtype)
        self.best_loss_ = min(self.loss_curve_, default=math.inf)

    # ------------------------------------------------------------------------ public API

    def fit(self, X, y, sample_weight=None, validation_data=None):
        """Train on (X, y).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional
            Weight of each row in the loss (and in the validation score).
        validation_data : tuple (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Rows to watch, not to train on: after every epoch (adam, sgd) or iteration
            (lbfgs, gd) their loss (without the L2 term) goes into ``history_.val_loss`` and
            their score into ``history_.val_metric`` (with ``early_stopping`` that stays the
            held-out score it stops on). Training is the same with or without it; each record
            costs a forward and backward pass over these rows.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, validation_data=validation_data)

    def save(self, path):
        """Save the fitted model to the directory ``path``; :func:`sparkann.persist.load` reads
        it back (the files are described in :mod:`sparkann.model_file`)."""
        return model_file.save(self, path, ESTIMATORS)

    def _outputs(self, X):
        """The network's outputs for X, validated as scikit-learn validates it."""
        self._check_fitted()
        X = _validate(self, X, accept_sparse=["csr", "csc"], reset=False,
                      dtype=(np.float64, np.float32))
        return self._net().forward(self.weights_, _dense(X, self.weights_.dtype))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


@L.lists_activations
class MLPClassifier(ClassifierMixin, _MLPBase):
    """Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier``, trained natively.

    Labels may be any values scikit-learn accepts (numbers, strings, ...) or a multilabel
    indicator matrix. Several classes get a softmax output; two classes, and multilabel
    targets, a logistic output per class (one unit for two classes).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Width of each hidden layer, each followed by ``activation``.
    activation : str, default "relu"
        scikit-learn's "identity", "logistic", "tanh", "relu", and ours: {activations} or a
        registered Python activation ("logistic" is our "sigmoid").
    solver : {"adam", "sgd", "lbfgs", "gd"}, default "adam"
        "lbfgs" (scipy's L-BFGS-B, as scikit-learn) and "gd" are full batch (``max_iter``
        iterations); "adam" and "sgd" are mini-batch (``max_iter`` epochs).
    alpha : float, default 1e-4
        L2 penalty ``alpha / (2 n) * ||W||^2`` on the weight matrices (not the biases).
    batch_size : int or "auto", default "auto"
        Mini-batch rows ("auto": min(200, n)).
    learning_rate : {"constant", "invscaling", "adaptive", "cosine", "inverse_sqrt"} or Schedule
        "invscaling" and "adaptive" as in scikit-learn (``sgd`` only); ours: "cosine" decays
        to 0 over the whole run, "inverse_sqrt" as Spark MLlib's ``gd``, or any
        :class:`sparkann.optim.Schedule` (a multiplier of the step per optimizer step).
    learning_rate_init : float, default 0.001
        Step size of sgd, adam and gd.
    power_t : float, default 0.5
        Exponent of "invscaling".
    max_iter : int, default 200
        Epochs (mini-batch solvers) or iterations (full batch).
    shuffle : bool, default True
        Shuffle rows every epoch (mini-batch solvers).
    random_state : int, RandomState or None
        Makes initialisation, shuffling and the validation split reproducible.
    tol, n_iter_no_change : float, int
        Stop when the training loss (or the validation score with ``early_stopping``) has not
        improved by ``tol`` for ``n_iter_no_change`` epochs; ``tol`` is L-BFGS's ``gtol``.
    verbose : bool
        Print the loss of each iteration.
    warm_start : bool
        ``fit`` continues from the previous weights.
    momentum, nesterovs_momentum : float, bool
        SGD momentum and Nesterov's variant.
    early_stopping, validation_fraction : bool, float
        Hold out ``validation_fraction`` of the rows (stratified), stop on the validation
        score, keep the best weights (mini-batch solvers).
    beta_1, beta_2, epsilon : Adam's parameters.
    max_fun : int, default 15000
        L-BFGS's limit on loss evaluations.
    layers : list of Layer, optional
        Ours: the hidden layers as objects (overrides ``hidden_layer_sizes`` and
        ``activation``); may mix native and Python layers.
    init : {"auto", "spark", "glorot", "he"} or an encoder, default "auto"
        Ours: "auto" is scikit-learn's (W and b uniform in +-sqrt(6 / (fan_in + fan_out)),
        2 instead of 6 for logistic networks). A trained encoder
        (:attr:`sparkann.Autoencoder.encoder_`) starts the first hidden layers from its
        weights (``hidden_layer_sizes`` must begin with its code sizes, ``activation`` be
        its activation); the other layers start as with "auto".
    dtype : {None, "float32", "float64", "bfloat16"}, default None
        Ours: the network's number type; None follows X (float32 stays float32, anything
        else trains in float64, as scikit-learn). "bfloat16" is mixed precision: weights,
        gradients and data in float32, GEMM operands rounded to bfloat16 (oneDNN,
        ``pip install sparkann[bf16]``); where the CPU lacks native bfloat16 it warns once and
        trains in float32 (``ann_core.capabilities()``).
    block_size : int, default 128
        Ours: rows the native engine computes at a time.
    n_threads : int, optional
        Ours: BLAS threads during fit (restored afterwards).
    dropout : float or sequence of float, default 0.0
        Ours: inverted dropout in training (``predict`` never drops). One rate in [0, 1)
        applies after every hidden layer; a sequence gives the input's rate, then each hidden
        layer's (``len(hidden_layer_sizes) + 1`` rates, e.g. ``(0.2, 0.5, 0.5)``). A rate of 0
        adds nothing. Needs a mini-batch solver ("adam" or "sgd"); with ``layers``, put
        :class:`sparkann.layers.Dropout` layers in the list instead.

    Attributes
    ----------
    classes_, coefs_, intercepts_ (views into the flat ``weights_``), n_features_in_,
    feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_, loss_, best_loss_,
    loss_curve_, validation_scores_, best_validation_score_, t_; ours: ``topology_``,
    ``weights_``, ``history_`` (:class:`sparkann.optim.History`).
    """

    # ---- labels

    def _loss_layer(self):
        if self.out_activation_ == "softmax":
            return L.SoftmaxCrossEntropy()
        return L.SigmoidCrossEntropy()

    def _default_out_activation(self, n_outputs):
        return "softmax"

    def _validate_input(self, X, y, incremental, reset):
        X, y = _validate(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                         dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        target = type_of_target(y)
        if target not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"Unknown label type: {target}. Maybe you are trying to fit a "
                             "classifier, which expects discrete classes on a regression "
                             "target with continuous values.")
        if "classes_" not in vars(self) or (not self.warm_start and not incremental):
            self._set_classes(y, target)
        else:
            seen = np.arange(y.shape[1]) if target == "multilabel-indicator" \
                else unique_labels(y)
            if self.warm_start and not incremental:
                if set(seen) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same "
                                     "classes as in the previous call to fit. Previously got "
                                     f"{self.classes_}, `y` has {seen}")
            elif len(np.setdiff1d(seen, self.classes_)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {seen}.")
        return X, self._indicator(y)

    def _set_classes(self, y, target=None):
        target = target or type_of_target(y)
        self._multilabel = target == "multilabel-indicator"
        self.classes_ = np.arange(np.asarray(y).shape[1]) if self._multilabel \
            else unique_labels(y)

    def _indicator(self, y):
        """y as a bool indicator matrix: (n, 1) for two classes, (n, k) otherwise."""
        if getattr(self, "_multilabel", False):
            return np.asarray(y).astype(bool)
        if len(self.classes_) == 1:  # one class: one output unit that learns 0
            return np.zeros((len(y), 1), dtype=bool)
        index = np.searchsorted(self.classes_, y)
        Y = np.zeros((len(y), len(self.classes_)), dtype=bool)
        Y[np.arange(len(y)), index] = True
        return Y[:, 1:] if len(self.classes_) == 2 else Y

    def _n_outputs(self, Y):
        return Y.shape[1]

    def _out_activation(self, Y):
        return "logistic" if Y.shape[1] == 1 or getattr(self, "_multilabel", False) \
            else "softmax"

    def _stratify_labels(self, y):
        # scikit-learn stratifies the split of two classes only (its one output unit)
        return y > 0.5 if self.n_outputs_ == 1 else None

    def _encode(self, Y, dtype):
        if self.out_activation_ == "softmax":  # class indices: the engine's fast path
            return np.ascontiguousarray(Y.argmax(axis=1), dtype=np.int64)
        return np.ascontiguousarray(Y, dtype=dtype)

    def _outputs_loss(self, p, y, sw):
        if self.out_activation_ == "softmax":   # y holds class indices (the engine's path)
            row_loss = -np.log(np.clip(p[np.arange(len(y)), y], np.finfo(p.dtype).eps, 1))
        else:                                    # logistic outputs, 0/1 targets
            q = np.clip(p, np.finfo(p.dtype).eps, 1 - np.finfo(p.dtype).eps)
            row_loss = -(y * np.log(q) + (1 - y) * np.log1p(-q)).sum(axis=1)
        return float(row_loss @ sw if sw is not None else row_loss.sum())

    def _decode(self, out):
        if self.out_activation_ == "softmax":
            return self.classes_[out.argmax(axis=1)]
        if getattr(self, "_multilabel", False):
            return (out > 0.5).astype(int)
        if len(self.classes_) == 1:
            return np.repeat(self.classes_, len(out))
        return self.classes_[(out[:, 0] > 0.5).astype(int)]

    def _score_outputs(self, out, y_encoded, sw):
        if self.out_activation_ == "softmax":
            correct = out.argmax(axis=1) == y_encoded
        else:
            correct = np.all((out > 0.5) == (y_encoded > 0.5), axis=1)
        return np.average(correct, weights=sw)

    # ---- public

    @_MiniBatchOnly
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the current weights and optimizer state.

        ``classes`` (all the classes the model will see) is needed on the first call.
        """
        if "classes_" not in vars(self):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            multilabel = type_of_target(y).startswith("multilabel")
            self._set_classes(y if multilabel else np.asarray(classes),
                              "multilabel-indicator" if multilabel else None)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={np.unique(classes)!r}` is not the same as on last call "
                             f"to partial_fit, was: {self.classes_!r}")
        fresh = "weights_" not in vars(self)
        if fresh:
            # classes_ is set; build the network for all of them on the first batch
            return self._first_partial_fit(X, y, sample_weight)
        return self._fit(X, y, sample_weight, incremental=True)

    def _first_partial_fit(self, X, y, sample_weight):
        X_checked, y_checked = _validate(self, X, y, accept_sparse=["csr", "csc"],
                                         multi_output=True, dtype=(np.float64, np.float32),
                                         reset=True)
        if y_checked.ndim == 2 and y_checked.shape[1] == 1:
            y_checked = column_or_1d(y_checked, warn=True)
        seen = np.arange(y_checked.shape[1]) if self._multilabel else unique_labels(y_checked)
        if len(np.setdiff1d(seen, self.classes_)):
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                             f"{self.classes_}. 'y' has {seen}.")
        self._validate_params()
        self._random_state = check_random_state(self.random_state)
        dtype = self._fit_dtype(X_checked)
        width = 1 if len(self.classes_) == 2 and not self._multilabel else len(self.classes_)
        self._start(X_checked.shape[1], width,
                    "logistic" if width == 1 or self._multilabel else "softmax", dtype)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), in the order of ``classes_``."""
        out = self._outputs(X)
        if self.out_activation_ != "softmax" and out.shape[1] == 1 \
                and not getattr(self, "_multilabel", False):
            return np.hstack([1 - out, out])
        return out

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        p = self.predict_proba(X)
        return np.log(p, out=p)

    def predict(self, X):
        """The most probable class of each row (an indicator matrix for multilabel targets)."""
        return self._decode(self._outputs(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _MLPBase):
    """Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor``, trained natively.

    ``loss="squared_error"`` (identity output; half the squared error averaged over the
    targets) or ``"poisson"`` (exponential output; half the Poisson deviance, y >= 0). The
    other parameters and attributes are those of :class:`MLPClassifier`; ``score`` is R^2.
    """

    def __init__(self, loss="squared_error", *args, **params):
        self.loss = loss
        super().__init__(*args, **params)

    # scikit-learn reads the parameters from this signature: loss first, as in its MLPRegressor
    __init__.__signature__ = _with_first_parameter(_MLPBase.__init__, "loss", "squared_error")

    def _validate_params(self):
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"loss must be 'squared_error' or 'poisson', received {self.loss!r}")
        super()._validate_params()

    def _loss_layer(self):
        return L.SquaredError()  # identity output; poisson's exp is applied around it

    def _default_out_activation(self, n_outputs):
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = _validate(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                         y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and (np.asarray(y) < 0).any():
            raise ValueError("Some value(s) of y are negative which is not allowed for "
                             "Poisson regression.")
        dtype = self._fit_dtype(X) if reset else self.weights_.dtype
        too_large = np.abs(np.asarray(y, dtype=np.float64)) > np.finfo(dtype).max
        if too_large.any():
            where = tuple(np.argwhere(too_large)[0])
            raise ValueError(f"y: row {where[0]} is {float(np.asarray(y)[where])!r}, too large "
                             f"for {np.dtype(dtype)} (largest {float(np.finfo(dtype).max):.4g})")
        return X, y

    def _n_outputs(self, y):
        return 1 if y.ndim == 1 else y.shape[1]

    def _out_activation(self, y):
        return self._default_out_activation(None)

    def _encode(self, y, dtype):
        k = 1 if y.ndim == 1 else y.shape[1]
        if k != self.n_outputs_:
            raise ValueError(f"y has {k} targets but the model was fitted with "
                             f"{self.n_outputs_}")
        return np.ascontiguousarray(np.asarray(y).reshape(len(y), -1), dtype=dtype)

    def _engine_loss_is_exact(self):
        return self.out_activation_ == "identity"

    def _loss_divisor(self):
        # squared error: the mean over targets (its gradient, as scikit-learn's, is not)
        return self.n_outputs_ if self.out_activation_ == "identity" else 1

    def _weighted_loss_delta(self, z, y, sw):
        # Poisson (exponential output): the one loss the engine's kernels do not have
        with np.errstate(over="ignore"):
            p = np.exp(z)
        with np.errstate(divide="ignore", invalid="ignore"):
            ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / p), 0.0)
        row_loss = (ylogy - y + p).sum(axis=1)
        delta = p - y
        if sw is not None:
            row_loss, delta = row_loss * sw, delta * sw[:, None]
        return float(row_loss.sum()), delta

    def _outputs_loss(self, out, y, sw):
        if self.out_activation_ == "exp":
            return self._weighted_loss_delta(out, y, sw)[0]
        row_loss = 0.5 * ((out - y) ** 2).sum(axis=1)
        return float(row_loss @ sw if sw is not None else row_loss.sum()) / self.n_outputs_

    def _score_outputs(self, out, y, sw):
        pred = np.exp(out) if self.out_activation_ == "exp" else out
        return _r2(y, pred, sw)

    @_MiniBatchOnly
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights and optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted targets: shape (n_samples,) for one target, else (n_samples, n_targets)."""
        out = self._outputs(X)
        if self.out_activation_ == "exp":
            out = np.exp(out)
        return out[:, 0] if out.shape[1] == 1 else out


#: the estimators a model file can hold, by the class name it records
ESTIMATORS = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}


def _r2(y, pred, sample_weight=None):
    y = np.asarray(y, dtype=np.float64).reshape(len(pred), -1)
    pred = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    mean = np.average(y, axis=0, weights=w)
    ss_res = (w[:, None] * (y - pred) ** 2).sum(0)
    ss_tot = (w[:, None] * (y - mean) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res > 0, 0.0, 1.0))
    return float(np.mean(r2))
