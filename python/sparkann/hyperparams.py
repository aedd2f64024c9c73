"""Training hyperparameters: one table of checks for both estimators.

A rule names a hyperparameter as ``sparkann.MLPClassifier`` spells it and as the Spark
estimators spell their Param (None where one side has no such setting), the test its value
must pass and what the error says is expected. Both estimators run :func:`check` before any
training, so the same value is refused on one machine and on Spark with the same words.
"""
import math
import numbers
from dataclasses import dataclass

from sparkann.solvers import NAMES as SOLVER_NAMES
from sparkann.solvers import SOLVERS, get_solver

INITS = ("spark", "glorot", "he")
# bfloat16: mixed precision, bfloat16 GEMM operands over float32 arrays (see ann_core.Network)
DTYPES = ("float32", "float64", "bfloat16")


def array_dtype(dtype):
    """The dtype of the arrays (data, weights, gradients) that a network of ``dtype``
    computes on: bfloat16 networks keep them in float32."""
    return "float32" if str(dtype) == "bfloat16" else str(dtype)


def is_int(value):
    """An integer (a bool is not one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """A finite real number (a bool is not one)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Rule:
    """``name`` (``MLPClassifier``) / ``param`` (Spark) must pass ``ok``; ``expected`` says
    what passes (``spark_expected``, when given, in the Spark estimators' words)."""

    name: str
    param: str
    ok: object
    expected: str
    spark_expected: str = None


def _fraction(v):
    return is_number(v) and 0 <= v < 1


def _positive_int(v):
    return is_int(v) and v > 0


def _non_negative(v):
    return is_number(v) and v >= 0


def _random_state(v):
    import numpy as np

    return v is None or (is_int(v) and 0 <= v < 2**32) or isinstance(v, np.random.RandomState)


def _rates(v):
    """A dropout rate in [0, 1), or a non-empty sequence of them."""
    if isinstance(v, (list, tuple)):
        return len(v) > 0 and all(_fraction(r) for r in v)
    return _fraction(v)


def dropout_rates(value, n_hidden, name="dropout"):
    """The dropout rates of a network with ``n_hidden`` hidden layers, input first:
    ``[input, hidden 1, ..., hidden n_hidden]``.

    ``value`` is one rate (every hidden layer; the input keeps all its units) or a sequence
    of ``n_hidden + 1`` rates (the input's, then each hidden layer's). A bad value is a
    ValueError naming ``name``.
    """
    if not _rates(value):
        raise ValueError(f"{name} must be {DROPOUT_EXPECTED}, received {value!r}")
    if not isinstance(value, (list, tuple)):
        return [0.0] + [float(value)] * n_hidden
    if len(value) != n_hidden + 1:
        raise ValueError(f"{name} has {len(value)} rates, expected {n_hidden + 1}: one for the "
                         f"input, then one for each of the {n_hidden} hidden layers")
    return [float(r) for r in value]


def check_dropout_solver(solver, what="dropout"):
    """Dropout trains with a mini-batch solver only: each step draws new masks, while the
    full-batch solvers (l-bfgs's line search above all) follow one fixed objective."""
    if not get_solver(solver).mini_batch:
        mini = [row.name for row in SOLVERS if row.mini_batch]
        raise ValueError(f"{what} needs a mini-batch solver ({' or '.join(mini)}), received "
                         f"solver {solver!r}: a full-batch solver follows one fixed objective")


def _not_nan(v):
    """A real number, infinities included (Spark MLlib's ``ParamValidators`` compare numbers
    and so let +inf through where ``gt``/``gtEq`` hold)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(v)


DROPOUT_EXPECTED = ("a rate in [0, 1) (every hidden layer) or a sequence of rates in [0, 1) "
                    "(the input, then each hidden layer)")

RULES = (
    Rule("solver", "solver", lambda v: v in SOLVER_NAMES, f"one of {SOLVER_NAMES}"),
    Rule("learning_rate_init", None, lambda v: is_number(v) and v > 0, "a positive number"),
    # The Spark Params take what MLlib's validators take (gt(0), gtEq(0)): +inf too.
    Rule(None, "stepSize", lambda v: _not_nan(v) and v > 0, "a positive number"),
    Rule("power_t", None, _non_negative, "a number >= 0"),
    Rule("alpha", "regParam", _non_negative, "a number >= 0"),
    Rule("batch_size", None, lambda v: v == "auto" or _positive_int(v),
         "'auto' or an integer > 0"),
    Rule("momentum", "momentum", _fraction, "in [0, 1)"),
    Rule("beta_1", None, _fraction, "in [0, 1)"),
    Rule("beta_2", None, _fraction, "in [0, 1)"),
    Rule("epsilon", None, lambda v: is_number(v) and v > 0, "a number > 0"),
    Rule("max_iter", None, _positive_int, "an integer > 0"),
    # maxIter=0 is MLlib's way to get the model of initialWeights (or of the seeded start).
    Rule(None, "maxIter", lambda v: is_int(v) and v >= 0, "an integer >= 0", ">= 0"),
    Rule("tol", None, _non_negative, "a number >= 0"),
    Rule(None, "tol", lambda v: _not_nan(v) and v >= 0, "a number >= 0"),
    Rule("validation_fraction", None, lambda v: is_number(v) and 0 < v < 1, "in (0, 1)"),
    Rule("n_iter_no_change", None, lambda v: _positive_int(v) or v == math.inf,
         "an integer > 0 or inf"),
    Rule(None, "earlyStoppingPatience", _positive_int, "an integer > 0"),
    Rule("max_fun", None, _positive_int, "an integer > 0"),
    Rule("init", None, lambda v: hasattr(v, "initialise") or (isinstance(v, str)
                                                                and v in ("auto",) + INITS),
         f"one of {('auto',) + INITS} or a trained encoder (Autoencoder.encoder_)"),
    Rule(None, "initScheme", lambda v: v in INITS, f"one of {INITS}"),
    Rule("dtype", None, lambda v: v is None or str(v) in DTYPES, f"None or one of {DTYPES}"),
    Rule(None, "dtype", lambda v: str(v) in DTYPES, f"one of {DTYPES}"),
    Rule("block_size", "blockSize", _positive_int, "an integer > 0", ">= 1"),
    Rule(None, "syncSteps", lambda v: is_int(v) and v >= 0, "an integer >= 0", ">= 0"),
    Rule("random_state", None, _random_state, "None, an integer in [0, 2**32) or a "
         "numpy.random.RandomState"),
    Rule("n_threads", None, lambda v: v is None or _positive_int(v), "None or an integer > 0"),
    Rule("dropout", "dropout", _rates, DROPOUT_EXPECTED),
)


def check(values, spelling="name"):
    """Raise ValueError for the first value that fails its rule.

    ``values`` maps names spelled as ``spelling`` (``"name"``: ``MLPClassifier``'s,
    ``"param"``: the Spark Params') to values; names without a rule are not checked here.
    """
    for rule in RULES:
        key = getattr(rule, spelling)
        if key is None or key not in values or rule.ok(values[key]):
            continue
        value = values[key]
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, received {value!r}")
        expected = rule.spark_expected if spelling == "param" and rule.spark_expected \
            else rule.expected
        raise ValueError(f"{key} must be {expected}, received {value!r}")
