"""Layer objects: descriptions of a network's stages that compile to the native engine.

A network is a list of layers ending with a loss, for example::

    [Dense(256), ReLU(), Dense(10), SoftmaxCrossEntropy()]

Layers hold no weights. All weights live in one flat vector (see ``sparkann.topology``); each
layer says how many parameters it needs for a given input width, how to initialise them, and
what stage(s) of ``ann_core.Network`` it compiles to.

Writing a layer in Python
-------------------------
Subclass :class:`PythonLayer` (any stage, with or without parameters) or
:class:`PythonActivation` (an element-wise function), implement the numpy methods, and
register the class by name so that models using it can be saved and loaded::

    @register("square")
    class Square(PythonActivation):
        def function(self, x):
            return x * x

        def derivative(self, x, y):
            return 2.0 * x

Such layers mix freely with the native ones: the engine calls them on views of its own
workspace, one block of rows at a time.
"""
import inspect

import numpy as np

import ann_core
from sparkann.hyperparams import dropout_rates

_REGISTRY = {}


def register(name):
    """Class decorator: register a layer class under ``name``.

    The name is what :meth:`Layer.to_dict` writes and :func:`layer_from_dict` reads, so a saved
    model that uses a custom layer loads again once the class is registered (imported).

    Parameters
    ----------
    name : str
        Unique name, e.g. ``"square"``. Re-registering the same class is allowed; taking a
        name already used by a different class is an error.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a layer name must be a non-empty string, received {name!r}")

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"@register({name!r}) needs a subclass of sparkann.layers.Layer, "
                            f"received {cls!r}")
        previous = _REGISTRY.get(name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise ValueError(f"layer name {name!r} is already registered to {previous!r}")
        _REGISTRY[name] = cls
        cls.type_name = name
        return cls

    return decorate


def registered():
    """Names of all registered layer classes."""
    return sorted(_REGISTRY)


def get_layer_class(name):
    """The class registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown layer type {name!r}; registered types: {registered()} "
                         "(a custom layer must be imported and @register-ed before loading)"
                         ) from None


class Layer:
    """Base of all layers.

    A layer maps an input width to an output width and owns ``n_params(n_in)`` consecutive
    entries of the network's flat weight vector.
    """

    type_name = None
    #: True for layers that end a network (losses).
    is_loss = False

    def output_size(self, n_in):
        """Width of the output for an input of width ``n_in``."""
        return n_in

    def n_params(self, n_in):
        """Number of parameters for an input of width ``n_in``."""
        return 0

    def init_params(self, n_in, rng, scheme="spark"):
        """Initial parameters (float64 1-D array of ``n_params(n_in)``)."""
        return np.zeros(self.n_params(n_in))

    def regularized(self, n_in):
        """Boolean mask over this layer's parameters: which ones L2 regularisation applies to."""
        return np.ones(self.n_params(n_in), dtype=bool)

    def param_shapes(self, n_in):
        """``[(name, shape)]`` of the parameters, in order."""
        n = self.n_params(n_in)
        return [("params", (n,))] if n else []

    def get_config(self):
        """Constructor arguments, as JSON-able values (read from attributes of the same name)."""
        config = {}
        for name, p in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            config[name] = getattr(self, name)
        return config

    def to_dict(self):
        """``{"type": registered name, **config}``."""
        if self.type_name is None or _REGISTRY.get(self.type_name) is not type(self):
            raise ValueError(f"{type(self).__name__} is not registered: decorate it with "
                             "@sparkann.layers.register('name') so that it can be saved")
        return {"type": self.type_name, **self.get_config()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))


def layer_from_dict(d):
    """Rebuild a layer from :meth:`Layer.to_dict` output."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"a layer description must be a dict with a 'type', received {d!r}")
    cls = get_layer_class(d["type"])
    config = {k: v for k, v in d.items() if k != "type"}
    try:
        return cls(**config)
    except TypeError as e:
        raise ValueError(f"cannot build layer {d['type']!r} from {config!r}: {e}") from None


# ----------------------------------------------------------------------------- native layers

def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, received {value!r}")
    return int(value)


@register("dense")
class Dense(Layer):
    """Fully connected layer: ``y = x @ W + b``.

    Shape: x (n, n_in) -> y (n, n_out); W (n_in, n_out) row-major, then b (n_out,).

    Parameters
    ----------
    n_out : int
        Number of outputs.
    """

    def __init__(self, n_out):
        self.n_out = _positive_int(n_out, "Dense n_out")

    def output_size(self, n_in):
        return self.n_out

    def n_params(self, n_in):
        return n_in * self.n_out + self.n_out

    def param_shapes(self, n_in):
        return [("W", (n_in, self.n_out)), ("b", (self.n_out,))]

    def regularized(self, n_in):
        mask = np.zeros(self.n_params(n_in), dtype=bool)
        mask[:n_in * self.n_out] = True  # W only, never the bias
        return mask

    def init_params(self, n_in, rng, scheme="spark"):
        """Initial ``W`` then ``b``.

        ``"spark"``: every entry, bias included, uniform in +-2.4/sqrt(n_in) (Spark MLlib's
        ``AffineLayerModel``). ``"glorot"``: W uniform in +-sqrt(6/(n_in+n_out)), b = 0.
        ``"he"``: W normal with std sqrt(2/n_in), b = 0.
        """
        k = n_in * self.n_out
        if scheme == "spark":
            return rng.uniform(-2.4, 2.4, size=k + self.n_out) / np.sqrt(n_in)
        params = np.zeros(k + self.n_out)
        if scheme == "glorot":
            limit = np.sqrt(6.0 / (n_in + self.n_out))
            params[:k] = rng.uniform(-limit, limit, size=k)
        elif scheme == "he":
            params[:k] = rng.normal(0.0, np.sqrt(2.0 / n_in), size=k)
        else:
            raise ValueError(f"init scheme must be 'spark', 'glorot' or 'he', received {scheme!r}")
        return params

    def compile(self, n_in):
        return [("dense", self.n_out)]


def check_rate(rate, what="dropout rate"):
    """A dropout rate as a float in [0, 1), else ValueError naming ``what``."""
    if (isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer,
                                                                     np.floating))
            or not 0.0 <= rate < 1.0):  # NaN fails both comparisons
        raise ValueError(f"{what} must be a number in [0, 1), received {rate!r}")
    return float(rate)


@register("dropout")
class Dropout(Layer):
    """Inverted dropout: in training each unit is kept with probability ``1 - rate`` and
    scaled by ``1 / (1 - rate)``, else set to 0; in inference (``predict``, ``transform``)
    the identity.

    The engine draws the mask in its kernel from a counter-based generator keyed by the
    training seed, the step, the block of rows, the layer's place and the row, so a retried
    task or a resumed run draws the same mask. Training with dropout needs a mini-batch
    solver (``adam`` or ``sgd``): the full-batch solvers follow one fixed objective.

    Parameters
    ----------
    rate : float
        Probability of dropping a unit, in [0, 1); 0 changes nothing.
    """

    def __init__(self, rate=0.5):
        self.rate = check_rate(rate, "Dropout rate")

    def compile(self, n_in):
        return [("dropout", self.rate)]


class Activation(Layer):
    """An element-wise function computed natively; output width equals input width."""

    #: name in ``ann_core.ACTIVATIONS``
    native_name = None

    def native_spec(self):
        return ("activation", self.native_name)

    def numpy_function(self, x):  # pragma: no cover - overridden
        raise NotImplementedError

    def numpy_derivative(self, x, y):  # pragma: no cover - overridden
        raise NotImplementedError

    def unfused(self, n_in):
        """The stages that compute this activation where the engine cannot fuse it (first, or
        right after another activation): its numpy versions, as a Python stage."""
        return _NumpyActivation(self).compile(n_in)


@register("identity")
class Identity(Activation):
    """``y = x``."""
    native_name = "identity"

    def numpy_function(self, x):
        return x

    def numpy_derivative(self, x, y):
        return np.ones_like(x)


@register("sigmoid")
class Sigmoid(Activation):
    """``y = 1 / (1 + exp(-x))``."""
    native_name = "sigmoid"

    def numpy_function(self, x):
        return 0.5 * (1.0 + np.tanh(0.5 * x))

    def numpy_derivative(self, x, y):
        return y * (1.0 - y)


@register("tanh")
class Tanh(Activation):
    """``y = tanh(x)``."""
    native_name = "tanh"

    def numpy_function(self, x):
        return np.tanh(x)

    def numpy_derivative(self, x, y):
        return 1.0 - y * y


@register("relu")
class ReLU(Activation):
    """``y = max(x, 0)``."""
    native_name = "relu"

    def numpy_function(self, x):
        return np.maximum(x, 0)

    def numpy_derivative(self, x, y):
        return (y > 0).astype(x.dtype)


@register("leaky_relu")
class LeakyReLU(Activation):
    """``y = x`` for x > 0, ``alpha * x`` otherwise.

    Parameters
    ----------
    alpha : float
        Slope for negative inputs, in [0, 1).
    """
    native_name = "leaky_relu"

    def __init__(self, alpha=0.01):
        alpha = float(alpha)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"LeakyReLU alpha must be in [0, 1), received {alpha}")
        self.alpha = alpha

    def native_spec(self):
        return ("activation", "leaky_relu", self.alpha)

    def numpy_function(self, x):
        return np.where(x > 0, x, self.alpha * x)

    def numpy_derivative(self, x, y):
        return np.where(x > 0, 1.0, self.alpha).astype(x.dtype)


@register("softplus")
class Softplus(Activation):
    """``y = log(1 + exp(x))``."""
    native_name = "softplus"

    def numpy_function(self, x):
        return np.logaddexp(0, x)

    def numpy_derivative(self, x, y):
        return 0.5 * (1.0 + np.tanh(0.5 * x))


@register("elu")
class ELU(Activation):
    """``y = x`` for x > 0, ``exp(x) - 1`` otherwise."""
    native_name = "elu"

    def numpy_function(self, x):
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))

    def numpy_derivative(self, x, y):
        return np.where(x > 0, 1.0, y + 1.0).astype(x.dtype)


@register("gelu")
class GELU(Activation):
    """``y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (the tanh approximation)."""
    native_name = "gelu"

    def _v(self, x):
        return 1.5957691216057308 * (x + 0.044715 * x ** 3)

    def numpy_function(self, x):
        return x * 0.5 * (1.0 + np.tanh(0.5 * self._v(x)))

    def numpy_derivative(self, x, y):
        s = 0.5 * (1.0 + np.tanh(0.5 * self._v(x)))
        return s + x * s * (1.0 - s) * 1.5957691216057308 * (1.0 + 3 * 0.044715 * x * x)


def get_activation(name):
    """The activation layer called ``name`` (``"relu"``, ``"sigmoid"``, ... or a registered
    custom activation)."""
    if isinstance(name, Layer):
        return name
    cls = ACTIVATION_NAMES.get(name) or _REGISTRY.get(name)
    if cls is None or not issubclass(cls, (Activation, PythonActivation)):
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{sorted(ACTIVATION_NAMES)} or a registered PythonActivation")
    return cls()


class Loss(Layer):
    """The output function and loss that end a network (no parameters)."""
    is_loss = True
    native_name = None

    def compile(self, n_in):
        return [("loss", self.native_name)]


@register("softmax_cross_entropy")
class SoftmaxCrossEntropy(Loss):
    """Softmax output, cross-entropy loss against class indices (or probability targets)."""
    native_name = "softmax_cross_entropy"


@register("sigmoid_cross_entropy")
class SigmoidCrossEntropy(Loss):
    """Sigmoid output per unit, binary cross-entropy loss (Spark's ``softmaxOnTop=false``)."""
    native_name = "sigmoid_cross_entropy"


@register("squared_error")
class SquaredError(Loss):
    """Identity output, loss ``0.5 * sum((y - t)**2)`` per row (regression)."""
    native_name = "squared_error"


LOSS_NAMES = {cls.native_name: cls for cls in (SoftmaxCrossEntropy, SigmoidCrossEntropy,
                                               SquaredError)}


def get_loss(name):
    """The loss layer called ``name``."""
    if isinstance(name, Loss):
        return name
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSS_NAMES)}")
    return LOSS_NAMES[name]()


# ----------------------------------------------------------------------------- Python layers

class PythonLayer(Layer):
    """Base for a layer written in Python with numpy.

    Implement :meth:`forward` and :meth:`backward`; override :meth:`output_size`,
    :meth:`n_params` and :meth:`init_params` when the layer changes the width or has
    parameters. The engine calls the methods one block of rows at a time with views of its
    workspace: write results into the buffers given, never keep references to them.
    """

    def forward(self, params, x, out):
        """Write the layer's output for the rows of ``x`` (n, n_in) into ``out`` (n, n_out).

        ``params`` is this layer's 1-D slice of the weight vector.
        """
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, params, x, out, d_out, d_in, grad):
        """Back-propagate ``d_out`` = d loss / d out (n, n_out).

        Write d loss / d x into ``d_in`` (n, n_in) unless it is None (first layer), and ADD
        d loss / d params into ``grad`` (this layer's 1-D slice of the gradient).
        ``out`` holds what :meth:`forward` wrote for the same rows.
        """
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def compile(self, n_in):
        return [("python", _BoundPythonLayer(self, n_in))]


class PythonActivation(PythonLayer):
    """Base for an element-wise activation written in Python.

    Implement ``function(x) -> y`` and ``derivative(x, y) -> dy/dx`` on numpy arrays.
    """

    def function(self, x):
        raise NotImplementedError(f"{type(self).__name__}.function")

    def derivative(self, x, y):
        raise NotImplementedError(f"{type(self).__name__}.derivative")

    def forward(self, params, x, out):
        out[...] = self.function(x)

    def backward(self, params, x, out, d_out, d_in, grad):
        if d_in is not None:
            np.multiply(d_out, self.derivative(x, out), out=d_in)


class _BoundPythonLayer:
    """A Python layer bound to its input width: the object ``ann_core.Network`` calls."""

    def __init__(self, layer, n_in):
        self.layer = layer
        self.n_in = n_in
        self.n_out = int(layer.output_size(n_in))
        self.n_params = int(layer.n_params(n_in))

    def forward(self, params, x, out):
        self.layer.forward(params, x, out)

    def backward(self, params, x, out, d_out, d_in, grad):
        self.layer.backward(params, x, out, d_out, d_in, grad)

    def __repr__(self):
        return f"{self.layer!r} on {self.n_in} inputs"


class _NumpyActivation(PythonActivation):
    """A native activation in a place the engine cannot fuse it (first, or after another
    activation): computed with numpy instead."""

    def __init__(self, act):
        self.act = act

    def function(self, x):
        return self.act.numpy_function(x)

    def derivative(self, x, y):
        return self.act.numpy_derivative(x, y)


# ----------------------------------------------------------------------------- the table

class _EngineActivation(Activation):
    """A native activation without a layer class of its own: the engine computes it
    everywhere, after a pass-through Python stage where there is nothing to fuse it to."""

    def unfused(self, n_in):
        return [("python", _BoundPythonLayer(_PassThrough(), n_in)), self.native_spec()]


class _PassThrough(PythonLayer):
    """``y = x``: a stage for an activation to be fused to."""

    def forward(self, params, x, out):
        out[...] = x

    def backward(self, params, x, out, d_out, d_in, grad):
        if d_in is not None:
            d_in[...] = d_out


def _engine_activation(name):
    """A layer class for the engine's activation ``name`` (not registered)."""
    return type("".join(part.title() for part in name.split("_")), (_EngineActivation,),
                {"native_name": name, "__doc__": f"The engine's ``{name}`` activation."})


def _activation_classes():
    """name -> layer class of every activation in the engine's table (``ann_core.ACTIVATIONS``,
    read from csrc/ann_kernels.h), in the engine's order; an activation that has no class
    above gets one, so a row added to the table reaches every list of names."""
    written = {cls.native_name: cls for cls in _REGISTRY.values()
               if issubclass(cls, Activation) and cls.native_name}
    return {name: written.get(name) or register(name)(_engine_activation(name))
            for name in ann_core.ACTIVATIONS}


#: name -> layer class of every native activation, in the engine's order: the list that the
#: estimators' docs, the Spark ``activation`` Param and ``sparkann train --help`` show.
ACTIVATION_NAMES = _activation_classes()


def activation_list(quote=""):
    """The native activations' names as text for docs and help: ``identity, sigmoid, ...``."""
    return ", ".join(f"{quote}{name}{quote}" for name in ACTIVATION_NAMES)


def lists_activations(cls):
    """Class decorator: ``{activations}`` in the docstring becomes :func:`activation_list`."""
    if cls.__doc__:
        cls.__doc__ = cls.__doc__.replace("{activations}", activation_list('"'))
    return cls


# ----------------------------------------------------------------------------- shorthand

def with_dropout(hidden, rates):
    """The layers of the hidden blocks ``hidden`` (one list of layers per hidden layer) with
    dropout: ``Dropout(rates[0])`` on the input, ``Dropout(rates[k])`` after hidden block k;
    a rate of 0 adds no layer (``rates``: as :func:`sparkann.hyperparams.dropout_rates`
    reads them, checked there)."""
    rates = dropout_rates(0.0 if rates is None else rates, len(hidden))
    out = [Dropout(rates[0])] if rates[0] else []
    for block, rate in zip(hidden, rates[1:]):
        out += list(block) + ([Dropout(rate)] if rate else [])
    return out


def from_sizes(sizes, activation="sigmoid", loss="softmax_cross_entropy", dropout=None):
    """Spark's shorthand: ``[784, 256, 10]`` -> ``[Dense(256), act, Dense(10), loss]``.

    Hidden layers get ``activation``; the last ``Dense`` feeds the loss directly (the loss
    applies its own output function). ``sizes[0]`` is the input width and makes no layer.
    ``dropout``: None, or the rates of the input and of each hidden layer
    (:func:`with_dropout`).
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"layer sizes need at least an input and an output size, "
                         f"received {sizes!r}")
    for i, s in enumerate(sizes):
        _positive_int(s, f"layer size {i}")
    act = get_activation(activation)
    # one activation object per place
    hidden = [[Dense(int(n)), layer_from_dict(act.to_dict())] for n in sizes[1:-1]]
    return with_dropout(hidden, dropout) + [Dense(int(sizes[-1])), get_loss(loss)]
