"""The scalability model: algebra, units, the published validation, CLI and plot.

No timing assertions: everything here is arithmetic on given parameters.
"""

import io
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from sparkann import scaling
from sparkann.scaling import cli as scale_cli
from sparkann.scaling.flops import _network
from sparkann.scaling import (Parameters, ScalingModel, fit_parameters, parse_bandwidth,
                              parse_duration, parse_flops, tree_levels, weights_of)

ULANOV_LAYERS = [784, 2500, 2000, 1500, 1000, 500, 10]


def model(**kw):
    params = kw.pop("params", Parameters(flops=51e9, bandwidth=125e6, latency=1e-4,
                                         task=0.01, job=0.1))
    kw.setdefault("bytes_per_weight", 8)
    return ScalingModel(kw.pop("layers", ULANOV_LAYERS), kw.pop("examples", 60000), params, **kw)


# -- units -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1Gbit", 125e6), ("1 Gbit", 125e6), ("10GbE", 1.25e9), ("1GbE", 125e6), ("1Gbps", 125e6),
    ("100Mbit", 12.5e6), ("100Mb/s", 12.5e6), ("125MB/s", 125e6), ("1GB", 1e9), (2e8, 2e8),
    ("2.5e9", 2.5e9),
])
def test_parse_bandwidth(text, expected):
    assert parse_bandwidth(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("51G", 51e9), ("51GFLOPS", 51e9), ("2.5T", 2.5e12), ("800M", 8e8), ("1e10", 1e10),
    (3e9, 3e9),
])
def test_parse_flops(text, expected):
    assert parse_flops(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("0.1ms", 1e-4), ("50us", 5e-5), ("2s", 2.0), ("1min", 60.0), ("0.3", 0.3), (0, 0.0),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("fn, text, word", [
    (parse_bandwidth, "fast", "bandwidth"), (parse_bandwidth, "1Gfurlong", "unit"),
    (parse_bandwidth, "1G", "no unit"), (parse_bandwidth, "0Gbit", "positive"),
    (parse_flops, "51Q", "unit"), (parse_flops, "", "flops"),
    (parse_duration, "3 weeks", "unit"),
])
def test_bad_units_name_the_problem(fn, text, word):
    with pytest.raises(ValueError, match=word):
        fn(text)


# -- structure ---------------------------------------------------------------------------

def test_weights_of_matches_the_engine():
    ann_core = pytest.importorskip("ann_core")
    net = _network([784, 256, 128, 10], "float32")
    assert weights_of([784, 256, 128, 10]) == net.n_weights
    assert net.flops_per_example()[0] == 6 * net.n_weights
    assert isinstance(ann_core.Network, type)


def test_ulanov_network_has_about_12m_weights():
    assert weights_of(ULANOV_LAYERS) == 11_972_510


def test_bad_layers():
    with pytest.raises(ValueError, match="layers"):
        weights_of([784])
    with pytest.raises(ValueError, match="layers"):
        weights_of([784, 0, 10])


@pytest.mark.parametrize("rule", ["python", "scala"])
def test_tree_levels_follow_spark(rule):
    # Small P: all partials go straight to the driver.
    for p in (1, 2, 3, 4):
        assert tree_levels(p, 2, rule) == [p]
    assert tree_levels(100, 2, rule) == [100, 10]
    assert tree_levels(1000, 3, rule) == [1000, 100, 10]
    assert tree_levels(1000, 1, rule) == [1000]          # depth 1 is plain aggregate
    for p in range(1, 300):
        levels = tree_levels(p, 2, rule)
        assert all(a > b >= 1 for a, b in zip(levels, levels[1:]))


def test_tree_rules_differ_where_spark_differs():
    # PySpark compares with P / scale, the JVM with ceil(P / scale): 5 > 3 + 5/3 but not > 3 + 2.
    assert tree_levels(5, 2, "python") == [5, 1]
    assert tree_levels(5, 2, "scala") == [5]


def test_tree_levels_match_pyspark_source_when_installed():
    rdd_mod = pytest.importorskip("pyspark.core.rdd", reason="pyspark not installed")
    import inspect
    src = inspect.getsource(rdd_mod.RDD.treeAggregate)
    assert "numPartitions > scale + numPartitions / scale" in src
    assert "numPartitions /= scale" in src


# -- the model's algebra -------------------------------------------------------------------

def test_compute_is_flops_over_rate_and_divides_by_n():
    m = model(params=Parameters(flops=51e9, bandwidth=125e6))
    one = m.breakdown(1)["compute"]
    assert one == pytest.approx(6 * m.n_weights * 60000 / 51e9)
    for n in (2, 3, 7, 16):
        assert m.breakdown(n)["compute"] == pytest.approx(one / n)


def test_parts_add_up_and_speedup_starts_at_one():
    m = model()
    for row in m.curve(12):
        parts = row["compute"] + row["broadcast"] + row["aggregate"] + row["overhead"]
        assert row["total"] == pytest.approx(parts)
    assert m.curve(3)[0]["speedup"] == pytest.approx(1.0)


@pytest.mark.parametrize("read", [None, 1e9])
def test_monotonic_parts(read):
    m = model(params=Parameters(flops=51e9, bandwidth=125e6, latency=1e-4, task=0.01, job=0.1,
                                read=read))
    rows = m.curve(200)
    compute = [r["compute"] for r in rows]
    bcast = [r["broadcast"] for r in rows]
    assert all(a > b for a, b in zip(compute, compute[1:]))
    assert all(a <= b for a, b in zip(bcast, bcast[1:]))
    assert len({r["overhead"] for r in rows}) == 1


def test_one_worker_moves_the_vector_once_each_way():
    m = model(params=Parameters(flops=51e9, bandwidth=125e6))     # no latency, no overheads
    parts = m.breakdown(1)
    one_transfer = m.weight_bytes / 125e6
    assert parts["broadcast"] == pytest.approx(one_transfer)
    assert parts["aggregate"] == pytest.approx(one_transfer)    # partial goes to the driver


def test_flat_gather_is_linear_in_n_before_the_tree():
    m = model(params=Parameters(flops=51e9, bandwidth=125e6), rule="scala")
    g = m.weight_bytes / 125e6
    for n in (1, 2, 3, 4, 5):
        assert m.breakdown(n)["aggregate"] == pytest.approx(n * g)


def test_broadcast_of_one_piece_grows_with_log2_n():
    m = model(layers=[10, 10], params=Parameters(flops=1e9, bandwidth=1e6))
    piece = m.weight_bytes / 1e6
    for n in (1, 2, 3, 4, 8, 9):
        assert m.breakdown(n)["broadcast"] == pytest.approx(piece * math.ceil(math.log2(n + 1)))


def test_large_broadcast_costs_about_one_transfer_whatever_n():
    m = model(params=Parameters(flops=51e9, bandwidth=125e6))
    one = m.weight_bytes / 125e6
    for n in (1, 4, 64, 1024):
        assert one <= m.breakdown(n)["broadcast"] < 1.5 * one


def test_communication_dominates_as_n_grows():
    m = model()
    for n in (64, 256, 1024):
        parts = m.breakdown(n)
        assert parts["broadcast"] + parts["aggregate"] > 5 * parts["compute"]
    assert m.time(1024) > m.time(m.optimum()["n_best"])


def test_no_communication_cost_means_linear_speedup():
    m = model(params=Parameters(flops=51e9, bandwidth=1e30))
    for row in m.curve(16):
        assert row["speedup"] == pytest.approx(row["workers"], rel=1e-9)


def test_partials_travel_in_the_training_dtype_unless_told():
    m = model(layers=[784, 256, 128, 10], bytes_per_weight=4,
              params=Parameters(flops=51e9, bandwidth=1e6))
    assert m.weight_bytes == 4 * m.n_weights and m.partial_bytes == 4 * m.n_weights
    wide = model(layers=[784, 256, 128, 10], bytes_per_weight=4, partial_bytes_per_weight=8,
                 params=Parameters(flops=51e9, bandwidth=1e6))
    assert wide.partial_bytes == 8 * m.n_weights
    parts = m.breakdown(1)
    assert parts["broadcast"] == pytest.approx(m.weight_bytes / 1e6)
    assert parts["aggregate"] == pytest.approx(m.partial_bytes / 1e6)
    with pytest.raises(ValueError, match="partial_bytes_per_weight"):
        model(partial_bytes_per_weight=2)


THETA = Parameters(flops=51e9, bandwidth=100e6, latency=2e-3, task=0.03, stage=0.01, job=0.1)


def expected_aggregate(m, n, levels, p=THETA):
    """The aggregate term written out: per level a stage and waves of reduce tasks that each
    fetch their share of partials, then the driver's gather of the last level."""
    g = p.latency + m.partial_bytes / p.bandwidth
    total = 0.0
    for here, there in zip(levels[:-1], levels[1:]):
        total += p.stage + math.ceil(there / n) * (p.task + math.ceil(here / there) * g)
    return total + levels[-1] * g


@pytest.mark.parametrize("n, partitions, levels", [
    (2, 4, [4]), (2, 5, [5, 1]), (2, 8, [8, 2]), (1, 8, [8, 2]), (3, 8, [8, 2]),
    (10, 100, [100, 10]), (3, 100, [100, 10]), (8, 1000, [1000, 100, 10]),
])
def test_a_tree_level_is_a_stage_of_reduce_tasks_in_waves(n, partitions, levels):
    m = model(params=THETA, bytes_per_weight=4, depth=3 if partitions == 1000 else 2)
    assert tree_levels(partitions, m.depth) == levels
    assert m.breakdown(n, partitions)["aggregate"] == pytest.approx(
        expected_aggregate(m, n, levels))


def test_the_level_pyspark_adds_at_five_partitions():
    # 5 partials into one reducer, then one to the driver: a stage, a task and one more
    # partial than gathering all five at the driver.
    m = model(params=THETA)
    g = THETA.latency + m.partial_bytes / THETA.bandwidth
    flat = m.features(2, 5, levels=[5])["aggregate"] @ THETA.theta
    tree = m.breakdown(2, 5)["aggregate"]
    assert flat == pytest.approx(5 * g)
    assert tree - flat == pytest.approx(THETA.stage + THETA.task + g)


def test_explicit_levels_and_their_errors():
    m = model(params=THETA)
    for p in (1, 2, 5, 9):
        one = m.features(2, p, levels=[p, 1])["aggregate"] @ THETA.theta
        assert one == pytest.approx(expected_aggregate(m, 2, [p, 1]))
    same = m.features(2, 8, levels=tree_levels(8))["aggregate"]
    assert np.array_equal(same, m.features(2, 8)["aggregate"])
    with pytest.raises(ValueError, match="levels"):
        m.features(2, 8, levels=[4, 1])
    with pytest.raises(ValueError, match="levels"):
        m.features(2, 8, levels=[8, 0])


def expected_reduce_scatter(m, n, partitions, p=THETA):
    """The reduce-scatter written out: one more stage, K + 1 reduce tasks in waves, each
    slice's reducer fetching P slices of Gb / K bytes, and the driver's K float64 sums."""
    # up to 4 partitions (no treeAggregate level either) one slice, as for a small vector
    k = 1 if partitions <= 4 else min(partitions, math.ceil(m.n_weights / 2 ** 18))
    if k == 1:      # one slice: the driver fetches and adds the P partials
        return partitions * (p.latency + m.partial_bytes / p.bandwidth)
    slice_g = p.latency + m.partial_bytes / k / p.bandwidth
    return (p.stage + math.ceil((k + 1) / n) * p.task + math.ceil(k / n) * partitions * slice_g
            + (k + 1) * p.latency + 8 * m.n_weights / p.bandwidth)


@pytest.mark.parametrize("layers, n, partitions, slices", [
    ([784, 256, 128, 10], 2, 2, 1), ([784, 256, 128, 10], 2, 8, 1),
    ([784, 1024, 1024, 10], 2, 4, 1), ([784, 1024, 1024, 10], 2, 5, 5),
    ([784, 1024, 1024, 10], 2, 8, 8),
    (ULANOV_LAYERS, 2, 2, 1), (ULANOV_LAYERS, 2, 8, 8), (ULANOV_LAYERS, 3, 8, 8),
])
def test_reduce_scatter_is_one_shuffle_of_slices(layers, n, partitions, slices):
    m = model(layers=layers, params=THETA, bytes_per_weight=4, aggregation="reduce-scatter")
    assert scaling.slice_count(m.n_weights, partitions) == slices
    assert m.breakdown(n, partitions)["aggregate"] == pytest.approx(
        expected_reduce_scatter(m, n, partitions))
    # compute, broadcast and overhead do not depend on how the partials are summed
    tree = replace(m, aggregation="tree").breakdown(n, partitions)
    for part in ("compute", "broadcast", "overhead"):
        assert m.breakdown(n, partitions)[part] == tree[part]


def test_traffic_per_iteration_of_both_ways_of_summing():
    w = weights_of(ULANOV_LAYERS)
    gb = 4.0 * w
    rs = model(bytes_per_weight=4, aggregation="reduce-scatter")
    # 8 partitions on 2 workers: 8 slices, each worker reduces 4 of them from all 8 partials
    assert rs.traffic(2, 8) == {"stages": 2, "slices": 8, "map_out_bytes": gb,
                                "worker_in_bytes": 4 * gb, "driver_in_bytes": 8.0 * w,
                                "messages": 4 * 8 + 9}
    # two stages whatever the partition count past 4; the driver reads the float64 sum
    for p in (5, 8, 16):
        assert rs.traffic(2, p)["stages"] == 2
        assert rs.traffic(2, p)["driver_in_bytes"] == 8.0 * w
    tree = model(bytes_per_weight=4)
    # up to 4 partitions, where the tree has no level, no shuffle either: the same traffic
    for p in (2, 4):
        assert rs.traffic(2, p) == dict(replace(tree, aggregation="tree").traffic(2, p),
                                        slices=1)
    # PySpark's tree at 8 partitions: one level of 2 reducers, each fetching 4 partials
    assert tree.traffic(2, 8) == {"stages": 2, "slices": 0, "map_out_bytes": gb,
                                  "worker_in_bytes": 4 * gb, "driver_in_bytes": 2 * gb,
                                  "messages": 4 + 2}
    # no level at 4 partitions: every partial goes to the driver
    assert tree.traffic(2, 4) == {"stages": 1, "slices": 0, "map_out_bytes": gb,
                                  "worker_in_bytes": 0, "driver_in_bytes": 4 * gb,
                                  "messages": 4}
    # a small vector is one slice: no shuffle, the driver adds the partials, as the tree does
    small = model(layers=[784, 256, 128, 10], bytes_per_weight=4, aggregation="reduce-scatter")
    assert small.traffic(2, 4) == dict(replace(small, aggregation="tree").traffic(2, 4),
                                       slices=1)
    assert small.traffic(2, 8)["driver_in_bytes"] == 8 * small.partial_bytes
    with pytest.raises(ValueError, match="aggregation"):
        model(aggregation="allreduce")


@pytest.mark.parametrize("layers, n, partitions", [
    ([784, 256, 128, 10], 2, 2), ([784, 1024, 1024, 10], 4, 3), (ULANOV_LAYERS, 8, 8)])
def test_exchange_is_a_star_through_the_leader_with_nothing_per_iteration(layers, n,
                                                                          partitions):
    p = THETA
    m = model(layers=layers, params=p, bytes_per_weight=8, partial_bytes_per_weight=4,
              aggregation="exchange")
    got = m.breakdown(n, partitions)
    others = partitions - 1
    assert got["broadcast"] == pytest.approx(others * (p.latency + m.weight_bytes / p.bandwidth))
    assert got["aggregate"] == pytest.approx(others * (p.latency + m.partial_bytes / p.bandwidth))
    assert got["overhead"] == 0
    # the same work per task as a job's, less starting a task (the tasks stay)
    tree = replace(m, aggregation="tree").breakdown(n, partitions)
    assert got["compute"] == pytest.approx(tree["compute"] - p.task)
    assert m.traffic(n, partitions) == {
        "stages": 0, "slices": 0, "map_out_bytes": m.partial_bytes,
        "worker_in_bytes": others * m.partial_bytes, "driver_in_bytes": 0,
        "messages": 2 * others}
    with pytest.raises(ValueError, match="slots"):
        m.breakdown(n, n + 1)
    best = m.optimum(n_max=64)
    assert abs(best["n_closed_form"] - best["n_best"]) <= 1 + 0.05 * best["n_best"]


def test_the_spark_path_cuts_slices_by_the_model():
    pytest.importorskip("pyspark")
    from sparkann.spark import data
    assert data.slice_count is scaling.slice_count


def test_stages_cost_nothing_more_without_levels():
    m = model(params=THETA)
    for p in (1, 2, 3, 4):
        assert m.features(p, p)["aggregate"][Parameters.NAMES.index("stage")] == 0


def test_reading_cached_blocks_is_part_of_compute():
    layers = [784, 256, 128, 10]
    fast = model(layers=layers, bytes_per_weight=4, params=Parameters(flops=51e9, bandwidth=1e9))
    slow = model(layers=layers, bytes_per_weight=4,
                 params=Parameters(flops=51e9, bandwidth=1e9, read=1e9))
    assert slow.input_bytes_per_example == 784 * 4 + 8     # float32 features, int64 label
    read_one = 60000 * slow.input_bytes_per_example / 1e9
    for n in (1, 2, 5):
        extra = slow.breakdown(n)["compute"] - fast.breakdown(n)["compute"]
        assert extra == pytest.approx(read_one / n)
    # Two waves of half the rows each read everything once per worker.
    extra = slow.breakdown(2, 4)["compute"] - fast.breakdown(2, 4)["compute"]
    assert extra == pytest.approx(read_one / 2)
    assert fast.params.read is None and fast.params.theta[6] == 0
    with pytest.raises(ValueError, match="read"):
        Parameters(flops=1, bandwidth=1, read=0)


def test_parameters_round_trip_through_theta():
    for p in (THETA, replace(THETA, read=2e9), Parameters(flops=1e9, bandwidth=1e6)):
        back = Parameters.from_theta(p.theta)
        assert np.allclose(back.theta, p.theta)
        assert (back.read is None) == (p.read is None)


def test_partitions_beyond_workers_run_in_waves():
    m = model(params=Parameters(flops=51e9, bandwidth=1e30, task=0.5))
    base = 6 * m.n_weights * 60000 / 51e9
    # 2 workers, 3 partitions: two waves of a third of the data each.
    assert m.breakdown(2, partitions=3)["compute"] == pytest.approx(2 * (base / 3 + 0.5))
    assert m.breakdown(2, partitions=4)["compute"] == pytest.approx(base / 2 + 1.0)


def test_optimum_is_the_brute_force_argmin():
    for flops, bw, layers in [(51e9, 125e6, ULANOV_LAYERS), (5e9, 1.25e9, [784, 256, 10]),
                              (1e12, 125e6, [784, 1024, 1024, 10]), (1e8, 1e9, [100, 10])]:
        m = model(layers=layers, params=Parameters(flops=flops, bandwidth=bw, latency=1e-3,
                                                   job=0.05))
        opt = m.optimum(n_max=80)
        times = [m.time(n) for n in range(1, 81)]
        assert opt["n_best"] == int(np.argmin(times)) + 1
        assert opt["time_best"] == min(times)
        assert opt["n_within"] <= opt["n_best"]
        assert times[opt["n_within"] - 1] <= 1.05 * min(times)


@pytest.mark.parametrize("read, bpw", [(None, 8), (2e9, 4)])
def test_closed_form_is_the_minimum_of_the_relaxed_model(read, bpw):
    m = model(params=Parameters(flops=51e9, bandwidth=125e6, latency=1e-3, read=read),
              bytes_per_weight=bpw)
    p = m.params
    c = m.examples * (m.flops_per_example / p.flops
                      + (m.input_bytes_per_example / read if read else 0.0))
    pieces = math.ceil(m.weight_bytes / m.broadcast_block)
    g = p.latency + m.partial_bytes / p.bandwidth
    h = p.latency + m.weight_bytes / (pieces * p.bandwidth)
    relaxed = minimize_scalar(lambda n: c / n + g * n + h * math.log2(n), bounds=(1, 1e4),
                              method="bounded", options={"xatol": 1e-9})
    assert m.closed_form_optimum() == pytest.approx(relaxed.x, rel=1e-5)
    # ~ sqrt(C / g) when the broadcast term is small.
    assert m.closed_form_optimum() == pytest.approx(math.sqrt(c / g), rel=0.05)


def test_reading_cached_data_is_work_that_more_workers_share():
    # Reading adds to one worker's compute C, so the optimum moves to more workers.
    free = model(params=Parameters(flops=51e9, bandwidth=125e6, task=0.01, job=0.1))
    slow = model(params=Parameters(flops=51e9, bandwidth=125e6, task=0.01, job=0.1, read=2e8))
    assert slow.closed_form_optimum() > free.closed_form_optimum()
    assert slow.optimum()["n_best"] >= free.optimum()["n_best"]


def test_optimum_grows_with_bandwidth_and_shrinks_with_flops():
    slow = model(params=Parameters(flops=51e9, bandwidth=125e6)).closed_form_optimum()
    fast_net = model(params=Parameters(flops=51e9, bandwidth=1.25e9)).closed_form_optimum()
    fast_cpu = model(params=Parameters(flops=510e9, bandwidth=125e6)).closed_form_optimum()
    assert fast_net > slow > fast_cpu


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="flops"):
        Parameters(flops=0, bandwidth=1)
    with pytest.raises(ValueError, match="latency"):
        Parameters(flops=1, bandwidth=1, latency=-1)
    with pytest.raises(ValueError, match="workers"):
        model().time(0)
    with pytest.raises(ValueError, match="bytes_per_weight"):
        model(bytes_per_weight=2)
    with pytest.raises(ValueError, match="rule"):
        model(rule="rust")


# -- calibration ---------------------------------------------------------------------------

def test_fit_recovers_known_parameters():
    truth = Parameters(flops=40e9, bandwidth=300e6, latency=2e-3, task=0.05, stage=0.2, job=0.1,
                       read=1.5e9)
    m = model(layers=[784, 1024, 1024, 10], params=truth, bytes_per_weight=4)
    obs = []
    for n in (1, 2, 4):
        for p in (n, 2 * n, 3 * n, 9 * n):
            for parts in [("compute",), ("broadcast",), ("aggregate",), ("overhead",)]:
                seconds = sum(v @ truth.theta for v in m.features(n, p, parts=parts).values())
                obs.append({"n": n, "partitions": p, "parts": parts, "seconds": seconds})
        read_only = {"n": n, "partitions": n, "examples": 40000, "flops_per_example": 0,
                     "parts": ("compute", "overhead")}
        feats = m.features(read_only["n"], n, examples=40000, flops_per_example=0,
                           parts=read_only["parts"])
        obs.append(dict(read_only, seconds=sum(v @ truth.theta for v in feats.values())))
    fitted = fit_parameters(m, obs)
    assert np.allclose(fitted.theta, truth.theta, rtol=1e-6)


def test_fit_of_the_calibration_jobs_recovers_the_level_cost():
    # The jobs spark_observations runs: empty, broadcast, gathers and one explicit level,
    # at P = n, 2n, 4n (no tree level of its own below P = 5).
    truth = Parameters(flops=40e9, bandwidth=300e6, latency=2e-3, task=0.04, stage=0.015,
                       job=0.1)
    m = model(layers=[784, 1024, 1024, 10], params=truth, bytes_per_weight=4)
    obs = []
    for p in (1, 2, 4):
        base = {"n": 1, "partitions": p, "examples": 0, "aggregate_bytes": 8,
                "parts": ("compute", "aggregate", "overhead")}
        jobs = [base] + [dict(base, broadcast_bytes=b,
                              parts=("compute", "broadcast", "aggregate", "overhead"))
                         for b in (1e6, 8e6)]
        for b in (2e6, 15e6):
            jobs += [dict(base, aggregate_bytes=b), dict(base, aggregate_bytes=b, levels=[p, 1])]
        for job in jobs:
            feats = m.features(job["n"], p, job.get("broadcast_bytes"), job["aggregate_bytes"],
                               0, job["parts"], levels=job.get("levels"))
            obs.append(dict(job, seconds=sum(v @ truth.theta for v in feats.values())))
    fitted = fit_parameters(m, obs, fixed={"sec_per_flop": 1 / 40e9})
    assert fitted.stage == pytest.approx(0.015, rel=1e-6)
    assert fitted.task == pytest.approx(0.04, rel=1e-6)
    assert fitted.read is None                       # no read-only job: reading left free
    # Without the explicit level no observation shows a stage: it is taken to cost a job.
    no_level = [o for o in obs if "levels" not in o]
    assert fit_parameters(m, no_level, fixed={"sec_per_flop": 1 / 40e9}).stage == \
        pytest.approx(0.1, rel=1e-6)


def test_fit_errors_are_clear():
    m = model()
    with pytest.raises(ValueError, match="unknown parameter"):
        fit_parameters(m, [{"n": 1, "parts": ("compute",), "seconds": 1}], fixed={"speed": 1})
    with pytest.raises(ValueError, match="constrains"):
        fit_parameters(m, [{"n": 1, "parts": ("compute",), "seconds": 1.0}])
    with pytest.raises(ValueError, match="seconds"):
        fit_parameters(m, [{"n": 1, "parts": ("compute",), "seconds": -1}])


# -- validation against the published benchmark ------------------------------------------

def test_ulanov_table_is_kept_with_its_source():
    data = scaling.ULANOV_BENCHMARK
    assert "avulanov/ann-benchmark" in data["source"]
    assert data["total_s"] == [86.0, 47.0, 35.2, 27.0, 29.0]
    assert data["compute_s"] == [84.0, 44.0, 33.0, 24.0, 21.0]
    assert data["layers"] == ULANOV_LAYERS


def test_ulanov_acceptance_numbers():
    result = scaling.ulanov_validation()
    rows = {r["workers"]: r for r in result["rows"]}
    # The two calibration points are reproduced exactly (four equations, four unknowns).
    assert rows[1]["predicted"] == pytest.approx(86.0)
    assert rows[2]["predicted"] == pytest.approx(47.0)
    # Predictions for 3, 4, 5 workers within 15% of the published totals.
    for n in (3, 4, 5):
        assert abs(rows[n]["error"]) < 0.15, rows[n]
    assert result["max_abs_error"] < 0.15
    # The fitted machine is plausible: ~54 GFLOP/s per node, ~0.8 Gbit/s effective on 1 GbE.
    p = result["model"].params
    assert 45e9 < p.flops < 60e9
    assert 0.6e9 / 8 < p.bandwidth < 1e9 / 8
    # Known miss (see the report): measured best is 4 workers; the model's curve keeps falling
    # past 4 because its gather cost grows ~1 s per worker, not the 5 s jump seen at 5.
    assert result["measured_best"] == 4
    assert result["optimum"]["n_best"] > 4


# -- output --------------------------------------------------------------------------------

def test_table_has_a_row_per_worker_and_measured_errors():
    text = model().table(6, measured={2: 47.0})
    lines = text.splitlines()
    assert len(lines) == 7 and "total" in lines[0] and "measured" in lines[0]
    assert "47.000" in lines[2] and "%" in lines[2]


def test_cli_prints_curve_and_optimum():
    out = io.StringIO()
    parser = scale_cli.add_arguments(__import__("argparse").ArgumentParser())
    args = parser.parse_args(["--layers", ",".join(map(str, ULANOV_LAYERS)), "--examples",
                              "60000", "--bandwidth", "1Gbit", "--flops", "51G",
                              "--max-workers", "10"])
    m = scale_cli.run(args, out=out)
    text = out.getvalue()
    assert "11,972,510 weights" in text
    assert f"n* = {m.optimum()['n_best']}" in text
    assert len([ln for ln in text.splitlines() if ln.strip()[:2].strip().isdigit()]) == 10


def test_cli_models_the_exchange_of_a_fit_in_one_query():
    parser = scale_cli.add_arguments(__import__("argparse").ArgumentParser())
    argv = ["--layers", "784,1024,1024,10", "--examples", "60000", "--bandwidth", "1Gbit",
            "--flops", "51G", "--max-workers", "6"]
    tree = scale_cli.run(parser.parse_args(argv), out=io.StringIO())
    out = io.StringIO()
    m = scale_cli.run(parser.parse_args(argv + ["--aggregation", "exchange"]), out=out)
    assert m.aggregation == "exchange" and tree.aggregation == "tree"
    assert m.breakdown(4)["overhead"] == 0 < tree.breakdown(4)["overhead"]
    assert f"n* = {m.optimum()['n_best']}" in out.getvalue()
    with pytest.raises(SystemExit):
        parser.parse_args(argv + ["--aggregation", "allreduce"])


def test_module_entry_point_and_plot(tmp_path):
    png = tmp_path / "curve.png"
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    # No empty entry: it would put the working folder, the source tree's unbuilt ann_core/
    # included, ahead of the installed engine.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [os.path.join(os.path.dirname(here), "python"), env.get("PYTHONPATH")] if p)
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run(
        [sys.executable, "-m", "sparkann.scaling", "--layers", "784,2500,2000,1500,1000,500,10",
         "--examples", "60000", "--bandwidth", "1Gbit", "--flops", "51G", "--plot", str(png)],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "n* =" in proc.stdout and "closed form" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_clear(capsys):
    with pytest.raises(SystemExit):
        scale_cli.main(["--layers", "784,x,10", "--examples", "10", "--flops", "1G"])
    assert "--layers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scale_cli.main(["--layers", "784,10", "--examples", "10", "--flops", "1G",
                        "--bandwidth", "fast"])
    assert "bandwidth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scale_cli.main(["--layers", "784,10", "--examples", "10"])
    assert "--flops" in capsys.readouterr().err


def test_plot_with_measured_points(tmp_path):
    pytest.importorskip("matplotlib")
    path = model().plot(str(tmp_path / "p.png"), measured={1: 86.0, 2: 47.0})
    assert os.path.getsize(path) > 1000


def test_import_does_not_need_pyspark():
    code = ("import sys; sys.modules['pyspark'] = None; import sparkann.scaling as s; "
            "print(s.ScalingModel)")
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(here), "python"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_sparkann_scale_subcommand(capsys):
    cli = pytest.importorskip("sparkann.cli")
    code = cli.main(["scale", "--layers", "784,2500,2000,1500,1000,500,10", "--examples",
                     "60000", "--bandwidth", "1Gbit", "--flops", "51G", "--max-workers", "6"])
    assert code == 0
    out = capsys.readouterr().out
    assert "n* =" in out and "11,972,510 weights" in out
    assert cli.main(["scale", "--layers", "784,10", "--examples", "10", "--flops", "1G",
                     "--bandwidth", "fast"]) == 2
    assert "bandwidth" in capsys.readouterr().err


def test_cli_ulanov_validation(tmp_path, capsys):
    png = tmp_path / "ulanov.png"
    assert scale_cli.main(["--ulanov", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "avulanov/ann-benchmark" in out and "largest error on 3..5 workers" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_needs_layers_unless_ulanov(capsys):
    with pytest.raises(SystemExit):
        scale_cli.main(["--flops", "1G"])
    assert "--layers" in capsys.readouterr().err


@pytest.mark.parametrize("block_rows", [None, 128, 100])
def test_measure_flop_rate_in_blocks_or_whole(block_rows):
    pytest.importorskip("ann_core")
    rate = scaling.measure_flop_rate([20, 16, 4], rows=300, repeats=1, block_rows=block_rows)
    assert np.isfinite(rate) and rate > 0
    with pytest.raises(ValueError, match="statistic"):
        scaling.measure_flop_rate([20, 4], statistic="mean")


def _figure_facts(fig):
    ax = fig.axes[0]
    lines = ax.get_lines()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    return ax, lines, legend


def test_plot_marks_one_optimum_inside_the_range_it_shows():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    m = ScalingModel(ULANOV_LAYERS, 60000, Parameters(flops=51e9, bandwidth=125e6,
                                                      latency=1e-4, job=0.1))
    opt = m.optimum()
    fig = m.figure(measured={1: 86.0, 2: 47.0})
    try:
        fig.canvas.draw()
        ax, lines, legend = _figure_facts(fig)
        stars = [line for line in lines if line.get_marker() == "*"]
        assert len(stars) == 1 and list(stars[0].get_xdata()) == [opt["n_best"]]
        # no second marker of the closed form (a vertical line at a fractional n)
        assert not any(len(set(line.get_xdata())) == 1 and len(line.get_xdata()) > 1
                       for line in lines)
        assert not any("closed" in label for label in legend)
        assert legend == ["predicted total", "compute", "broadcast + aggregate + overhead",
                          "measured", f"optimum n* = {opt['n_best']} "
                          f"({opt['time_best']:.3g} s)"]
        assert ax.get_xlim()[1] >= opt["n_best"] + 1
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        renderer = fig.canvas.get_renderer()
        assert not ax.get_legend().get_window_extent(renderer).overlaps(
            ax.get_window_extent(renderer))
    finally:
        plt.close(fig)


def test_ulanov_table_and_plot_reach_the_predicted_optimum(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    png = tmp_path / "ulanov.png"
    assert scale_cli.main(["--ulanov", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    n_best = scaling.ulanov_validation()["optimum"]["n_best"]
    assert f"predicted n* = {n_best}" in out
    rows = [int(line.split()[0]) for line in out.splitlines()
            if line.strip() and line.split()[0].isdigit()]
    assert rows[0] == 1 and rows[-1] > n_best and rows == list(range(1, rows[-1] + 1))
    assert "lies past" not in out
    model = scaling.ulanov_validation()["model"]
    fig = model.figure(n_max=rows[-1])
    try:
        assert fig.axes[0].get_xlim()[1] > n_best
    finally:
        plt.close(fig)


def test_fewer_workers_asked_than_the_optimum_says_so(capsys):
    n_best = scaling.ulanov_validation()["optimum"]["n_best"]
    assert scale_cli.main(["--ulanov", "--max-workers", "8"]) == 0
    out = capsys.readouterr().out
    assert f"n* = {n_best} lies past the 8 workers shown" in out
