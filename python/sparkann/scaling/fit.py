"""Calibration of the scaling model from measured seconds (non-negative least squares), and
its check against the published Ulanov benchmark."""
import numpy as np

from sparkann.scaling.model import Parameters, ScalingModel
from sparkann.scaling.units import parse_bandwidth

# Published measurements used for validation.
ULANOV_BENCHMARK = {
    "source": ("Alexander Ulanov, ann-benchmark, README 'Preliminary results (s)', "
               "https://github.com/avulanov/ann-benchmark"),
    "setup": ("Spark MLlib MLP (ann-interface-gemm branch), OpenBLAS, float64, MNIST 60,000 "
              "training examples, full-batch gradient, one epoch including the update; "
              "Xeon E31240 3.3 GHz nodes, 1 GbE, one master and 1..5 workers"),
    "layers": [784, 2500, 2000, 1500, 1000, 500, 10],
    "examples": 60000,
    "bytes_per_weight": 8,
    "bandwidth": "1Gbit",
    "workers": [1, 2, 3, 4, 5],
    "total_s": [86.0, 47.0, 35.2, 27.0, 29.0],
    "compute_s": [84.0, 44.0, 33.0, 24.0, 21.0],
}


def fit_parameters(model, observations, fixed=None):
    """Fit the model's parameters to measured seconds by non-negative least squares.

    Parameters
    ----------
    model : ScalingModel
        Gives the structure (layers, bytes, tree rule); its ``params`` are the starting
        values of the fixed ones.
    observations : list of dict
        Each ``{'seconds': s, 'n': workers, 'parts': (...)}`` and optionally ``partitions``,
        ``broadcast_bytes``, ``aggregate_bytes``, ``examples``, ``flops_per_example`` and
        ``levels`` (see :meth:`ScalingModel.features`): the measured seconds of those parts
        of the model.
    fixed : dict, optional
        ``{name: value}`` for parameters not fitted (names of :attr:`Parameters.NAMES`). A
        parameter that no observation constrains must be fixed, with two defaults: without
        an observed extra tree level a stage costs a job, and without a job that reads
        cached data but computes nothing (``flops_per_example=0``), reading is free (the
        read and FLOP costs of a network are otherwise indistinguishable).

    Returns
    -------
    Parameters
    """
    from scipy.optimize import nnls

    fixed = dict(fixed or {})
    unknown = [k for k in fixed if k not in Parameters.NAMES]
    if unknown:
        raise ValueError(f"fixed: unknown parameter(s) {unknown}; expected {Parameters.NAMES}")
    if not observations:
        raise ValueError("observations: expected at least one measurement")
    rows, rhs = [], []
    for i, obs in enumerate(observations):
        if not obs.get("seconds", -1) >= 0:
            raise ValueError(f"observations[{i}]: 'seconds' must be >= 0, received "
                             f"{obs.get('seconds')!r}")
        feats = model.features(obs["n"], obs.get("partitions"), obs.get("broadcast_bytes"),
                               obs.get("aggregate_bytes"), obs.get("examples"), obs["parts"],
                               obs.get("flops_per_example"), obs.get("levels"))
        rows.append(sum(feats.values()))
        rhs.append(float(obs["seconds"]))
    a, b = np.array(rows), np.array(rhs)
    free = [j for j, name in enumerate(Parameters.NAMES) if name not in fixed]
    theta = np.zeros(len(Parameters.NAMES))
    for j, name in enumerate(Parameters.NAMES):
        if name in fixed:
            theta[j] = fixed[name]
    b = b - a @ theta
    stage = Parameters.NAMES.index("stage")
    tie_stage = stage in free and not np.any(a[:, stage])
    if tie_stage:                      # no extra tree level observed: a stage costs a job
        free.remove(stage)
    read = Parameters.NAMES.index("sec_per_read_byte")
    if read in free and not np.any((a[:, read] > 0) & (a[:, 0] == 0)):
        free.remove(read)              # no read-only job: reading costs nothing extra
    unconstrained = [Parameters.NAMES[j] for j in free if not np.any(a[:, j])]
    if unconstrained:
        raise ValueError(f"fit_parameters: no observation constrains {unconstrained}; "
                         f"fix them")
    # Scale columns so that seconds-per-FLOP and seconds-per-byte fit next to seconds.
    cols = a[:, free]
    norms = np.linalg.norm(cols, axis=0)
    solution, _ = nnls(cols / norms, b)
    theta[free] = solution / norms
    if tie_stage:
        theta[stage] = theta[Parameters.NAMES.index("job")]
    for name, j in (("sec_per_flop", 0), ("sec_per_byte", 2)):
        if theta[j] <= 0:
            raise ValueError(f"fit_parameters: the fit gives {name} = 0 (infinite rate); the "
                             f"observations do not show that cost")
    return Parameters.from_theta(theta)


def ulanov_validation(fit_workers=(1, 2), n_max=None):
    """Calibrate on the published 1- and 2-worker points, predict the others.

    Uses the compute and total columns at ``fit_workers`` (compute fits the FLOP rate and the
    per-task cost; total minus compute fits bandwidth and job overhead). Latency is fixed at
    0.1 ms (1 GbE) and the JVM's ``treeAggregate`` rule is used, as the benchmark ran on the JVM.

    Returns
    -------
    dict
        ``model``, ``rows`` (per worker: measured, predicted, error), ``optimum``,
        ``max_abs_error`` over the predicted (not fitted) points.
    """
    data = ULANOV_BENCHMARK
    start = Parameters(flops=1e9, bandwidth=parse_bandwidth(data["bandwidth"]), latency=1e-4)
    model = ScalingModel(data["layers"], data["examples"], start,
                         bytes_per_weight=data["bytes_per_weight"], rule="scala")
    obs = []
    for n, total, compute in zip(data["workers"], data["total_s"], data["compute_s"]):
        if n in fit_workers:
            obs.append({"n": n, "seconds": compute, "parts": ("compute",)})
            obs.append({"n": n, "seconds": total - compute,
                        "parts": ("broadcast", "aggregate", "overhead")})
    model.params = fit_parameters(model, obs, fixed={"latency": 1e-4})
    rows = []
    for n, total in zip(data["workers"], data["total_s"]):
        pred = model.time(n)
        rows.append({"workers": n, "measured": total, "predicted": pred,
                     "error": (pred - total) / total, "fitted": n in fit_workers})
    predicted = [r for r in rows if not r["fitted"]]
    return {"model": model, "rows": rows, "optimum": model.optimum(n_max),
            "max_abs_error": max(abs(r["error"]) for r in predicted) if predicted else 0.0,
            "measured_best": data["workers"][int(np.argmin(data["total_s"]))]}
