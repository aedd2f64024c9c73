"""A network's topology: its layers, shapes, flat weight layout and initialisation."""
import os

import numpy as np

from sparkann import layers as L

FORMAT = 1  # version of the dict written by Topology.to_dict


def machine_memory():
    """Bytes of physical memory of this machine, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_weights_fit(n_weights, what):
    """Refuse, before anything is allocated, a weight vector larger than this machine's memory.

    Initialisation and every optimizer hold the weights as float64, so 8 bytes per weight is
    the least any use of the network needs (training needs several such vectors).
    """
    need, memory = 8 * n_weights, machine_memory()
    if memory is not None and need > memory:
        raise MemoryError(f"{what} has {n_weights:,} weights: {need:,} bytes "
                          f"({need / 2**30:,.1f} GiB) as float64, more than this machine's "
                          f"{memory / 2**30:,.1f} GiB of memory; use smaller layers")


class Topology:
    """A feed-forward network described by its input width and its layers.

    Parameters
    ----------
    n_in : int
        Number of input features.
    layers : list of Layer
        The stages from input to output; the last one must be a loss
        (``SoftmaxCrossEntropy``, ``SigmoidCrossEntropy`` or ``SquaredError``).

    Attributes
    ----------
    n_in, n_out : int
        Input and output widths.
    n_weights : int
        Length of the flat weight vector.
    sizes : list of int
        ``n_in`` then the width after every layer with parameters or a width change
        (``[784, 256, 10]`` for ``from_sizes([784, 256, 10])``).
    layout : list of (layer index, name, offset, shape)
        Where each parameter lives in the flat vector.

    Examples
    --------
    >>> from sparkann.layers import Dense, ReLU, SoftmaxCrossEntropy
    >>> t = Topology(4, [Dense(3), ReLU(), Dense(2), SoftmaxCrossEntropy()])
    >>> t.n_weights
    23
    """

    def __init__(self, n_in, layers):
        self.n_in = L._positive_int(n_in, "n_in")
        layers = list(layers)
        if not layers:
            raise ValueError("a topology needs at least one layer and a loss; received no layers")
        for i, layer in enumerate(layers):
            if not isinstance(layer, L.Layer):
                raise ValueError(f"layer {i}: expected a sparkann.layers.Layer, received "
                                 f"{layer!r}")
        if not layers[-1].is_loss:
            raise ValueError(f"the last layer must be a loss (SoftmaxCrossEntropy, "
                             f"SigmoidCrossEntropy or SquaredError), received {layers[-1]!r}")
        for i, layer in enumerate(layers[:-1]):
            if layer.is_loss:
                raise ValueError(f"layer {i}: a loss ({layer!r}) may only come last")
        if not any(isinstance(layer, (L.Dense, L.PythonLayer)) for layer in layers[:-1]):
            raise ValueError("a topology needs at least one Dense or Python layer before the "
                             f"loss, received {layers!r}")
        self.layers = layers
        self._shape_inference()

    def _shape_inference(self):
        width, offset = self.n_in, 0
        self.widths_in, self.offsets, self.layout = [], [], []
        self.sizes = [self.n_in]
        for i, layer in enumerate(self.layers):
            n_out = int(layer.output_size(width))
            n_params = int(layer.n_params(width))
            if n_out <= 0 or n_params < 0:
                raise ValueError(f"layer {i} ({layer!r}): output size {n_out} and {n_params} "
                                 f"parameters for {width} inputs")
            self.widths_in.append(width)
            self.offsets.append(offset)
            at = offset
            for name, shape in layer.param_shapes(width):
                self.layout.append((i, name, at, tuple(shape)))
                at += int(np.prod(shape))
            if at != offset + n_params:
                raise ValueError(f"layer {i} ({layer!r}): param_shapes cover {at - offset} "
                                 f"values but n_params is {n_params}")
            if n_params or (n_out != width and not layer.is_loss) or isinstance(layer, L.Dense):
                self.sizes.append(n_out)
            offset += n_params
            width = n_out
        self.n_out = width
        self.n_weights = offset
        check_weights_fit(offset, f"the network {self.sizes}")

    @classmethod
    def from_sizes(cls, sizes, activation="sigmoid", loss="softmax_cross_entropy",
                   dropout=None):
        """Spark's shorthand, e.g. ``Topology.from_sizes([784, 256, 10])``; ``dropout``:
        None or the rates of the input and each hidden layer (``layers.with_dropout``)."""
        sizes = list(sizes)
        return cls(sizes[0] if sizes else 0, L.from_sizes(sizes, activation, loss, dropout))

    @property
    def loss(self):
        """Name of the loss (``"softmax_cross_entropy"``, ...)."""
        return self.layers[-1].native_name

    def spec(self):
        """The stages for ``ann_core.Network``."""
        out, can_fuse = [], False
        for layer, width in zip(self.layers, self.widths_in):
            if isinstance(layer, L.Activation):
                if can_fuse:
                    out.append(layer.native_spec())
                    can_fuse = False  # the engine fuses one activation per stage
                else:
                    out.extend(layer.unfused(width))
                continue
            out.extend(layer.compile(width))
            # an engine stage of its own: dropout too (its output, then the activation)
            can_fuse = isinstance(layer, (L.Dense, L.PythonLayer, L.Dropout))
        return out

    def network(self, dtype="float32", block_size=128):
        """Compile to an ``ann_core.Network`` with a workspace of ``block_size`` rows."""
        import ann_core

        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
                or block_size <= 0:
            raise ValueError(f"block_size must be a positive integer, received {block_size!r}")
        dtype = "bfloat16" if str(dtype) == "bfloat16" else str(np.dtype(dtype))
        return ann_core.Network(self.n_in, self.spec(), dtype=dtype, block_size=int(block_size))

    def init_weights(self, seed=None, scheme="spark", dtype="float32"):
        """A flat weight vector, initialised layer by layer; the same seed gives the same vector.

        Parameters
        ----------
        seed : int or None
        scheme : {"spark", "glorot", "he"}
            ``"spark"``: uniform in +-2.4/sqrt(n_in), bias included, as Spark MLlib does.
        dtype : {"float32", "float64"}
        """
        if scheme not in ("spark", "glorot", "he"):
            raise ValueError(f"init scheme must be 'spark', 'glorot' or 'he', received {scheme!r}")
        rng = np.random.default_rng(seed)
        w = np.empty(self.n_weights, dtype=np.float64)
        for layer, width, offset in zip(self.layers, self.widths_in, self.offsets):
            n = layer.n_params(width)
            if n:
                params = np.asarray(layer.init_params(width, rng, scheme), dtype=np.float64)
                if params.shape != (n,):
                    raise ValueError(f"{layer!r}.init_params returned shape {params.shape}, "
                                     f"expected ({n},)")
                w[offset:offset + n] = params
        return w.astype(dtype)

    def l2_mask(self):
        """Boolean mask over the weights that L2 regularisation applies to (biases excluded)."""
        mask = np.zeros(self.n_weights, dtype=bool)
        for layer, width, offset in zip(self.layers, self.widths_in, self.offsets):
            n = layer.n_params(width)
            if n:
                mask[offset:offset + n] = layer.regularized(width)
        return mask

    def params_of(self, weights, index):
        """``{name: view}`` of layer ``index``'s parameters inside ``weights``."""
        return {name: weights[off:off + int(np.prod(shape))].reshape(shape)
                for i, name, off, shape in self.layout if i == index}

    def summary(self):
        """A table of the layers, their output widths and parameter counts."""
        rows = [("layer", "output", "params"), ("input", str(self.n_in), "0")]
        for layer, width in zip(self.layers, self.widths_in):
            rows.append((repr(layer), str(layer.output_size(width)),
                         f"{layer.n_params(width):,}"))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [f"{a:<{w0}}  {b:>{w1}}  {c:>12}" for a, b, c in rows]
        rule = "-" * len(lines[0])
        return "\n".join([lines[0], rule, *lines[1:], rule,
                          f"total weights: {self.n_weights:,}"])

    def to_dict(self):
        """JSON-able description (no weights)."""
        return {"format": FORMAT, "n_in": self.n_in,
                "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or not {"n_in", "layers"} <= set(d):
            raise ValueError(f"a topology description needs 'n_in' and 'layers', received {d!r}")
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"topology format {d.get('format')!r} is not supported "
                             f"(this version reads format {FORMAT})")
        if not isinstance(d["layers"], list):
            raise ValueError(f"topology 'layers' must be a list, received {d['layers']!r}")
        return cls(d["n_in"], [L.layer_from_dict(x) for x in d["layers"]])

    def __eq__(self, other):
        return (isinstance(other, Topology) and self.n_in == other.n_in
                and self.layers == other.layers)

    def __repr__(self):
        return f"Topology(n_in={self.n_in}, layers={self.layers!r})"
