"""The tests' one finite-difference checker.

``central_differences(f, w, indices, step, kink)`` estimates ``df/dw_i`` as
``(f(w + h e_i) - f(w - h e_i)) / 2h`` at each index; where ``kink(i)`` says that the +-h
step crosses a point where ``f`` has no derivative (a ReLU at 0), the index is left out, as
Caffe's gradient checker does with its ``kink`` argument. Each test then compares the
estimates with the analytic gradient at the tolerance its quantity allows.
"""
import numpy as np


def central_differences(f, w, indices, step, kink=None):
    """``{i: (f(w + step e_i) - f(w - step e_i)) / (2 step)}`` for the indices where
    ``kink(i)`` is not true; ``f`` takes a copy of ``w`` and returns a number."""
    w = np.asarray(w)
    estimates = {}
    for i in indices:
        i = int(i)
        if kink is not None and kink(i):
            continue
        up, down = w.copy(), w.copy()
        up[i] += step
        down[i] -= step
        estimates[i] = (f(up) - f(down)) / (2 * step)
    return estimates


def sign_flip(pre_activations, w, step):
    """A ``kink`` for :func:`central_differences`: true at ``i`` when moving ``w[i]`` by
    +-``step`` changes the sign of any value ``pre_activations(w)`` returns (a list of
    arrays: the inputs of the activations that bend at 0)."""
    def kink(i):
        up, down = w.copy(), w.copy()
        up[i] += step
        down[i] -= step
        return any(np.any((a > 0) != (b > 0))
                   for a, b in zip(pre_activations(up), pre_activations(down)))
    return kink
