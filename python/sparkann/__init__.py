"""sparkann: feed-forward neural networks on one machine or on Apache Spark, with a native core.

The public names are imported on first use, so ``import sparkann`` is fast and needs neither
pyspark nor scikit-learn. The Spark estimator lives in ``sparkann.spark``.

Examples
--------
>>> from sparkann import MLPClassifier, load_fashion_mnist   # doctest: +SKIP
>>> X, y = load_fashion_mnist(kind="train")                   # doctest: +SKIP
>>> clf = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=5).fit(X, y)  # doctest: +SKIP
"""
import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "layers": None, "topology": None, "optim": None, "datasets": None, "persist": None,
    "Layer": "layers", "PythonLayer": "layers", "PythonActivation": "layers",
    "register": "layers", "from_sizes": "layers",
    "Dense": "layers", "Identity": "layers", "Sigmoid": "layers", "Tanh": "layers",
    "ReLU": "layers", "LeakyReLU": "layers", "Softplus": "layers", "ELU": "layers",
    "GELU": "layers", "Dropout": "layers",
    "SoftmaxCrossEntropy": "layers", "SigmoidCrossEntropy": "layers", "SquaredError": "layers",
    "Topology": "topology",
    "SGD": "optim", "Adam": "optim", "LBFGS": "optim", "lbfgs": "optim", "gd": "optim",
    "History": "optim", "EarlyStopping": "optim", "DivergenceError": "optim",
    "read_idx": "datasets", "load_fashion_mnist": "datasets",
    "MLPClassifier": "estimator", "MLPRegressor": "estimator",
    "Autoencoder": "autoencoder", "Encoder": "stacking",
    "load": "persist", "save": "persist", "ModelFileError": "persist",
    "NotFittedError": "estimator", "mean_objective": "optim",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sparkann' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = (importlib.import_module(f"sparkann.{name}") if module is None
             else getattr(importlib.import_module(f"sparkann.{module}"), name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
