"""Stacked autoencoders: their networks and weight vectors, for both estimators.

An autoencoder of sizes ``[n0, n1, ..., nk]`` encodes with ``Dense(n1), act, ..., Dense(nk),
act`` (the code is the last hidden layer's activation) and decodes with ``Dense(n(k-1)), act,
..., Dense(n0)`` followed by the output function: a sigmoid (reconstruction loss: cross-entropy
against targets in [0, 1]) or the identity (loss: half the squared error).

Greedy layer-wise training fits layer ``i`` alone as the network ``[n(i), n(i+1), n(i)]``,
reconstructing the codes of the layers below. Fine-tuning trains the whole stack
``[n0, ..., nk, ..., n0]`` as one network. The flat weights of the stack are that network's:
the encoders' ``W, b`` in order, then the decoders' in reverse order. Every layer used here
is a registered layer, so topologies and the models built on them save and load.
"""
import numpy as np

from sparkann import layers as L
from sparkann.topology import Topology

#: the reconstruction losses (registered layers) by their output function
RECONSTRUCTION_LOSSES = {"sigmoid": "sigmoid_cross_entropy", "identity": "squared_error"}


def check_sizes(sizes, what="layers"):
    """``sizes`` as a list of ints: the input width and at least one code width, all > 0."""
    try:
        sizes = list(sizes)
    except TypeError:
        raise ValueError(f"{what} must be a list of sizes, e.g. [784, 256, 64], received "
                         f"{sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"{what} needs the input size and at least one code size, e.g. "
                         f"[784, 256, 64], received {sizes!r}")
    for i, s in enumerate(sizes):
        L._positive_int(s, f"{what}[{i}]")
    return [int(s) for s in sizes]


def layer_loss(index, data_in_01, activation):
    """The reconstruction loss of layer ``index``: the input's (layer 0) follows
    ``data_in_01``; a deeper layer reconstructs codes, which lie in [0, 1] for a sigmoid
    activation (cross-entropy) and anywhere otherwise (squared error)."""
    if index == 0:
        inside = data_in_01
    else:
        inside = isinstance(L.get_activation(activation), L.Sigmoid)
    return RECONSTRUCTION_LOSSES["sigmoid" if inside else "identity"]


def stack_sizes(sizes):
    """The sizes of the whole stack, encoder then decoder: ``[784, 256, 64, 256, 784]``."""
    return list(sizes) + list(sizes[-2::-1])


def n_encoder_weights(sizes):
    """Length of the encoder's part of the flat weights."""
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def encoder_layers(sizes, activation):
    """``[Dense(n1), act, ..., Dense(nk), act]``."""
    out = []
    for n in sizes[1:]:
        out += [L.Dense(n), L.get_activation(activation)]
    return out


def encoder_topology(sizes, activation):
    """Inputs to codes; the identity loss only ends the network (its raw output is the code)."""
    return Topology(sizes[0], encoder_layers(sizes, activation) + [L.SquaredError()])


def _decoder_layers(sizes, activation, data_in_01):
    back = list(sizes[::-1])
    layers = encoder_layers(back[:-1], activation) + [L.Dense(back[-1])]
    return layers + ([L.Sigmoid()] if data_in_01 else [])


def decoder_topology(sizes, activation, data_in_01):
    """Codes to reconstructions; the output function is a layer of its own (sigmoid for data
    in [0, 1]) so that the raw output is the reconstruction."""
    return Topology(sizes[-1], _decoder_layers(sizes, activation, data_in_01)
                    + [L.SquaredError()])


def reconstruction_topology(sizes, activation, data_in_01):
    """Inputs to reconstructions through the whole stack (its flat weights); the raw output
    is the reconstruction."""
    return Topology(sizes[0], encoder_layers(sizes, activation)
                    + _decoder_layers(sizes, activation, data_in_01) + [L.SquaredError()])


def stack_topology(sizes, activation, data_in_01):
    """The whole stack as one trainable network (fine-tuning)."""
    return Topology.from_sizes(stack_sizes(sizes), activation=activation,
                               loss=layer_loss(0, data_in_01, activation))


def stack_weights(layer_weights, sizes):
    """The flat weights of the stack from those of the layers trained one by one
    (``layer_weights[i]`` is the flat vector of ``[n(i), n(i+1), n(i)]``)."""
    encoders, decoders = [], []
    for w, (a, b) in zip(layer_weights, zip(sizes, sizes[1:])):
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (2 * a * b + a + b,):
            raise ValueError(f"layer {a}->{b}: expected {2 * a * b + a + b} weights, received "
                             f"shape {w.shape}")
        encoders.append(w[:a * b + b])
        decoders.append(w[a * b + b:])
    return np.concatenate(encoders + decoders[::-1])


def split_weights(weights, sizes):
    """``(encoder, decoder)`` parts of the stack's flat weights."""
    k = n_encoder_weights(sizes)
    return weights[:k], weights[k:]


def layer_input_weights(weights, sizes, index):
    """The encoder weights of layers ``0 .. index - 1``: what computes layer ``index``'s
    input."""
    return weights[:n_encoder_weights(sizes[:index + 1])]


class Encoder:
    """The trained encoder of an autoencoder: its sizes, hidden activation and weights.

    Pass it as ``init`` of :class:`sparkann.MLPClassifier` or :class:`sparkann.MLPRegressor`
    (``hidden_layer_sizes`` starting with the encoder's code sizes, the same activation) to
    start the network's first layers from the encoder; the layers after it start as usual.
    """

    def __init__(self, sizes, activation, weights):
        self.sizes = check_sizes(sizes, "encoder sizes")
        self.activation = L.get_activation(activation).type_name
        self.weights = np.array(weights, dtype=np.float64)
        if self.weights.shape != (n_encoder_weights(self.sizes),):
            raise ValueError(f"an encoder of sizes {self.sizes} has "
                             f"{n_encoder_weights(self.sizes)} weights, received shape "
                             f"{self.weights.shape}")

    def topology(self):
        return encoder_topology(self.sizes, self.activation)

    def encode(self, X, dtype="float32", block_size=128):
        """The codes of the rows of ``X`` (a C-contiguous array)."""
        X = np.ascontiguousarray(X, dtype=dtype)
        net = self.topology().network(dtype=dtype, block_size=max(1, min(block_size, len(X))))
        return net.forward(self.weights.astype(dtype), X, raw=True)

    def initialise(self, topology, weights):
        """Write the encoder's weights into the first layers of ``weights`` (the flat float64
        vector of ``topology``); ValueError if the network does not start with this encoder
        (dropout layers aside)."""
        expected = encoder_layers(self.sizes, self.activation)
        got = [layer for layer in topology.layers if not isinstance(layer, L.Dropout)]
        if (topology.n_in != self.sizes[0] or len(got) <= len(expected)
                or got[:len(expected)] != expected):
            raise ValueError(f"init: the encoder (sizes {self.sizes}, {self.activation} "
                             f"activation) must be the first layers of the network, which "
                             f"has {topology.n_in} inputs and layers {topology.layers}; give "
                             f"it hidden layers {self.sizes[1:]} + more and the activation "
                             f"{self.activation!r}")
        weights[:self.weights.size] = self.weights
        return weights

    def __repr__(self):
        return f"Encoder(sizes={self.sizes}, activation={self.activation!r})"


class StartWeights:
    """``init`` that starts a network from a whole given weight vector."""

    def __init__(self, weights):
        self.weights = np.array(weights, dtype=np.float64)

    def initialise(self, topology, weights):
        if self.weights.shape != (topology.n_weights,):
            raise ValueError(f"init: {self.weights.size} weights given, the network needs "
                             f"{topology.n_weights}")
        weights[...] = self.weights
        return weights
