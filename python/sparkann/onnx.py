"""Export a fitted network as an ONNX graph, to serve it without sparkann (onnxruntime, ...).

::

    from sparkann.onnx import to_onnx
    proto = to_onnx(model, "model.onnx")      # an onnx.ModelProto, also written to the file

The graph computes what the model computes, in its dtype (float32 or float64), for a batch of
any number of rows. Its input and outputs are named as :mod:`sparkann.fitted` describes:

========================  ================  ==============================================
model                     input             outputs
========================  ================  ==============================================
Spark classifier          ``features``      ``rawPrediction``, ``probability`` (rows,
                                            classes), ``prediction`` (rows,) int64
Spark regressor           ``features``      ``prediction``: (rows,) for one target, else
                                            (rows, targets)
``MLPClassifier``         ``X``             ``label`` (rows,) int64, ``probabilities``
``MLPRegressor``          ``X``             ``variable`` (rows, targets)
========================  ================  ==============================================

(a Spark model's column Params name its input and outputs). Every native layer exports; a
layer written in Python (``sparkann.PythonLayer``) cannot and is refused by name. Needs the
``onnx`` package: ``pip install 'sparkann[onnx]'``.
"""
import os

import numpy as np

from sparkann import layers as L
from sparkann.fitted import CLASSIFIER, describe

#: the ONNX operator set the graphs use (every operator used here exists unchanged since)
OPSET = 17

# GELU's tanh approximation, as the engine computes it: x * sigmoid(GELU_V * (x + GELU_C x^3))
GELU_V, GELU_C = 1.5957691216057308, 0.044715


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'sparkann[onnx]'"
                          ) from None
    return onnx


class _Graph:
    """Nodes and constants of the graph under construction, with unique names."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem, value, dtype=None):
        name = self.name(stem)
        array = np.asarray(value, dtype=dtype or self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, inputs, output=None, **attributes):
        output = output or self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output],
                                                     **attributes))
        return output


def _activation(g, layer, x):
    """The nodes of one native activation applied to ``x``; returns the output's name."""
    if isinstance(layer, L.Identity):
        return x
    if isinstance(layer, L.Sigmoid):
        return g.op("Sigmoid", [x])
    if isinstance(layer, L.Tanh):
        return g.op("Tanh", [x])
    if isinstance(layer, L.ReLU):
        return g.op("Relu", [x])
    if isinstance(layer, L.LeakyReLU):
        # max(x, alpha x) with alpha in the graph's dtype (LeakyRelu's attribute is a float32)
        return g.op("Max", [x, g.op("Mul", [x, g.const("alpha", layer.alpha)])])
    # Softplus and ELU from basic operators: onnxruntime has no float64 Softplus or Elu
    if isinstance(layer, L.Softplus):  # max(x, 0) + log(1 + exp(-|x|)): never overflows
        tail = g.op("Log", [g.op("Add", [g.const("one", 1.0),
                                         g.op("Exp", [g.op("Neg", [g.op("Abs", [x])])])])])
        return g.op("Add", [g.op("Relu", [x]), tail])
    if isinstance(layer, L.ELU):  # x where x > 0, else exp(min(x, 0)) - 1
        below = g.op("Sub", [g.op("Exp", [g.op("Min", [x, g.const("zero", 0.0)])]),
                             g.const("one", 1.0)])
        return g.op("Where", [g.op("Greater", [x, g.const("zero", 0.0)]), x, below])
    if isinstance(layer, L.GELU):
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const("gelu_c", GELU_C)])])
        v = g.op("Mul", [inner, g.const("gelu_v", GELU_V)])
        return g.op("Mul", [x, g.op("Sigmoid", [v])])
    raise AssertionError(f"unhandled activation {layer!r}")  # _check_exportable refuses it


_NATIVE_ACTIVATIONS = (L.Identity, L.Sigmoid, L.Tanh, L.ReLU, L.LeakyReLU, L.Softplus, L.ELU,
                       L.GELU)


def _check_exportable(topology):
    for i, layer in enumerate(topology.layers):
        if isinstance(layer, L.PythonLayer):
            raise ValueError(f"cannot export to ONNX: layer {i}, {layer!r} "
                             f"({type(layer).__module__}.{type(layer).__qualname__}), is "
                             "written in Python, and ONNX cannot run Python code; only "
                             "networks of native layers (Dense and the built-in activations) "
                             "export")
        if not (type(layer) in _NATIVE_ACTIVATIONS or type(layer) in (L.Dense, L.Dropout)
                or isinstance(layer, L.Loss) and type(layer) in L.LOSS_NAMES.values()):
            raise ValueError(f"cannot export to ONNX: layer {i}, {layer!r}, has no ONNX "
                             "form")


def _build(fitted):
    """The ModelProto of a :class:`~sparkann.fitted.Fitted` model."""
    onnx = _onnx()
    helper = onnx.helper
    topology, w = fitted.topology, fitted.weights
    g = _Graph(onnx, fitted.dtype)
    x = fitted.input_name
    for i, layer in enumerate(topology.layers[:-1]):
        if isinstance(layer, L.Dense):
            params = topology.params_of(w, i)
            x = g.op("Gemm", [x, g.const(f"W{i}", params["W"]), g.const(f"b{i}", params["b"])])
        elif isinstance(layer, L.Dropout):
            continue  # the identity in inference
        else:
            x = _activation(g, layer, x)
    raw = x
    loss = topology.layers[-1]
    if isinstance(loss, L.SoftmaxCrossEntropy):
        out = g.op("Softmax", [raw], axis=1)
    elif isinstance(loss, L.SigmoidCrossEntropy):
        out = g.op("Sigmoid", [raw])
    else:
        out = g.op("Exp", [raw]) if fitted.exp_output else raw

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(fitted.dtype))
    rows, k = "rows", topology.n_out
    outputs = []
    if fitted.task == CLASSIFIER:
        label_from = raw
        if fitted.thresholds is not None:
            t = fitted.thresholds
            # probability / t, and +inf for a zero threshold (that class wins), as MLlib does
            scale = g.const("inv_thresholds", np.where(t > 0, 1 / np.where(t > 0, t, 1), 0))
            bonus = g.const("zero_thresholds", np.where(t > 0, 0, np.inf))
            label_from = g.op("Add", [g.op("Mul", [out, scale]), bonus])
        roles = {"raw": (raw, elem, [rows, k]), "probability": (out, elem, [rows, k]),
                 "label": (g.op("ArgMax", [label_from], axis=1, keepdims=0),
                           onnx.TensorProto.INT64, [rows])}
    else:
        value, shape = out, [rows, k]
        if fitted.one_target:
            value, shape = g.op("Squeeze", [out, g.const("axis", [1], np.int64)]), [rows]
        roles = {"value": (value, elem, shape)}
    for role, name in fitted.outputs:
        node, elem_type, shape = roles[role]
        g.op("Identity", [node], output=name)
        outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    graph = helper.make_graph(
        g.nodes, "sparkann", [helper.make_tensor_value_info(fitted.input_name, elem,
                                                            [rows, topology.n_in])],
        outputs, g.initializers)
    from sparkann import __version__
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sparkann", producer_version=__version__,
                              doc_string=f"sparkann {fitted.task} {topology.sizes}, "
                                         f"{fitted.dtype}")
    model.ir_version = 8  # the IR of opset 17: runtimes of that generation read it
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(model, path=None):
    """The ONNX graph of a fitted sparkann model.

    Parameters
    ----------
    model : sparkann.MLPClassifier, sparkann.MLPRegressor or a fitted model of sparkann.spark
    path : str, optional
        Also write the graph to this file, which must not exist yet.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker`` (see the module's docstring for its input and outputs).

    Raises
    ------
    ValueError
        The model is not fitted, or holds a layer that has no ONNX form (a Python layer).
    FileExistsError
        ``path`` exists.
    """
    _onnx()  # a clear ImportError before any other check
    if path is not None:
        path = os.fspath(path)
        if os.path.lexists(path):
            raise FileExistsError(f"{path} exists: to_onnx does not overwrite files; remove it "
                                  "or choose another path")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"cannot write {path}: the folder {parent} does not exist")
    fitted = describe(model, "export")
    _check_exportable(fitted.topology)
    proto = _build(fitted)
    if path is not None:
        with open(path, "xb") as f:  # "x": never replaces a file created meanwhile
            f.write(proto.SerializeToString())
    return proto


__all__ = ["to_onnx", "OPSET"]
