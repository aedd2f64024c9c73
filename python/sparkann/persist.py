"""Saving and loading single-machine estimators (``MLPClassifier``, ``MLPRegressor``,
``Autoencoder``).

The files, their checks and :class:`ModelFileError` are those of :mod:`sparkann.model_file`.
"""
import os


from sparkann import model_file
from sparkann.autoencoder import Autoencoder
from sparkann.estimator import ESTIMATORS
from sparkann.layers import SigmoidCrossEntropy
from sparkann.model_file import (META_FILE, WEIGHTS_FILE, ModelFileError, params_from_json,
                                 read_meta, read_weights)
from sparkann.optim import History
from sparkann.topology import Topology

__all__ = ["ModelFileError", "load", "save"]

#: the classes whose models save and load here, by the name model.json records
CLASSES = {**ESTIMATORS, "Autoencoder": Autoencoder}


def save(estimator, path):
    """Save a fitted ``MLPClassifier``, ``MLPRegressor`` or ``Autoencoder`` to the directory
    ``path``.

    The directory is created if needed; existing model files in it are replaced.
    """
    return model_file.save(estimator, path, CLASSES)


def load(path):
    """Load an estimator saved with :func:`save`.

    Custom Python layers used by the model must be imported (registered) first.

    Raises
    ------
    ModelFileError
        If the files are missing, truncated, tampered with, of another version, hold a
        pickled object, or disagree with each other.
    """
    meta = read_meta(path)
    classes = CLASSES
    cls = classes.get(meta["class"])
    if cls is None:
        raise ModelFileError(f"{META_FILE}: unknown estimator class {meta['class']!r}; expected "
                             f"one of {sorted(classes)}")
    try:
        estimator = cls(**params_from_json(meta["params"], cls))
        estimator._validate_params()  # dtype, block_size...: refused now, not at predict
        topology = Topology.from_dict(meta["topology"])
        history = getattr(cls, "_history_from_dict", History.from_dict)(meta["history"])
    except ModelFileError:
        raise
    except (ValueError, TypeError, AttributeError, MemoryError) as e:
        raise ModelFileError(f"{os.path.join(path, META_FILE)}: {e}") from None
    weights = read_weights(path, meta["weights"])
    if weights.shape != (topology.n_weights,):
        raise ModelFileError(f"{WEIGHTS_FILE}: {weights.shape[0]} weights but the topology needs "
                             f"{topology.n_weights}")
    if topology.n_in != meta["n_features_in"] or topology.n_out != meta["n_outputs"]:
        raise ModelFileError(f"{META_FILE}: topology {topology.n_in} -> {topology.n_out} does "
                             f"not match n_features_in={meta['n_features_in']}, "
                             f"n_outputs={meta['n_outputs']}")
    classes = meta.get("classes")
    if meta["class"] == "MLPClassifier":
        two_classes = isinstance(topology.layers[-1], SigmoidCrossEntropy) and topology.n_out == 1
        if not isinstance(classes, list) or len(classes) != (2 if two_classes else topology.n_out):
            raise ModelFileError(f"{META_FILE}: classes {classes!r} do not match the "
                                 f"{topology.n_out} outputs")
    try:
        estimator._restore(topology, weights, meta["n_iter"], history, classes)
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{os.path.join(path, META_FILE)}: {e}") from None
    return estimator
