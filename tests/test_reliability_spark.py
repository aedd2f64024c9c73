"""Distributed training under faults: task retries, a killed executor, checkpoints and resume,
divergence, and a 200-iteration memory soak."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyspark")
from pyspark.ml.linalg import Vectors  # noqa: E402

from sparkann import checkpoint as ckpt  # noqa: E402
from sparkann.spark import faults  # noqa: E402
from sparkann.optim import DivergenceError  # noqa: E402
from sparkann.spark import MultilayerPerceptronClassifier  # noqa: E402
from sparkann.spark.data import dataframe_from_numpy  # noqa: E402

from rss import python_workers, rss_bytes  # noqa: E402

HERE = Path(__file__).resolve().parent
MiB = 2**20


# Tests that run in one session kind only (the rest run in a classic and a Connect session).
CLASSIC = pytest.mark.parametrize("any_spark", ["classic"], indirect=True)


@pytest.fixture(scope="module")
def connect(tmp_path_factory):
    """This module's Spark Connect session: a server on local[2,4], where a failed task is
    tried again (up to 4 attempts), as a cluster does."""
    from connect_server import connect_session
    with connect_session(str(tmp_path_factory.mktemp("connect")), "local[2,4]") as session:
        yield session


@pytest.fixture(scope="module")
def df(any_spark):
    """400 rows in 3 partitions, cached; one frame per session kind (``any_spark``)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 10))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 0.5)
    frame = dataframe_from_numpy(any_spark, X, y.astype(np.float64), num_partitions=3).cache()
    frame.count()
    yield frame
    frame.unpersist()


def mlp(**params):
    base = dict(layers=[10, 8, 3], tol=0.0, seed=5, blockSize=32)
    base.update(params)
    return MultilayerPerceptronClassifier(**base)


# ------------------------------------------------------------------------------- fault hook

def test_fault_hook_is_inert_unless_enabled(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.active_spec() is None
    faults.trigger(None, 3)  # returns without touching Spark


@pytest.mark.parametrize("spec, fragment", [
    ("explode:iteration=1", "unknown action 'explode'"),
    ("fail_task:iteration", "expected key=value"),
    ("fail_task:iteration=x", "iteration must be a number"),
    ("fail_task:color=red", "unknown key 'color'"),
    ("kill_executor:iteration=1", "needs pidfile"),
    ("fail_task:iteration=1,times=1", "times=N counts the lines of log=PATH"),
])
def test_fault_spec_typos_fail_on_the_driver(monkeypatch, spec, fragment):
    monkeypatch.setenv(faults.ENV, spec)
    with pytest.raises(ValueError, match=fragment):
        faults.active_spec()


def _run(scenarios, tmp_path, timeout):
    """Run ``scenarios`` of spark_fault_runs.py in one application; ``{scenario: (weights,
    report)}``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop(faults.ENV, None)
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)  # set while this module's Connect session is open
    run = subprocess.run([sys.executable, str(HERE / "spark_fault_runs.py"), ",".join(scenarios),
                          str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr[-4000:]
    results = {}
    for scenario in scenarios:
        with open(tmp_path / f"{scenario}.json") as f:
            report = json.load(f)
        print(f"\n{scenario}: {report}")
        results[scenario] = np.load(tmp_path / f"{scenario}.npz"), report
    return results


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory):
    """The local-cluster scenarios, in one application (the cluster starts once): the
    hygiene runs first, so that no file a killed executor could not remove is counted as
    theirs."""
    return _run(["hygiene", "kill"], tmp_path_factory.mktemp("cluster-faults"), 2400)


@pytest.mark.slow
@pytest.mark.spark
def test_injected_task_failures_give_the_undisturbed_weights(tmp_path):
    """local[2,4]: tasks fail on their first attempt at chosen iterations and partitions;
    gd, l-bfgs and adam with dropout (input 0.2, hidden 0.5) end with bitwise the weights of
    an undisturbed run."""
    weights, report = _run(["retry"], tmp_path, 900)["retry"]
    for name in ("gd", "lbfgs", "adam"):
        assert report[name]["injected"] == report[name]["planned"] > 0, report
        assert report[name]["history_equal"], name
        np.testing.assert_array_equal(weights[name + "_faulted"], weights[name + "_clean"])


@pytest.mark.parametrize("any_spark", ["connect"], indirect=True)
def test_injected_task_failures_under_spark_connect_give_the_undisturbed_weights(df, tmp_path):
    """This module's Connect server runs local[2,4]: tasks of the Connect training path
    (handles in a DataFrame, gradient slices summed by a shuffle) fail on their first attempt
    and are retried; gd, l-bfgs and adam with dropout end with bitwise the undisturbed
    weights."""
    from spark_fault_runs import fit_with_failures
    plans = {
        "gd": ("gd", 5, dict(stepSize=0.5), [(0, 0), (3, 2)]),
        "lbfgs": ("l-bfgs", 5, {}, [(1, 1)]),
        "adam": ("adam", 3, dict(stepSize=0.01, dropout=[0.2, 0.5]), [(0, 2), (2, 1)]),
    }
    weights, report = fit_with_failures(df, plans, str(tmp_path))
    for name in plans:
        assert report[name]["injected"] == report[name]["planned"] > 0, report
        assert report[name]["history_equal"], name
        np.testing.assert_array_equal(weights[name + "_faulted"], weights[name + "_clean"])


@pytest.mark.slow
@pytest.mark.spark
def test_killed_executor_gives_the_undisturbed_weights(cluster_runs):
    """local-cluster[2,1,1024]: the executor JVM running a training task is SIGKILLed; its
    stacked blocks are rebuilt from lineage and the task is retried elsewhere: gd, l-bfgs and
    adam on data from dataframe_from_numpy, gd and adam on data from Parquet (both kinds of
    training job on both sources) end with bitwise the weights of an undisturbed run (a row
    counted twice, lost or summed in another order would change them); two undisturbed runs
    are bitwise equal."""
    weights, report = cluster_runs["kill"]
    killed = {"numpy": ("gd", "lbfgs", "adam"), "parquet": ("gd", "adam")}
    assert sorted(report) == sorted([f"{source}_{solver}" for source, solvers in killed.items()
                                     for solver in solvers] + ["seconds"]), report
    for source, solvers in killed.items():
        np.testing.assert_array_equal(weights[f"{source}_gd_again"],
                                      weights[f"{source}_gd_clean"])
        for solver in solvers:
            key = f"{source}_{solver}"
            info = report[key]
            assert info["fired"] == 1 and len(info["kills"]) == 1, (key, info)
            assert info["kills"][0]["executor"], (key, info)  # it was an executor JVM
            assert info["iterations"] == info["planned"] and info["history_equal"], (key, info)
            np.testing.assert_array_equal(weights[key + "_killed"], weights[key + "_clean"],
                                          err_msg=key)


@pytest.mark.slow
@pytest.mark.spark
def test_no_stacked_file_outlives_a_fit(cluster_runs):
    """local-cluster[2,1,1024]: 3 fits refused for a bad row in one partition (a label out
    of range, a NaN, a short vector: each refused by its own check), 3 fits
    interrupted by SIGINT (twice while stacking, once while training) and 20 good fits leave
    no sparkann file in the driver's or any executor's local directory; the driver's memory
    does not grow over the 20 good fits."""
    report = cluster_runs["hygiene"][1]
    assert len(report["errors"]) == 3, report
    assert all(e and "partition" in e for e in report["errors"]), report["errors"]
    assert report["interrupted"] == ["stacking", "stacking", "training"], report
    for phase, files in report["left"].items():
        assert files == [], (phase, files)
    rss = report["rss_mib"]
    assert rss[-1] - rss[4] < 32, rss


# ------------------------------------------------------------------------------ checkpoints

class Killed(Exception):
    """Stands for the driver dying after an iteration."""


def kill_after(j):
    def callback(iteration, w, loss):
        if iteration == j:
            raise Killed(f"killed after iteration {j}")
    return callback


@pytest.mark.parametrize("any_spark, solver, iters, kill, every, params", [
    ("classic", "gd", 9, 5, 2, dict(stepSize=0.5)),
    ("classic", "adam", 6, 4, 2, dict(stepSize=0.01)),
    ("classic", "sgd", 5, 3, 3, dict(stepSize=0.05, momentum=0.9)),
    ("classic", "l-bfgs", 12, 7, 3, {}),
    ("classic", "adam", 5, 3, 2, dict(stepSize=0.01, dropout=[0.2, 0.5])),
    ("classic", "sgd", 4, 3, 1, dict(stepSize=0.05, momentum=0.9, dropout=0.3)),
    # Connect: a mini-batch solver (its state and dropout masks travel in the task's
    # function) and l-bfgs
    ("connect", "adam", 5, 3, 2, dict(stepSize=0.01, dropout=[0.2, 0.5])),
    ("connect", "l-bfgs", 8, 5, 2, {}),
], indirect=["any_spark"])
def test_resumed_run_ends_with_the_uninterrupted_weights(df, tmp_path, solver, iters, kill,
                                                         every, params):
    reference = mlp(solver=solver, maxIter=iters, **params).fit(df)
    directory = str(tmp_path / "ckpt")
    est = mlp(solver=solver, maxIter=iters, **params).setCheckpointDir(directory) \
        .setCheckpointInterval(every).setCallback(kill_after(kill))
    with pytest.raises(Killed):
        est.fit(df)
    saved = kill - kill % every
    with open(os.path.join(directory, ckpt.META_FILE)) as f:
        record = json.load(f)
    assert record["iteration"] == saved
    if solver == "l-bfgs":  # the correction pairs of the saved iterations (m = 10)
        with np.load(os.path.join(directory, record["state_file"])) as state:
            assert state["optimizer_s"].shape == (saved, reference._weights.size)
    resumed = est.setCallback(None).fit(df)
    np.testing.assert_array_equal(resumed._weights, reference._weights)
    assert resumed.history == reference.history
    # The finished run's checkpoint gives its weights back without training again.
    again = est.fit(df)
    np.testing.assert_array_equal(again._weights, reference._weights)


@CLASSIC
def test_lbfgs_checkpoint_without_its_state_is_refused(df, tmp_path):
    directory = str(tmp_path / "ckpt")
    est = mlp(solver="l-bfgs", maxIter=5).setCheckpointDir(directory) \
        .setCheckpointInterval(2).setCallback(kill_after(3))
    with pytest.raises(Killed):
        est.fit(df)
    meta_path = os.path.join(directory, ckpt.META_FILE)
    with open(meta_path) as f:
        record = json.load(f)
    record["meta"]["optimizer"] = {}  # as if only the weights had been saved
    record["record_sha256"] = ckpt.record_digest(record)
    with open(meta_path, "w") as f:
        json.dump(record, f)
    with pytest.raises(ckpt.CheckpointError, match="no L-BFGS state"):
        est.setCallback(None).fit(df)


def test_checkpoint_files_are_written_atomically(df, tmp_path):
    directory = tmp_path / "ckpt"
    seen = []

    def look(iteration, w, loss):  # between iterations: only complete files, no temp files
        seen.append(sorted(os.listdir(directory)) if directory.exists() else [])

    mlp(solver="gd", maxIter=4, stepSize=0.5).setCheckpointDir(str(directory)) \
        .setCheckpointInterval(1).setCallback(look).fit(df)
    assert seen[0] == ["checkpoint.json", "state-00000001.npz"]
    assert all(not any(name.endswith(".tmp") for name in names) for names in seen)
    with open(directory / ckpt.META_FILE) as f:
        record = json.load(f)
    assert record["meta"]["finished"] and record["iteration"] == 4
    with np.load(directory / record["state_file"], allow_pickle=False) as data:
        assert np.isfinite(data["weights"]).all()


def test_foreign_and_corrupt_checkpoints_are_refused(df, tmp_path):
    directory = str(tmp_path / "ckpt")
    mlp(solver="gd", maxIter=3, stepSize=0.5).setCheckpointDir(directory) \
        .setCheckpointInterval(1).fit(df)
    # another run: other stepSize, other layers, other data
    for other in (mlp(solver="gd", maxIter=3, stepSize=0.25),
                  mlp(solver="gd", maxIter=3, stepSize=0.5, layers=[10, 9, 3])):
        with pytest.raises(ckpt.CheckpointError, match="belongs to another training run"):
            other.setCheckpointDir(directory).fit(df)
    with pytest.raises(ckpt.CheckpointError, match="another training run"):
        mlp(solver="gd", maxIter=3, stepSize=0.5).setCheckpointDir(directory) \
            .fit(df.limit(300))
    # corrupt state file
    with open(os.path.join(directory, ckpt.META_FILE)) as f:
        record = json.load(f)
    state = os.path.join(directory, record["state_file"])
    data = bytearray(open(state, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(state, "wb").write(bytes(data))
    est = mlp(solver="gd", maxIter=3, stepSize=0.5).setCheckpointDir(directory)
    with pytest.raises(ckpt.CheckpointError, match="SHA-256"):
        est.fit(df)
    # truncated JSON
    text = open(os.path.join(directory, ckpt.META_FILE)).read()
    open(os.path.join(directory, ckpt.META_FILE), "w").write(text[: len(text) // 2])
    with pytest.raises(ckpt.CheckpointError, match="not valid JSON"):
        est.fit(df)


def sealed(record):
    """``record`` with its own digest recomputed: an edit that the record digest cannot
    catch, to reach the checks behind it."""
    return {**record, "record_sha256": ckpt.record_digest(record)}


def test_checkpoint_module_refuses_damage_without_unpickling(tmp_path):
    fp = ckpt.fingerprint({"run": 1})
    w = np.arange(5.0)
    ckpt.save(str(tmp_path), 3, {"weights": w}, {"history": [1.0, 0.5, 0.25]}, fp)
    iteration, arrays, meta = ckpt.load(str(tmp_path), fp)
    assert iteration == 3 and meta["history"] == [1.0, 0.5, 0.25]
    np.testing.assert_array_equal(arrays["weights"], w)
    assert ckpt.load(str(tmp_path / "empty"), fp) is None
    with pytest.raises(ValueError, match="only numbers"):
        ckpt.save(str(tmp_path), 4, {"weights": np.array([object()])}, {}, fp)
    meta_path = tmp_path / ckpt.META_FILE
    record = json.loads(meta_path.read_text())
    for change, fragment in [({"version": 99}, "version 99 is not supported"),
                             ({"format": "other"}, "not a sparkann checkpoint"),
                             ({"state_file": "../x.npz"}, "invalid state file name"),
                             ({"fingerprint": "0" * 64}, "another training run")]:
        meta_path.write_text(json.dumps(sealed({**record, **change})))
        with pytest.raises(ckpt.CheckpointError, match=fragment):
            ckpt.load(str(tmp_path), fp)
    # a pickled object array with a matching digest is still not unpickled
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state = tmp_path / record["state_file"]
    np.savez(state, weights=np.array([Evil()], dtype=object))
    meta_path.write_text(json.dumps(sealed({**record, "state_sha256": ckpt._sha256(state)})))
    with pytest.raises(ckpt.CheckpointError, match="unreadable"):
        ckpt.load(str(tmp_path), fp)
    assert not marker.exists()
    state.write_bytes(state.read_bytes()[:40])
    meta_path.write_text(json.dumps(sealed({**record, "state_sha256": ckpt._sha256(state)})))
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt"):
        ckpt.load(str(tmp_path), fp)


def test_edits_of_checkpoint_json_and_malformed_fields_are_refused(tmp_path):
    fp = ckpt.fingerprint({"run": 1})
    ckpt.save(str(tmp_path), 3, {"weights": np.arange(5.0)}, {"history": [1.0, 0.5]}, fp)
    meta_path = tmp_path / ckpt.META_FILE
    record = json.loads(meta_path.read_text())
    # hand edits that keep the state file intact: caught by the record's own digest
    for change in ({"iteration": 2}, {"meta": {"history": [1.0, 0.4]}},
                   {"record_sha256": None}):
        meta_path.write_text(json.dumps({**record, **change}))
        with pytest.raises(ckpt.CheckpointError, match="do not match the SHA-256 recorded in "
                                                       "it"):
            ckpt.load(str(tmp_path), fp)
    # the same fields malformed behind a recomputed digest: each named
    for change, fragment in [({"iteration": "abc"}, "'iteration' is 'abc', expected an integer"),
                             ({"iteration": True}, "'iteration' is True"),
                             ({"iteration": -1}, "'iteration' is -1, expected a count"),
                             ({"meta": [1]}, "'meta' is \\[1\\], expected a JSON object"),
                             ({"state_file": 7}, "'state_file' is 7, expected a string"),
                             ({"fingerprint": None}, "'fingerprint' is None")]:
        meta_path.write_text(json.dumps(sealed({**record, **change})))
        with pytest.raises(ckpt.CheckpointError, match=fragment):
            ckpt.load(str(tmp_path), fp)
    meta_path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ckpt.CheckpointError, match="not valid JSON"):
        ckpt.load(str(tmp_path), fp)
    older = {k: v for k, v in record.items() if k != "record_sha256"}
    meta_path.write_text(json.dumps({**older, "version": 1}))
    with pytest.raises(ckpt.CheckpointError, match="version 1 is not supported.*older sparkann"):
        ckpt.load(str(tmp_path), fp)


# ------------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("any_spark, solver, step", [
    ("classic", "gd", 1e30), ("classic", "adam", 1e30), ("classic", "sgd", 1e30),
    ("classic", "l-bfgs", None), ("connect", "gd", 1e30), ("connect", "adam", 1e30),
], indirect=["any_spark"])
def test_divergence_stops_with_the_last_finite_weights(df, solver, step):
    params = dict(solver=solver, maxIter=20, dtype="float32", activation="relu")
    if step is not None:
        params["stepSize"] = step
    est = mlp(**params)
    if solver == "l-bfgs":  # huge initial weights overflow float32 in the first evaluation
        from sparkann.spark.model import build_topology
        topo = build_topology([10, 8, 3], "sigmoid", "softmax_cross_entropy")
        est.setInitialWeights(Vectors.dense(np.full(topo.n_weights, 3e38)))
    with pytest.raises(DivergenceError, match="diverg|non-finite") as info:
        est.fit(df)
    assert info.value.weights is not None
    assert np.isfinite(info.value.weights).all()


# ---------------------------------------------------------------------------- memory soak

@pytest.mark.slow
@CLASSIC
def test_two_hundred_iterations_have_no_memory_growth(df):
    """gd for 200 iterations (200 Spark jobs): driver and Python worker RSS at iteration 20
    and iteration 200 differ by noise only."""
    samples = {}

    def measure(iteration, w, loss):
        if iteration in (20, 200):
            samples[iteration] = (rss_bytes(), {p: rss_bytes(p) for p in python_workers()})

    model = mlp(solver="gd", maxIter=200, stepSize=0.5).setCallback(measure).fit(df)
    assert len(model.history) == 200
    (d0, w0), (d1, w1) = samples[20], samples[200]
    common = sorted(set(w0) & set(w1))  # workers alive at both times (idle ones may exit)
    before, after = sum(w0[p] for p in common), sum(w1[p] for p in common)
    print(f"\n200 iterations: driver RSS {d0 / MiB:.1f} -> {d1 / MiB:.1f} MiB; {len(common)} "
          f"Python worker processes {before / MiB:.1f} -> {after / MiB:.1f} MiB")
    assert d1 - d0 < 32 * MiB
    assert common, "no PySpark worker process found"
    assert after - before < 16 * MiB * len(common)
