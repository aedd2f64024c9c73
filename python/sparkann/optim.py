"""Optimizers on flat weight vectors, learning-rate schedules, early stopping and history.

Full-batch solvers (:func:`lbfgs`, :func:`gd`) take ``fun_grad(w) -> (loss, grad)`` and run
the loop themselves, so the same code drives a single-machine objective and a distributed
one. Mini-batch optimizers (:class:`SGD`, :class:`Adam`) update ``w`` in place from a
gradient, one ``step`` at a time; the caller owns the loop.

L2 regularisation (``weight_decay``) is the coupled kind: ``weight_decay * w`` is added to the
gradient before the update, i.e. the objective gains ``weight_decay / 2 * ||w||^2``.
"""
import math
import time

import numpy as np
from scipy.optimize import OptimizeResult
from scipy.optimize._dcsrch import DCSRCH  # MINPACK-2's More-Thuente line search

from ann_core import optimizer_step


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient; ``weights`` are the last finite ones."""

    def __init__(self, message, weights=None, iteration=None):
        super().__init__(message)
        self.weights = weights
        self.iteration = iteration


def mean_objective(loss_sum, grad_sum, n_rows, w, alpha=0.0, l2_mask=None):
    """The training objective from summed per-row losses and gradients.

    ``J = loss_sum / n_rows + alpha / 2 * ||w[l2_mask]||^2``; ``grad_sum`` is turned in place
    into the gradient of ``J``. Every solver of both estimators minimises this function
    (``l2_mask`` from ``Topology.l2_mask()``: the dense weight matrices, not the biases); the
    Spark estimators' mini-batch rounds, which average per-step updates rather than call this,
    use its two terms, :func:`l2_penalty` and :func:`add_l2_gradient`.

    Returns
    -------
    float : J
    """
    if n_rows <= 0:
        raise ValueError(f"the objective needs at least one row, received n_rows={n_rows}")
    grad_sum /= n_rows
    add_l2_gradient(grad_sum, w, alpha, l2_mask)
    return float(loss_sum) / n_rows + l2_penalty(w, alpha, l2_mask)


def l2_penalty(w, alpha, l2_mask=None):
    """``alpha / 2 * ||w[l2_mask]||^2`` (all of ``w`` without a mask), summed in float64."""
    if not alpha:
        return 0.0
    wm = w[np.asarray(l2_mask, bool)] if l2_mask is not None else w
    return 0.5 * alpha * float(np.dot(wm.astype(np.float64), wm))


def add_l2_gradient(grad, w, alpha, l2_mask=None):
    """``grad += alpha * w`` where ``l2_mask`` holds (everywhere without a mask), in place."""
    if alpha:
        grad += (alpha * w) * (l2_mask if l2_mask is not None else 1)
    return grad


# ---------------------------------------------------------------------------- schedules

class Schedule:
    """A learning-rate multiplier as a function of the step count ``t`` (0 for the first)."""

    def __call__(self, t):
        raise NotImplementedError

    def to_dict(self):
        return {"type": type(self).__name__, **vars(self)}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


class Constant(Schedule):
    """Always 1."""

    def __call__(self, t):
        return 1.0


class StepDecay(Schedule):
    """Multiply by ``gamma`` every ``step_size`` steps."""

    def __init__(self, step_size, gamma=0.1):
        if step_size <= 0 or not gamma > 0:
            raise ValueError(f"StepDecay needs step_size > 0 and gamma > 0, received "
                             f"step_size={step_size}, gamma={gamma}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, t):
        return self.gamma ** (t // self.step_size)


class ExponentialDecay(Schedule):
    """``gamma ** t``."""

    def __init__(self, gamma):
        if not 0 < gamma <= 1:
            raise ValueError(f"ExponentialDecay gamma must be in (0, 1], received {gamma}")
        self.gamma = float(gamma)

    def __call__(self, t):
        return self.gamma ** t


class InverseSqrt(Schedule):
    """``1 / sqrt(t + 1)``: Spark MLlib's gradient descent step (``stepSize / sqrt(iter)``)."""

    def __call__(self, t):
        return 1.0 / math.sqrt(t + 1)


class Cosine(Schedule):
    """Cosine decay from 1 to ``floor`` over ``total`` steps, then ``floor``."""

    def __init__(self, total, floor=0.0):
        if total <= 0 or not 0 <= floor <= 1:
            raise ValueError(f"Cosine needs total > 0 and floor in [0, 1], received "
                             f"total={total}, floor={floor}")
        self.total, self.floor = int(total), float(floor)

    def __call__(self, t):
        if t >= self.total:
            return self.floor
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t / self.total))


SCHEDULES = {cls.__name__: cls for cls in (Constant, StepDecay, ExponentialDecay, InverseSqrt,
                                           Cosine)}


def schedule_from_dict(d):
    """Inverse of ``Schedule.to_dict``."""
    if d is None:
        return None
    if not isinstance(d, dict) or d.get("type") not in SCHEDULES:
        raise ValueError(f"unknown schedule {d!r}; expected one of {sorted(SCHEDULES)}")
    return SCHEDULES[d["type"]](**{k: v for k, v in d.items() if k != "type"})


def _check_lr(lr):
    if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"the learning rate must be a positive finite number, received {lr!r}")
    return float(lr)


def _check_schedule(schedule):
    if schedule is not None and not callable(schedule):
        raise ValueError(f"schedule must be callable (t -> multiplier), received {schedule!r}")
    return schedule


# ---------------------------------------------------------------------- full-batch solvers

def _finite_or_raise(loss, grad, w, iteration):
    if not (math.isfinite(loss) and np.all(np.isfinite(grad))):
        raise DivergenceError(f"the loss became non-finite ({loss}) at iteration {iteration}: "
                              "training diverged (lower the learning rate)", weights=w,
                              iteration=iteration)


def _call(fun_grad, w, last_good, iteration):
    try:
        return fun_grad(w)
    except DivergenceError:
        raise
    except FloatingPointError as e:  # the engine's overflow report
        raise DivergenceError(f"training diverged at iteration {iteration}: {e}",
                              weights=last_good, iteration=iteration) from e


_REACHED_MAX_ITER = "maximum number of iterations reached"


class LBFGS:
    """Limited-memory BFGS (no bounds) whose whole state can be saved and restored.

    Each iteration takes the direction ``d = -H g`` from the two-loop recursion over the
    last ``m`` correction pairs ``s = x_new - x``, ``y = g_new - g`` (initial scaling
    ``gamma = s'y / y'y`` of the newest pair), then a More-Thuente line search (scipy's
    MINPACK-2 ``DCSRCH``, sufficient decrease 1e-3, curvature 0.9, at most 20 evaluations)
    from the trial step ``1 / ||d||`` at the first iteration and 1 afterwards. These are the
    choices of L-BFGS-B without bounds. The direction and trial steps are also those of
    Breeze's L-BFGS (Spark MLlib's solver): where both line searches accept the trial step,
    the iterates are the same (measured: MLlib's objective history to 3e-16 relative).

    :meth:`state_dict` holds everything the next iteration depends on; an optimizer given it
    back with :meth:`load_state_dict` continues with bitwise the iterates of one that never
    stopped (same ``fun_grad``, same arguments to :meth:`minimize`).

    Parameters
    ----------
    fun_grad : callable
        ``fun_grad(w) -> (loss, grad)`` with ``w`` a float64 vector.
    w0 : ndarray
        Starting weights (1-D).
    m : int
        Number of correction pairs kept (Spark's default is 10).
    """

    C1, C2 = 1e-3, 0.9  # L-BFGS-B's sufficient decrease and curvature constants
    MAX_STEP = 1e10  # L-BFGS-B's step bound without box constraints
    MAX_EVALUATIONS = 20  # per line search, as L-BFGS-B

    def __init__(self, fun_grad, w0, m=10):
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(f"m (the number of correction pairs) must be a positive integer, "
                             f"received {m!r}")
        w0 = np.asarray(w0)
        if w0.ndim != 1 or w0.size == 0:
            raise ValueError(f"w0 must be a non-empty 1-D vector, received shape {w0.shape}")
        self.fun_grad, self.m = fun_grad, int(m)
        self.x = np.array(w0, dtype=np.float64)
        self.fun = self.grad = None  # at x, once evaluated
        self.fun_prev = None  # the loss before the last iteration (relative-reduction test)
        self.s, self.y = [], []  # correction pairs, oldest first
        self.nit = self.nfev = 0

    # -------------------------------------------------------------------------- state

    def state_dict(self):
        """Weights, loss, gradient, correction pairs and counters (copies).

        ``s`` and ``y`` are ``(k, n)`` arrays, oldest pair first, ``k <= m``.
        """
        n = self.x.size
        return {"x": self.x.copy(), "fun": self.fun, "fun_prev": self.fun_prev,
                "grad": None if self.grad is None else self.grad.copy(),
                "s": np.array(self.s, dtype=np.float64).reshape(-1, n),
                "y": np.array(self.y, dtype=np.float64).reshape(-1, n),
                "nit": self.nit, "nfev": self.nfev}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (for a vector of the same size)."""
        n = self.x.size
        x = np.array(state["x"], dtype=np.float64)
        s = np.array(state["s"], dtype=np.float64)
        y = np.array(state["y"], dtype=np.float64)
        grad = None if state["grad"] is None else np.array(state["grad"], dtype=np.float64)
        if x.shape != (n,) or (grad is not None and grad.shape != (n,)):
            raise ValueError(f"the L-BFGS state is for {x.size} weights (gradient "
                             f"{None if grad is None else grad.shape}); this problem has {n}")
        if s.ndim != 2 or s.shape != y.shape or s.shape[1] != n or s.shape[0] > self.m:
            raise ValueError(f"the L-BFGS state's correction pairs have shapes s {s.shape}, "
                             f"y {y.shape}; expected two equal (k, {n}) arrays with "
                             f"k <= m = {self.m}")
        if (state["fun"] is None) != (grad is None):
            raise ValueError("the L-BFGS state has a loss without a gradient or the reverse")
        self.x, self.grad = x, grad
        self.fun = None if state["fun"] is None else float(state["fun"])
        self.fun_prev = None if state["fun_prev"] is None else float(state["fun_prev"])
        self.s, self.y = list(s), list(y)
        self.nit, self.nfev = int(state["nit"]), int(state["nfev"])

    # ---------------------------------------------------------------------- iterations

    def minimize(self, max_iter=100, tol=1e-6, gtol=1e-9, callback=None):
        """Iterate until a stopping rule holds; see :func:`lbfgs` for the arguments.

        ``max_iter`` counts every iteration of this optimizer, restored ones included.
        """
        _check_iters(max_iter, tol)
        if self.fun is None:
            self.fun, self.grad = self._evaluate(self.x)
        success = True
        while True:
            message = self._stop_reason(max_iter, tol, gtol)
            if message:
                success = message != _REACHED_MAX_ITER
                break
            failure = self.step()
            if failure:
                message, success = failure, False
                break
            if callback is not None:
                try:
                    callback(self.nit, self.x, self.fun)
                except StopIteration:
                    message = "stopped by callback"
                    break
        return OptimizeResult(x=self.x.copy(), fun=self.fun, jac=self.grad.copy(),
                              nit=self.nit, nfev=self.nfev, message=message, success=success)

    def _stop_reason(self, max_iter, tol, gtol):
        if np.max(np.abs(self.grad)) <= gtol:
            return "converged: the largest gradient entry is below gtol"
        # scipy's ftol: (f_prev - f) <= tol * max(|f_prev|, |f|, 1)
        if self.fun_prev is not None and \
                self.fun_prev - self.fun <= tol * max(abs(self.fun_prev), abs(self.fun), 1.0):
            return "converged: the relative reduction of the loss is below tol"
        if self.nit >= max_iter:
            return _REACHED_MAX_ITER
        return None

    def step(self):
        """One iteration from the current state; returns None, or why the line search failed
        (the weights, loss, gradient and pairs are then unchanged)."""
        d = self._direction()
        first = min(1.0 / float(np.linalg.norm(d)), self.MAX_STEP) if self.nit == 0 else 1.0
        trial = {}

        def phi(step):
            x = self.x + step * d
            f, g = self._evaluate(x)
            trial.update(step=step, x=x, f=f, g=g)
            return f

        def derphi(step):  # DCSRCH asks for it right after phi at the same step
            return float(trial["g"] @ d)

        search = DCSRCH(phi, derphi, ftol=self.C1, gtol=self.C2, xtol=1e-14, stpmin=0.0,
                        stpmax=self.MAX_STEP)
        step, _, _, task = search(first, phi0=self.fun, derphi0=float(self.grad @ d),
                                  maxiter=self.MAX_EVALUATIONS)
        if step is None or step != trial.get("step"):
            return (f"line search failed ({task.decode(errors='replace').strip()}); "
                    "returning the last iterate")
        s, y = trial["x"] - self.x, trial["g"] - self.grad
        # A pair enters the memory only with enough curvature: s'y > 0 keeps the implied
        # inverse Hessian positive definite (so d is a descent direction), and the margin
        # eps * y'y keeps 1 / s'y and gamma from being dominated by rounding.
        if float(s @ y) > np.finfo(np.float64).eps * float(y @ y):
            if len(self.s) == self.m:
                del self.s[0], self.y[0]
            self.s.append(s)
            self.y.append(y)
        self.fun_prev = self.fun
        self.x, self.fun, self.grad = trial["x"], trial["f"], trial["g"]
        self.nit += 1
        return None

    def _direction(self):
        """``-H g`` by the two-loop recursion (Nocedal and Wright, Algorithm 7.4)."""
        q = self.grad.copy()
        alphas = []
        for s, y in zip(reversed(self.s), reversed(self.y)):
            alpha = float(s @ q) / float(y @ s)
            q -= alpha * y
            alphas.append(alpha)
        if self.s:
            s, y = self.s[-1], self.y[-1]
            q *= float(s @ y) / float(y @ y)
        for s, y, alpha in zip(self.s, self.y, reversed(alphas)):
            beta = float(y @ q) / float(y @ s)
            q += (alpha - beta) * s
        return -q

    def _evaluate(self, w):
        loss, grad = _call(self.fun_grad, w, self.x, self.nit)
        self.nfev += 1
        loss = float(loss)
        grad = np.array(grad, dtype=np.float64)  # a copy: callers may reuse their buffer
        if grad.shape != self.x.shape:
            raise ValueError(f"fun_grad returned a gradient of shape {grad.shape}; expected "
                             f"{self.x.shape}")
        _finite_or_raise(loss, grad, self.x, self.nit)
        return loss, grad


def lbfgs(fun_grad, w0, max_iter=100, tol=1e-6, m=10, callback=None, gtol=1e-9, state=None):
    """Minimise ``fun_grad`` with :class:`LBFGS` (no bounds).

    Parameters
    ----------
    fun_grad : callable
        ``fun_grad(w) -> (loss, grad)`` with ``w`` a float64 vector.
    w0 : ndarray
        Starting weights (1-D); the result has the same dtype.
    max_iter : int
        Maximum number of iterations (with ``state``: in all, the restored ones included).
    tol : float
        Stop when the relative reduction of the loss is below ``tol`` (scipy's ``ftol``:
        ``f_prev - f <= tol * max(|f_prev|, |f|, 1)``).
    m : int
        Number of correction pairs kept (Spark's default is 10).
    callback : callable, optional
        ``callback(iteration, w, loss)`` after every iteration (1-based); raising
        ``StopIteration`` ends the run with the current weights.
    gtol : float
        Stop when the largest gradient entry is below ``gtol``.
    state : dict, optional
        An :meth:`LBFGS.state_dict` to continue from (then ``w0`` only gives the size and
        dtype): the run goes on exactly as if it had never stopped.

    Returns
    -------
    scipy.optimize.OptimizeResult with ``x`` (dtype of ``w0``), ``fun``, ``jac``, ``nit``,
    ``nfev``, ``message``, ``success`` (False when ``max_iter`` was reached or the line
    search failed; the weights are then the last iterate).

    Raises
    ------
    DivergenceError
        A non-finite loss or gradient; its ``weights`` are the last iterate.
    """
    w0 = np.asarray(w0)
    optimizer = LBFGS(fun_grad, w0, m)
    if state is not None:
        optimizer.load_state_dict(state)
    result = optimizer.minimize(max_iter, tol, gtol, callback)
    result.x = result.x.astype(w0.dtype)
    return result


def gd(fun_grad, w0, step_size=0.03, max_iter=100, tol=1e-6, callback=None, schedule=None):
    """Full-batch gradient descent: ``w -= step_size * schedule(t) * grad``.

    Stops after ``max_iter`` steps, or when the step is small relative to the weights:
    ``||w_new - w_old|| < tol * max(||w_new||, 1)`` (Spark MLlib's convergence test).
    Pass ``schedule=InverseSqrt()`` for Spark's decaying step ``stepSize / sqrt(iter)``.

    ``callback(iteration, w, loss)`` as for :func:`lbfgs` (``loss`` is the loss at the
    weights before the step).
    """
    step_size = _check_lr(step_size)
    _check_iters(max_iter, tol)
    _check_schedule(schedule)
    w = np.array(w0, dtype=np.float64)
    last_good = w  # the last weights whose loss was finite
    loss, nit, nfev, message = math.inf, 0, 0, "maximum number of iterations reached"
    for t in range(int(max_iter)):
        loss, grad = _call(fun_grad, w, last_good, t)
        nfev += 1
        loss, grad = float(loss), np.asarray(grad, dtype=np.float64)
        _finite_or_raise(loss, grad, last_good, t)
        last_good = w
        rate = step_size * (schedule(t) if schedule is not None else 1.0)
        w_new = w - rate * grad
        nit = t + 1
        converged = np.linalg.norm(w_new - w) < tol * max(np.linalg.norm(w_new), 1.0)
        w = w_new
        if callback is not None:
            try:
                callback(nit, w, loss)
            except StopIteration:
                message = "stopped by callback"
                break
        if converged:
            message = "converged: the step is below tol"
            break
    return OptimizeResult(x=w.astype(np.asarray(w0).dtype), fun=loss, nit=nit, nfev=nfev,
                          success=True, message=message)


def _check_iters(max_iter, tol):
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, received {max_iter!r}")
    if not (isinstance(tol, (int, float, np.floating)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, received {tol!r}")


# ---------------------------------------------------------------------- mini-batch optimizers

class _Stepper:
    """Shared parts of the mini-batch optimizers: step count, schedule, state, and the choice
    between the engine's fused step and numpy.

    :meth:`update` runs in one native pass (``ann_core.optimizer_step``) when ``w``, ``g`` and
    the state are C-contiguous 1-D arrays of one dtype, float32 or float64; anything else
    takes the numpy formula of the class docstring, which is the reference the native step
    is tested against. The two agree to a few units in the last place (the native step
    multiplies by precomputed reciprocals where numpy divides), and the native step computes
    with denormals flushed to zero, as the engine does.
    """

    _state_arrays = ()

    def __init__(self, lr, weight_decay, schedule):
        self.lr = _check_lr(lr)
        if not (isinstance(weight_decay, (int, float, np.floating)) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, received {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.schedule = _check_schedule(schedule)
        self.t = 0

    @property
    def learning_rate(self):
        """The base rate ``lr`` under scikit-learn's name."""
        return self.lr

    def current_lr(self):
        """The learning rate the next step uses."""
        return self.lr * (self.schedule(self.t) if self.schedule is not None else 1.0)

    def step(self, w, g):
        """Update ``w`` in place from the gradient ``g``; returns ``w``."""
        self.update(w, g)
        return w

    def update(self, w, g, grad_scale=1.0, l2=0.0, l2_runs=None, squares=False):
        """One step, ``w`` updated in place, from the gradient
        ``grad_scale * g + weight_decay * w``, plus ``l2 * w`` on the slices
        ``w[start:stop]`` of the ``(start, stop)`` rows of ``l2_runs`` (on all of ``w``
        without runs): a summed batch gradient and its L2 term become the step in one pass.

        Returns
        -------
        (squares, finite): ``sum(w**2)`` over the runs before the step (a float summed in
        float64 when ``squares``, else None: the batch loss's L2 term), and whether every
        weight is finite after the step.
        """
        if self._native(w, g):
            self._ensure_state(w)
            result = optimizer_step(
                self._kind(), w, g, *self._moments(), grad_scale=grad_scale,
                decay=self.weight_decay, run_decay=l2, runs=l2_runs, squares=squares,
                **self._coefficients())
            self._advance()
            return result
        total = _sum_squares(w, l2_runs) if squares else None
        d = g * grad_scale if grad_scale != 1 else g
        if self.weight_decay or l2:
            d = d + _decay_vector(w, self.weight_decay, l2, l2_runs)
        self._ensure_state(w)
        self._numpy_step(w, d)
        self._advance()
        return total, bool(np.isfinite(w).all())

    def _native(self, w, g):
        """Whether :meth:`update` runs the engine's fused step for these arrays."""
        if not (isinstance(w, np.ndarray) and w.dtype in (np.float32, np.float64)
                and w.flags.writeable):
            return False
        state = [getattr(self, name) for name in self._state_arrays]
        return all(isinstance(a, np.ndarray) and a.dtype == w.dtype and a.ndim == 1
                   and a.shape == w.shape and a.flags.c_contiguous
                   for a in [w, g] + [a for a in state if a is not None])

    def _ensure_state(self, w):
        for name in self._state_arrays:
            if getattr(self, name) is None:
                setattr(self, name, np.zeros_like(w))

    def _moments(self):
        return [getattr(self, name) for name in self._state_arrays]

    def _advance(self):
        self.t += 1

    def state_dict(self):
        """Step count and moment arrays (copies)."""
        state = {"t": self.t}
        for name in self._state_arrays:
            value = getattr(self, name)
            state[name] = None if value is None else value.copy()
        return state

    def load_state_dict(self, d):
        """Restore what :meth:`state_dict` returned."""
        self.t = int(d["t"])
        for name in self._state_arrays:
            value = d.get(name)
            setattr(self, name, None if value is None else np.array(value))


def _sum_squares(w, runs):
    """``sum(w**2)`` over the ``(start, stop)`` slices of ``runs`` (all of ``w`` without),
    in float64."""
    parts = [w] if runs is None else [w[start:stop] for start, stop in runs]
    return float(sum(np.dot(p.astype(np.float64), p.astype(np.float64)) for p in parts))


def _decay_vector(w, weight_decay, l2, runs):
    """``weight_decay * w``, plus ``l2 * w`` on the slices of ``runs`` (everywhere without),
    the coefficients added first as the native step adds them."""
    if runs is None:
        return (weight_decay + l2) * w
    d = weight_decay * w
    for start, stop in runs:
        d[start:stop] = (weight_decay + l2) * w[start:stop]
    return d


class SGD(_Stepper):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    With ``g = grad + weight_decay * w`` and ``lr_t = lr * schedule(t)``::

        v = momentum * v + g            (v starts at 0)
        w -= lr_t * (g + momentum * v)  if nesterov else  lr_t * v

    This is PyTorch's formulation, so momentum 0 is plain SGD.
    """

    _state_arrays = ("velocity",)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, schedule=None):
        super().__init__(lr, weight_decay, schedule)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), received {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.velocity = None

    def _ensure_state(self, w):
        if self.momentum:
            super()._ensure_state(w)

    def _moments(self):
        return [self.velocity] if self.momentum else []

    def _kind(self):
        return "sgd" if not self.momentum else "nesterov" if self.nesterov else "momentum"

    def _coefficients(self):
        return {"rate": self.current_lr(), "beta1": self.momentum}

    def _numpy_step(self, w, g):
        rate = self.current_lr()
        if self.momentum:
            self.velocity *= self.momentum
            self.velocity += g
            direction = g + self.momentum * self.velocity if self.nesterov else self.velocity
        else:
            direction = g
        w -= (rate * direction).astype(w.dtype, copy=False)


class Adam(_Stepper):
    """Adam (Kingma and Ba, 2015) with bias correction.

    With ``g = grad + weight_decay * w``, ``t`` counting from 1::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        w -= lr_t * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
    """

    _state_arrays = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 schedule=None):
        super().__init__(lr, weight_decay, schedule)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{name} must be in [0, 1), received {beta!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, received {eps!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m = self.v = None

    def _kind(self):
        return "adam"

    def _coefficients(self):
        t = self.t + 1  # the step being taken
        return {"rate": self.current_lr() / (1 - self.beta1 ** t), "beta1": self.beta1,
                "beta2": self.beta2, "inv_bias2": 1 / (1 - self.beta2 ** t), "eps": self.eps}

    def _numpy_step(self, w, g):
        rate, t = self.current_lr(), self.t + 1
        # the formula above, operation for operation, in two scratch vectors (no temporaries)
        a, b = self._scratch(w)
        np.multiply(g, 1 - self.beta1, out=a)
        self.m *= self.beta1
        self.m += a
        np.multiply(g, g, out=a)
        a *= 1 - self.beta2
        self.v *= self.beta2
        self.v += a
        np.divide(self.v, 1 - self.beta2 ** t, out=a)
        np.sqrt(a, out=a)
        a += self.eps
        np.divide(self.m, 1 - self.beta1 ** t, out=b)
        b *= rate
        b /= a
        w -= b

    def _scratch(self, w):
        scratch = getattr(self, "_scratch_arrays", None)
        if scratch is None or scratch[0].shape != w.shape or scratch[0].dtype != self.m.dtype:
            scratch = self._scratch_arrays = (np.empty_like(self.m), np.empty_like(self.m))
        return scratch

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_scratch_arrays", None)
        return state


# --------------------------------------------------------------------- history and stopping

class History:
    """What happened during training, one entry per iteration (full batch) or epoch.

    Attributes
    ----------
    loss, val_loss, val_metric, seconds : list of float
        Training objective, validation loss and metric (NaN where no validation set),
        and wall time in seconds since training started.
    """

    def __init__(self):
        self.loss, self.val_loss, self.val_metric, self.seconds = [], [], [], []
        self._start = time.perf_counter()

    def append(self, loss, val_loss=math.nan, val_metric=math.nan):
        self.loss.append(float(loss))
        self.val_loss.append(float(val_loss))
        self.val_metric.append(float(val_metric))
        self.seconds.append(time.perf_counter() - self._start)

    def __len__(self):
        return len(self.loss)

    def to_dict(self):
        return {"loss": list(self.loss), "val_loss": list(self.val_loss),
                "val_metric": list(self.val_metric), "seconds": list(self.seconds)}

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`; ValueError naming the field that is not a list of
        numbers of the same length as ``loss``."""
        if not isinstance(d, dict):
            raise ValueError(f"history must be a JSON object, received {str(d)[:80]}")
        h = cls()
        for key in ("loss", "val_loss", "val_metric", "seconds"):
            values = d.get(key, [])
            if not isinstance(values, list) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
                raise ValueError(f"history {key!r} must be a list of numbers, received "
                                 f"{str(values)[:80]}")
            setattr(h, key, [float(x) for x in values])
            if len(getattr(h, key)) != len(h.loss):
                raise ValueError(f"history {key!r} has {len(values)} entries, 'loss' has "
                                 f"{len(h.loss)}")
        return h


class EarlyStopping:
    """Stop when a monitored value has not improved by ``tol`` for ``patience`` updates.

    Parameters
    ----------
    tol : float
        An update improves if ``metric < best - tol`` (``mode="min"``) or
        ``metric > best + tol`` (``mode="max"``).
    patience : int
        Updates without improvement tolerated before stopping.
    mode : {"min", "max"}

    Attributes
    ----------
    best_metric, best_weights (a copy), best_iteration (0-based count of updates)
    """

    def __init__(self, tol=1e-4, patience=10, mode="min"):
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, received {tol!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) \
                or patience < 1:
            raise ValueError(f"patience must be a positive integer, received {patience!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', received {mode!r}")
        self.tol, self.patience, self.mode = float(tol), int(patience), mode
        self.best_metric = math.inf if mode == "min" else -math.inf
        self.best_weights = None
        self.best_iteration = -1
        self.iteration = -1
        self.bad = 0

    def update(self, metric, w):
        """Record ``metric`` for weights ``w``; True when training should stop."""
        self.iteration += 1
        metric = float(metric)
        sign = 1.0 if self.mode == "min" else -1.0
        if sign * metric < sign * self.best_metric - self.tol or self.best_weights is None:
            if math.isfinite(metric) or self.best_weights is None:
                self.best_metric, self.best_iteration = metric, self.iteration
                self.best_weights = np.array(w, copy=True)
                self.bad = 0
                return False
        self.bad += 1
        return self.bad >= self.patience
