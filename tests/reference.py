"""A plain numpy implementation of the engine's networks, written independently of it.

It reads the same flat weight layout (per dense stage ``W`` (n_in, n_out) row-major, then
``b``), computes in float64 whatever the input dtype, and returns the summed loss and its
gradient, so tests can compare the engine against it and against finite differences.
Only dense stages, activations, dropout stages and a loss are supported (no Python layers).
A dropout stage multiplies by the mask it is given (``masks``: engine stage index -> the
multipliers, 0 or 1 / (1 - rate), of every row and unit) and is the identity without one;
:func:`dropout_multipliers` draws the engine's masks from its documented random stream.
"""
import numpy as np
from scipy.special import expit, log_expit, logsumexp


def _gelu_v(z):
    """2 sqrt(2/pi) (z + 0.044715 z^3): GELU (tanh approximation) is z * sigmoid of it."""
    return 1.5957691216057308 * (z + 0.044715 * (z * z * z))


# One row per native activation (the engine's ann_core.ACTIVATIONS): its function and its
# derivative of the pre-activation z in numpy, and the same function in PyTorch
# (``torch.nn.functional`` as F). ``a`` is the activation's parameter (leaky_relu's slope).
ACTIVATIONS = {
    "identity": (lambda z, a: z, lambda z, a: np.ones_like(z), lambda F, z, a: z),
    "sigmoid": (lambda z, a: expit(z), lambda z, a: expit(z) * (1 - expit(z)),
                lambda F, z, a: F.sigmoid(z)),
    "tanh": (lambda z, a: np.tanh(z), lambda z, a: 1 - np.tanh(z) ** 2,
             lambda F, z, a: F.tanh(z)),
    "relu": (lambda z, a: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype),
             lambda F, z, a: F.relu(z)),
    "leaky_relu": (lambda z, a: np.where(z < 0, a * z, z), lambda z, a: np.where(z > 0, 1.0, a),
                   lambda F, z, a: F.leaky_relu(z, a)),
    "softplus": (lambda z, a: np.logaddexp(0, z), lambda z, a: expit(z),
                 lambda F, z, a: F.softplus(z)),
    "elu": (lambda z, a: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
            lambda z, a: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0))),
            lambda F, z, a: F.elu(z)),
    "gelu": (lambda z, a: z * expit(_gelu_v(z)),
             lambda z, a: expit(_gelu_v(z)) + z * expit(_gelu_v(z)) * expit(-_gelu_v(z))
             * 1.5957691216057308 * (1 + 3 * 0.044715 * z * z),
             lambda F, z, a: F.gelu(z, approximate="tanh")),
}


def _row(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}")
    return ACTIVATIONS[name]


def activate(name, z, alpha=0.01):
    """Activation ``name`` applied to the pre-activations ``z``."""
    return _row(name)[0](z, alpha)


def activation_derivative(name, z, alpha=0.01):
    """d activate(z) / d z, element-wise."""
    return _row(name)[1](z, alpha)


def torch_activate(name, z, alpha=0.01):
    """Activation ``name`` of the torch tensor ``z``, with PyTorch's own function."""
    import torch.nn.functional as F
    return _row(name)[2](F, z, alpha)


# splitmix64's finaliser over (key, counter), as csrc/ann_random.h documents it
_M64 = (1 << 64) - 1


def _mix64(key, counter):
    """ann_random_u64 on numpy uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(key) * np.uint64(0xD1B54A32D192ED03)
             + (np.asarray(counter, np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _dropout_bits(seed, j):
    """ann_dropout_bits: a Weyl step from the row's 32-bit seed, then lowbias32."""
    with np.errstate(over="ignore"):
        v = (np.asarray(seed, np.uint32) + np.asarray(j, np.uint32) * np.uint32(0x9E3779B9))
        v = v ^ (v >> np.uint32(16))
        v = v * np.uint32(0x7FEB352D)
        v = v ^ (v >> np.uint32(15))
        v = v * np.uint32(0x846CA68B)
        return v ^ (v >> np.uint32(16))


def dropout_multipliers(key, stage, rows, cols, rate, dtype="float64", row0=0):
    """The engine's dropout multipliers of rows ``row0 ..`` of one call's stage ``stage``
    under ``key = (seed, iteration, block)``, as csrc/ann_kernels.h documents them: row r
    has the 32-bit seed of ann_random_u64(stream, r) (halves xor-ed), unit j is kept when
    ann_dropout_bits(seed, j) >= floor(rate * 2^32)."""
    seed, iteration, block = key
    stream = _mix64(_mix64(_mix64(seed, iteration), block), stage)
    z = _mix64(stream, np.arange(row0, row0 + rows, dtype=np.uint64))
    row_seed = ((z ^ (z >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    bits = _dropout_bits(row_seed[:, None], np.arange(cols, dtype=np.uint32)[None, :])
    keep = bits >= np.uint32(int(rate * 4294967296.0))
    scale = np.asarray(1.0 / (1.0 - rate)).astype(dtype)
    return np.where(keep, scale, np.zeros((), dtype)).astype(dtype)


def engine_masks(n_in, layers, key, rows, dtype="float64"):
    """``{engine stage index: multipliers}`` of every dropout stage of ``layers``."""
    masks, index, width = {}, -1, n_in
    for spec in layers[:-1]:
        if spec[0] == "activation":
            continue
        index += 1
        if spec[0] == "dropout":
            masks[index] = dropout_multipliers(key, index, rows, width, spec[1], dtype)
        else:
            width = spec[1]
    return masks


def parse(n_in, layers):
    """Stages of a topology spec as (n_in, n_out, activation, alpha), and the loss; a
    dropout stage is (width, width, "dropout", rate)."""
    stages, width = [], n_in
    for spec in layers[:-1]:
        if spec[0] == "dense":
            stages.append([width, spec[1], "identity", 0.01])
            width = spec[1]
        elif spec[0] == "dropout":
            stages.append([width, width, "dropout", spec[1]])
        elif spec[0] == "activation":
            if stages[-1][2] == "dropout":
                raise ValueError("the reference takes no activation right after a dropout")
            stages[-1][2] = spec[1]
            if len(spec) > 2:
                stages[-1][3] = spec[2]
        else:
            raise ValueError(f"the reference supports dense and activation stages, not {spec!r}")
    return [tuple(s) for s in stages], layers[-1][1]


def n_weights(n_in, layers):
    stages, _ = parse(n_in, layers)
    return sum(a * b + b for a, b, act, _ in stages if act != "dropout")


def unpack(weights, stages):
    """Views (W, b) per dense stage into the flat vector (None for a dropout stage)."""
    params, offset = [], 0
    for n_in, n_out, act, _ in stages:
        if act == "dropout":
            params.append(None)
            continue
        W = weights[offset:offset + n_in * n_out].reshape(n_in, n_out)
        offset += n_in * n_out
        b = weights[offset:offset + n_out]
        offset += n_out
        params.append((W, b))
    assert offset == weights.size, (offset, weights.size)
    return params


def targets(y, n_out):
    """Dense float64 targets: one-hot for int class indices, the targets themselves otherwise."""
    if y.ndim == 1:
        t = np.zeros((y.shape[0], n_out))
        t[np.arange(y.shape[0]), y] = 1.0
        return t
    return np.asarray(y, np.float64)


def _forward_all(weights, X, stages, masks=None):
    """Pre-activations and outputs of every stage."""
    h = np.asarray(X, np.float64)
    inputs, pre = [], []
    params = unpack(np.asarray(weights, np.float64), stages)
    for i, (p, (_, _, act, alpha)) in enumerate(zip(params, stages)):
        inputs.append(h)
        if act == "dropout":
            mask = (masks or {}).get(i)
            h = h if mask is None else h * np.asarray(mask, np.float64)
            pre.append(h)
            continue
        z = h @ p[0] + p[1]
        pre.append(z)
        h = activate(act, z, alpha)
    return inputs, pre, h


def output(loss, logits):
    """What the network outputs for its last stage's values under ``loss``."""
    if loss == "softmax_cross_entropy":
        return np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    if loss == "sigmoid_cross_entropy":
        return expit(logits)
    if loss == "squared_error":
        return logits
    raise ValueError(f"unknown loss {loss!r}")


def forward(n_in, layers, weights, X, raw=False, masks=None):
    """Network outputs (probabilities or values), or the last stage's values with ``raw``."""
    stages, loss = parse(n_in, layers)
    logits = _forward_all(weights, X, stages, masks)[2]
    return logits if raw else output(loss, logits)


def loss_and_delta(loss, z, t):
    """Summed loss and d loss / d z for last-stage values z and dense targets t."""
    if loss == "softmax_cross_entropy":
        log_p = z - logsumexp(z, axis=1, keepdims=True)
        return -(t * log_p).sum(), np.exp(log_p) * t.sum(axis=1, keepdims=True) - t
    if loss == "sigmoid_cross_entropy":
        value = -(t * log_expit(z) + (1 - t) * log_expit(-z)).sum()
        return value, expit(z) - t
    if loss == "squared_error":
        return 0.5 * ((z - t) ** 2).sum(), z - t
    raise ValueError(f"unknown loss {loss!r}")


def loss_grad(n_in, layers, weights, X, y, masks=None):
    """(summed loss, gradient as a flat float64 vector in the engine's layout)."""
    stages, loss = parse(n_in, layers)
    params = unpack(np.asarray(weights, np.float64), stages)
    inputs, pre, out = _forward_all(weights, X, stages, masks)
    value, delta = loss_and_delta(loss, out, targets(y, stages[-1][1]))
    grads = []
    for i in range(len(stages) - 1, -1, -1):
        _, _, act, alpha = stages[i]
        if act == "dropout":
            mask = (masks or {}).get(i)
            delta = delta if mask is None else delta * np.asarray(mask, np.float64)
            continue
        delta = delta * activation_derivative(act, pre[i], alpha)
        grads.append((inputs[i].T @ delta).ravel())
        grads.append(delta.sum(axis=0))
        delta = delta @ params[i][0].T
    # grads holds (gW, gb) pairs from the last stage back: reverse the pairs, keep W before b.
    pairs = [(grads[k], grads[k + 1]) for k in range(0, len(grads), 2)][::-1]
    return value, np.concatenate([g for pair in pairs for g in pair])


def pre_activations(n_in, layers, weights, X, masks=None):
    """Every stage's pre-activation values (to keep finite-difference steps off ReLU kinks)."""
    stages, _ = parse(n_in, layers)
    return _forward_all(weights, X, stages, masks)[1]
