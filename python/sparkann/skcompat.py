"""scikit-learn's estimator helpers when it is installed, small stand-ins when it is not.

The single-machine estimators validate their input, raise ``NotFittedError``, split off a
validation set and draw random numbers through the names below. With scikit-learn installed
these are scikit-learn's own (so its messages, tags and checks apply unchanged); without it
the stand-ins keep the same behaviour and wording for dense numeric input.
"""
import inspect
import math
import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False

    class ConvergenceWarning(UserWarning):
        """Training stopped before it converged."""

    class DataConversionWarning(UserWarning):
        """The input was converted (a column vector y was raveled)."""

    class NotFittedError(ValueError, AttributeError):
        """The estimator is used before ``fit``."""

    class BaseEstimator:
        """get_params / set_params / repr from the constructor's signature."""

        @classmethod
        def _get_param_names(cls):
            return sorted(n for n, p in inspect.signature(cls.__init__).parameters.items()
                          if n != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(f"Invalid parameter {name!r} for estimator {self}. Valid "
                                     f"parameters are: {valid!r}.")
                setattr(self, name, value)
            return self

        def __repr__(self):
            defaults = {n: p.default for n, p in
                        inspect.signature(type(self).__init__).parameters.items()}
            changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                       if not (type(v) is type(defaults[k]) and v == defaults[k])]
            return f"{type(self).__name__}({', '.join(changed)})"

    class ClassifierMixin:
        _estimator_type = "classifier"

        def score(self, X, y, sample_weight=None):
            """Accuracy of ``predict(X)`` against ``y``."""
            correct = np.all(np.asarray(self.predict(X)).reshape(len(y), -1)
                             == np.asarray(y).reshape(len(y), -1), axis=1)
            return float(np.average(correct, weights=sample_weight))

    class TransformerMixin:
        def fit_transform(self, X, y=None, **fit_params):
            """``fit(X, y)`` then ``transform(X)``."""
            return self.fit(X, y, **fit_params).transform(X)

    class RegressorMixin:
        _estimator_type = "regressor"

        def score(self, X, y, sample_weight=None):
            """Coefficient of determination R^2 (averaged over targets)."""
            pred = np.asarray(self.predict(X), dtype=np.float64).reshape(len(y), -1)
            y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
            w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
            ss_res = (w[:, None] * (y - pred) ** 2).sum(0)
            ss_tot = (w[:, None] * (y - np.average(y, axis=0, weights=w)) ** 2).sum(0)
            with np.errstate(divide="ignore", invalid="ignore"):
                r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res > 0, 0.0, 1.0))
            return float(np.mean(r2))

    def check_random_state(seed):
        if seed is None or seed is np.random:
            return np.random.mtrand._rand
        if isinstance(seed, numbers.Integral):
            return np.random.RandomState(seed)
        if isinstance(seed, np.random.RandomState):
            return seed
        raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")

    def check_is_fitted(estimator, attributes=None):
        if not any(k.endswith("_") and not k.startswith("__") for k in vars(estimator)):
            raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet. "
                                 "Call 'fit' with appropriate arguments before using this "
                                 "estimator.")

    def column_or_1d(y, *, warn=False):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            if warn:
                warnings.warn("A column-vector y was passed when a 1d array was expected. "
                              "Please change the shape of y to (n_samples, ), for example "
                              "using ravel().", DataConversionWarning, stacklevel=2)
            return y.ravel()
        if y.ndim == 1:
            return y
        raise ValueError(f"y should be a 1d array, got an array of shape {y.shape} instead.")

    def _as_2d(X, dtype):
        if hasattr(X, "toarray") and not isinstance(X, np.ndarray):
            raise TypeError("Sparse data was passed, but dense data is required without "
                            "scikit-learn. Use '.toarray()' to convert to a dense numpy array.")
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got {'scalar' if X.ndim == 0 else '1D'} array "
                             f"instead:\narray={X}.\nReshape your data either using "
                             "array.reshape(-1, 1) if your data has a single feature or "
                             "array.reshape(1, -1) if it contains a single sample.")
        if X.dtype.kind not in "biuf":
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"could not convert the input of type {X.dtype} to float"
                                 ) from None
        if X.dtype not in dtype:
            X = X.astype(dtype[0])
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"Found array with {X.shape[0]} sample(s) and {X.shape[1]} "
                             "feature(s) (shape=%s) while a minimum of 1 is required." % (X.shape,))
        if not np.isfinite(X).all():
            raise ValueError("Input X contains NaN." if np.isnan(X).any()
                             else "Input X contains infinity or a value too large for "
                             f"{X.dtype!r}.")
        return X

    def validate_data(estimator, X, y="no_validation", reset=True, dtype=(np.float64,),
                      accept_sparse=False, multi_output=False, y_numeric=False, **_):
        X = _as_2d(X, dtype)
        if reset:
            estimator.n_features_in_ = X.shape[1]
        elif X.shape[1] != estimator.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                             f"expecting {estimator.n_features_in_} features as input.")
        if isinstance(y, str) and y == "no_validation":
            return X
        if y is None:
            raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the "
                             "target y is None.")
        y = np.asarray(y)
        if y_numeric and y.dtype.kind == "O":
            y = y.astype(np.float64)
        if not multi_output and y.ndim != 1:
            y = column_or_1d(y, warn=True)
        if len(y) != len(X):
            raise ValueError("Found input variables with inconsistent numbers of samples: "
                             f"[{len(X)}, {len(y)}]")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("Input y contains NaN." if np.isnan(y).any()
                             else "Input y contains infinity.")
        return X, y

    def type_of_target(y):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:
            return ("multilabel-indicator" if np.isin(y, (0, 1)).all()
                    else "multiclass-multioutput")
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            return "continuous"
        return "binary" if len(np.unique(y)) <= 2 else "multiclass"

    def unique_labels(y):
        return np.unique(np.asarray(y))

    def train_test_split(*arrays, test_size, random_state, stratify=None):
        n = len(arrays[0])
        n_test = math.ceil(test_size * n)
        perm = random_state.permutation(n)
        test, train = perm[:n_test], perm[n_test:]
        return [part for a in arrays for part in (a[train], a[test])]


def check_sample_weight(sample_weight, n_rows, dtype):
    """``sample_weight`` as a 1-D array of ``n_rows`` finite, non-negative numbers of
    ``dtype``, not all zero; a bad value's error names its row."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        return np.full(n_rows, sample_weight, dtype=dtype)
    sw = np.asarray(sample_weight, dtype=dtype)
    if sw.ndim != 1:
        raise ValueError(f"Sample weights must be 1D array or scalar, got shape {sw.shape}")
    if sw.shape != (n_rows,):
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n_rows},)!")
    bad = np.flatnonzero(~np.isfinite(sw))
    if bad.size:
        raise ValueError(f"Input sample_weight contains NaN or infinity: row {int(bad[0])} is "
                         f"{float(sw[bad[0]])!r}.")
    bad = np.flatnonzero(sw < 0)
    if bad.size:   # a negative weight would reward the loss of its row growing without bound
        raise ValueError(f"Negative values in sample_weight are not allowed: row "
                         f"{int(bad[0])} is {float(sw[bad[0]])!r}.")
    if not sw.any():
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return sw
