"""The file format of saved single-machine estimators: a directory with JSON and ``.npz``.

Layout of a saved model directory::

    model.json    format name and version, class, hyperparameters, topology, classes,
                  training history, the SHA-256 of the weights, and last ``sha256``: the
                  SHA-256 of all the other fields (canonical JSON)
    weights.npz   the flat weight vector, read with ``allow_pickle=False``

The digest of ``model.json`` covers the digest of the weights, so one check covers everything
that makes a prediction (class, topology, activations, dtype, classes, hyperparameters).
Nothing is unpickled: a model file cannot run code. A file that is truncated, edited, of
another format version, holding an object array, a weight vector of the wrong shape or a
field of the wrong type raises :class:`ModelFileError` (a ``ValueError``) that says what is
wrong.
"""
import hashlib
import json
import os

import numpy as np

FORMAT_NAME = "sparkann-model"
FORMAT_VERSION = 3  # 1: only the weights had a digest; 2: hyperparameters had older names
DIGEST_KEY = "sha256"
META_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"


class ModelFileError(ValueError):
    """A saved model cannot be read: the message says which file and why."""


def _params_to_json(params):
    from sparkann.layers import Layer
    from sparkann.optim import Schedule

    out = {}
    for name, value in params.items():
        if name == "layers" and value is not None:
            value = [layer.to_dict() for layer in value]
        elif name == "learning_rate" and value is not None and not isinstance(value, str):
            if not isinstance(value, Schedule):
                raise ValueError(f"cannot save learning_rate={value!r}: only sparkann.optim "
                                 "Schedule objects can be saved")
            value = value.to_dict()
        elif name == "random_state" and isinstance(value, np.random.RandomState):
            value = None  # a generator's state is not a hyperparameter worth keeping
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, Layer):
            value = value.to_dict()
        elif name == "init" and not isinstance(value, str):
            # a trained encoder only chose the starting weights: the fitted weights are saved
            value = "auto"
        out[name] = value
    return out


def params_from_json(params, cls):
    from sparkann.layers import layer_from_dict
    from sparkann.optim import schedule_from_dict

    valid = set(cls._get_param_names())
    unknown = set(params) - valid
    if unknown:
        raise ModelFileError(f"{META_FILE}: unknown hyperparameters {sorted(unknown)} for "
                             f"{cls.__name__}")
    params = dict(params)
    if params.get("layers") is not None:
        params["layers"] = [layer_from_dict(d) for d in params["layers"]]
    if isinstance(params.get("learning_rate"), dict):
        params["learning_rate"] = schedule_from_dict(params["learning_rate"])
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    return params


def meta_digest(meta):
    """SHA-256 of ``model.json``'s fields but its own ``sha256``, as canonical JSON."""
    body = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(weights):
    return hashlib.sha256(np.ascontiguousarray(weights).tobytes()).hexdigest()


def save(estimator, path, classes):
    """Save a fitted estimator, one of ``classes`` (``{name: class}``), to the directory ``path``.

    The directory is created if needed; existing model files in it are replaced.
    """
    name = type(estimator).__name__
    if classes.get(name) is not type(estimator):
        raise ValueError(f"save: expected an {' or '.join(classes)}, received {name}")
    estimator._check_fitted()
    weights = np.ascontiguousarray(estimator.weights_)
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "class": name,
        "params": _params_to_json(estimator.get_params()),
        "topology": estimator.topology_.to_dict(),
        "n_features_in": int(estimator.n_features_in_),
        "n_outputs": int(estimator.n_outputs_),
        "classes": (estimator.classes_.tolist() if hasattr(estimator, "classes_") else None),
        "targets_1d": bool(estimator.n_outputs_ == 1),
        "n_iter": int(estimator.n_iter_),
        "history": estimator.history_.to_dict(),
        "weights": {"file": WEIGHTS_FILE, "dtype": str(weights.dtype),
                    "shape": list(weights.shape), "sha256": _digest(weights)},
    }
    meta = json.loads(json.dumps(meta, allow_nan=True))  # the values exactly as read back
    meta[DIGEST_KEY] = meta_digest(meta)
    os.makedirs(path, exist_ok=True)
    text = json.dumps(meta, indent=1, allow_nan=True)  # history may hold NaN
    # write both files fully before either replaces an older model
    tmp_meta, tmp_weights = (os.path.join(path, f".{f}.tmp") for f in (META_FILE, WEIGHTS_FILE))
    with open(tmp_meta, "w") as f:
        f.write(text)
    with open(tmp_weights, "wb") as f:
        np.savez(f, weights=weights)
    os.replace(tmp_weights, os.path.join(path, WEIGHTS_FILE))
    os.replace(tmp_meta, os.path.join(path, META_FILE))
    return path


#: the fields of model.json, their JSON types, and whether they may be null
_FIELDS = {"class": (str, False), "params": (dict, False), "topology": (dict, False),
           "n_features_in": (int, False), "n_outputs": (int, False), "classes": (list, True),
           "targets_1d": (bool, False), "n_iter": (int, False), "history": (dict, False),
           "weights": (dict, False)}
_WEIGHT_FIELDS = {"file": str, "dtype": str, "shape": list, "sha256": str}
_KINDS = {str: "a string", dict: "a JSON object", int: "an integer", list: "a list",
          bool: "true or false"}


def _check_type(meta_path, name, value, kind, nullable=False):
    if value is None and nullable:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ModelFileError(f"{meta_path}: {name!r} is {str(value)[:80]}, expected "
                             f"{_KINDS[kind]}")


def read_meta(path):
    """The checked fields of ``model.json``: JSON, format, version, digest, field types."""
    meta_path = os.path.join(path, META_FILE)
    if os.path.isdir(meta_path) or not os.path.exists(meta_path):
        raise ModelFileError(f"{path!r} is not a saved sparkann model: {META_FILE} is missing")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ModelFileError(f"{meta_path}: not valid JSON (truncated or edited?): "
                             f"{str(e)[:200]}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{meta_path}: not a sparkann model file (format "
                             f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != FORMAT_VERSION:
        older = (" (saved by an earlier sparkann, whose digest covered only the weights, so "
                 "its other fields cannot be checked: use that version to read it, or train "
                 "and save it again)" if meta.get("version") == 1 else "")
        raise ModelFileError(f"{meta_path}: format version {meta.get('version')!r} is not "
                             f"supported; this sparkann reads version {FORMAT_VERSION}{older}")
    if meta.get(DIGEST_KEY) != meta_digest(meta):
        raise ModelFileError(f"{meta_path}: the file does not match the SHA-256 recorded in it "
                             "(edited or damaged)")
    missing = set(_FIELDS) - set(meta)
    if missing:
        raise ModelFileError(f"{meta_path}: missing fields {sorted(missing)}")
    for name, (kind, nullable) in _FIELDS.items():
        _check_type(meta_path, name, meta[name], kind, nullable)
    for name, kind in _WEIGHT_FIELDS.items():
        _check_type(meta_path, f"weights.{name}", meta["weights"].get(name), kind)
    if meta["n_iter"] < 0:
        raise ModelFileError(f"{meta_path}: 'n_iter' is {meta['n_iter']}, expected a count >= 0")
    return meta


def read_weights(path, spec):
    weights_path = os.path.join(path, WEIGHTS_FILE)
    try:
        with np.load(weights_path, allow_pickle=False) as data:
            if set(data.files) != {"weights"}:
                raise ModelFileError(f"{weights_path}: expected one array 'weights', found "
                                     f"{sorted(data.files)}")
            weights = data["weights"]
    except ModelFileError:
        raise
    except FileNotFoundError:
        raise ModelFileError(f"{weights_path} is missing") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise ModelFileError(f"{weights_path}: holds a pickled object array; model files "
                                 "are never unpickled") from None
        raise ModelFileError(f"{weights_path}: unreadable array ({e})") from None
    except Exception as e:  # BadZipFile, EOFError, OSError, NotImplementedError (a flipped
        # zip flag bit), MemoryError (a header claiming a huge shape)...: all mean damage
        raise ModelFileError(f"{weights_path}: truncated or corrupt ({type(e).__name__}: {e})"
                             ) from None
    if weights.dtype.kind != "f" or str(weights.dtype) != spec.get("dtype"):
        raise ModelFileError(f"{weights_path}: weights are {weights.dtype}, {META_FILE} says "
                             f"{spec.get('dtype')}")
    if list(weights.shape) != spec.get("shape"):
        raise ModelFileError(f"{weights_path}: weights have shape {weights.shape}, {META_FILE} "
                             f"says {tuple(spec.get('shape') or ())}")
    if _digest(weights) != spec.get("sha256"):
        raise ModelFileError(f"{weights_path}: the weights do not match the SHA-256 recorded in "
                             f"{META_FILE} (the file was modified or damaged)")
    return weights
