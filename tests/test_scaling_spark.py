"""The scalability model's calibration jobs on a live local Spark (no timing assertions)."""
import numpy as np
import pytest

pytest.importorskip("pyspark")

from sparkann import scaling  # noqa: E402
from sparkann.spark import calibration  # noqa: E402


def test_one_explicit_level_sums_the_partials(spark):
    sc = spark.sparkContext
    for p in (1, 3, 5):
        partials = sc.parallelize(range(p), p).map(lambda i: np.full(4, float(i)))
        total = calibration.through_one_level(partials)
        assert np.array_equal(total, np.full(4, float(sum(range(p)))))


def test_random_frame_has_the_asked_shape(spark):
    df = calibration.random_frame(spark, 6, 3, rows=101, partitions=4, seed=2)
    assert df.rdd.getNumPartitions() == 4
    assert df.schema.simpleString() == "struct<features:array<float>,label:bigint>"
    rows = df.collect()
    assert len(rows) == 101
    assert all(len(r.features) == 6 and 0 <= r.label < 3 for r in rows)
    again = calibration.random_frame(spark, 6, 3, rows=101, partitions=4, seed=2).collect()
    assert rows == again


def test_calibration_jobs_give_observations_the_fit_reads(spark):
    sc = spark.sparkContext
    obs = calibration.spark_observations(sc, 2, [8_000, 400_000], [16_000, 800_000],
                                         partitions=[2, 4], repeats=1)
    obs += calibration.read_observations(spark, 2, 20, rows=(300, 600), repeats=1)
    kinds = [o["job"] for o in obs]
    # per partition count: empty, 2 broadcasts, 2 gathers, 2 explicit levels; two reads
    assert len(obs) == 2 * 7 + 2 and kinds.count("level") == 4 and kinds[-2:] == ["read"] * 2
    assert all(o["seconds"] > 0 for o in obs)
    assert all(o["levels"] == [o["partitions"], 1] for o in obs if o["job"] == "level")
    read = obs[-1]
    assert read["flops_per_example"] == 0 and read["examples"] == 600
    m = scaling.ScalingModel([20, 8, 2], 600, scaling.Parameters(flops=1e9, bandwidth=1e9))
    a = np.array([sum(m.features(o["n"], o["partitions"], o.get("broadcast_bytes"),
                                 o.get("aggregate_bytes"), o.get("examples"), o["parts"],
                                 o.get("flops_per_example"), o.get("levels")).values())
                  for o in obs])
    names = scaling.Parameters.NAMES
    # Every machine parameter the fit estimates appears in some job; FLOPs in none.
    assert not a[:, names.index("sec_per_flop")].any()
    for name in names[1:]:
        assert a[:, names.index(name)].any(), name


def test_worker_flop_rate_runs_on_the_executors(spark):
    pytest.importorskip("ann_core")
    rate = calibration.worker_flop_rate(spark.sparkContext, [12, 8, 3], 2, rows=256, repeats=1)
    assert isinstance(rate, float) and np.isfinite(rate) and rate > 0
