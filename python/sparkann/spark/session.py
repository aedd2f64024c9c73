"""A SparkSession for scripts that run both under spark-submit and with plain python.

Which master a script gets, first match wins:

1. ``master`` given by the script (its own ``--master`` option);
2. under spark-submit, spark-submit's (its ``--master``, ``spark.master`` in its
   configuration, else its own default);
3. with plain python, ``$SPARK_MASTER``;
4. Spark's configuration (``spark.master`` in ``spark-defaults.conf`` or
   ``PYSPARK_SUBMIT_ARGS``), else ``local[*]``: what pyspark's launcher does when no master
   is set.

The log level is set through ``spark.log.level``, which Spark applies while the context
starts: under spark-submit (whose default level is INFO) a script that calls
``setLogLevel`` after ``getOrCreate`` has already printed dozens of INFO lines.
"""
import os
import sys


def under_spark_submit():
    """True when spark-submit started this Python: its JVM already runs, with its master."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def script_session(app_name, master=None, log_level="WARN", driver_memory=None):
    """Get or create the SparkSession of a script.

    Parameters
    ----------
    app_name : str
    master : str or None
        The script's own choice; None leaves it to spark-submit, ``$SPARK_MASTER`` or Spark's
        configuration (see the module's docstring).
    log_level : str or None
        ``spark.log.level`` (``WARN``, ``INFO``, ...); None keeps Spark's.
    driver_memory : str or None
        ``spark.driver.memory`` when this call starts the JVM (plain python); under
        spark-submit the driver's memory is spark-submit's ``--driver-memory``.
    """
    from pyspark.sql import SparkSession

    submitted = under_spark_submit()
    if master is None and not submitted:
        master = os.environ.get("SPARK_MASTER") or None
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    if not submitted:
        # Python workers run this interpreter, not whatever python3 is first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if driver_memory:
            builder = builder.config("spark.driver.memory", driver_memory)
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    if log_level:
        builder = builder.config("spark.log.level", log_level)
    return builder.getOrCreate()


def is_connect(spark):
    """True for a Spark Connect session (``SparkSession.builder.remote(...)``): it offers
    DataFrames, ``mapInArrow`` and caching, but no SparkContext, RDD, broadcast or Py4J."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def classic_context(spark):
    """The SparkContext of a classic session; None under Spark Connect."""
    return None if is_connect(spark) else spark.sparkContext


def conf_value(spark, key, default=None):
    """A Spark setting (static ones too, e.g. ``spark.task.cpus``) in either session kind:
    a session's runtime configuration starts as a copy of the SparkConf."""
    sc = classic_context(spark)
    if sc is not None:
        return sc.getConf().get(key, default)
    return spark.conf.get(key, default)


def task_cpus(spark):
    """``spark.task.cpus``: the cores one task may use, and so its BLAS threads."""
    return max(1, int(conf_value(spark, "spark.task.cpus", "1") or 1))
