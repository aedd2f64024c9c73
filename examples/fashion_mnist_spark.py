"""Fashion-MNIST on Spark: train a network from Parquet, save it, load it, evaluate it.

The same script runs on a laptop (``local[*]``) and on a cluster (``spark-submit``)::

    # 1. IDX files -> Parquet (features: array<float> of 784 pixels in [0, 1], label: double)
    python examples/fashion_mnist_spark.py prepare --data /tmp/fashion-mnist
    # 2. train and save (one Spark application)
    spark-submit --py-files dist/sparkann-*.whl examples/fashion_mnist_spark.py \\
        train --data /tmp/fashion-mnist --model /tmp/fashion-mnist-model
    # 3. load and evaluate (a second application)
    spark-submit --py-files dist/sparkann-*.whl examples/fashion_mnist_spark.py \\
        evaluate --data /tmp/fashion-mnist --model /tmp/fashion-mnist-model
    # or all three in one go (what scripts/main.sh runs); prepare is skipped when the data is
    # there already (--overwrite writes it again)
    python examples/fashion_mnist_spark.py all --data /tmp/fashion-mnist --model /tmp/fm-model

``--dropout 0.2 0.5`` trains with dropout (the input's rate, then the hidden layers'); ``--plot
FILE.png`` draws each round's training loss beside the test loss of that round's weights (the
test rows are read on the driver and never trained on).

The master is spark-submit's when run with spark-submit; with plain python it is ``--master``,
else ``$SPARK_MASTER``, else Spark's configuration (``spark.master``), else ``local[*]``.

``--estimator mllib`` runs the same job with Spark MLlib's own
``MultilayerPerceptronClassifier``, for comparison: sparkann's estimator is a drop-in for it.
"""
import argparse
import os
import sys
import time

TRAIN, TEST = "train.parquet", "test.parquet"


def prepare(data, train_rows=None, test_rows=None, source=None):
    """Write the Fashion-MNIST IDX files as Parquet (no Spark needed); returns the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkann.datasets import load_fashion_mnist

    os.makedirs(data, exist_ok=True)
    for kind, name, rows in (("train", TRAIN, train_rows), ("test", TEST, test_rows)):
        X, y = load_fashion_mnist(source, kind=kind, dtype="float32")
        X, y = X[:rows], y[:rows]
        features = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])
        table = pa.table({"features": features.cast(pa.list_(pa.float32())),
                          "label": pa.array(y.astype("float64"))})
        pq.write_table(table, os.path.join(data, name), row_group_size=10_000)
        print(f"wrote {len(y)} {kind} rows to {os.path.join(data, name)}", flush=True)
    return data


def prepared_rows(data):
    """``{"train": rows, "test": rows}`` of the Parquet files in ``data``, or None when
    either is missing."""
    import pyarrow.parquet as pq

    paths = {kind: os.path.join(data, name) for kind, name in (("train", TRAIN), ("test", TEST))}
    if not all(os.path.exists(p) for p in paths.values()):
        return None
    return {kind: pq.read_metadata(p).num_rows for kind, p in paths.items()}


def prepare_once(args):
    """Mode all: prepare the data unless it is there already; returns an error or None."""
    existing = None if args.overwrite else prepared_rows(args.data)
    if existing is None:
        prepare(args.data, args.train_rows, args.test_rows, args.source)
        return None
    for kind, asked in (("train", args.train_rows), ("test", args.test_rows)):
        if asked is not None and asked != existing[kind]:
            return (f"{args.data} already holds {existing[kind]} {kind} rows, --{kind}-rows asks "
                    f"for {asked}: add --overwrite to prepare it again, or give another --data")
    print(f"using the data prepared in {args.data} ({existing['train']} train, "
          f"{existing['test']} test rows; --overwrite prepares it again)", flush=True)
    return None


def estimator_classes(name):
    """(classifier, model) classes: sparkann's, or Spark MLlib's own."""
    if name == "mllib":
        from pyspark.ml.classification import (MultilayerPerceptronClassificationModel,
                                               MultilayerPerceptronClassifier)
    else:
        from sparkann.spark import (MultilayerPerceptronClassificationModel,
                                    MultilayerPerceptronClassifier)
    return MultilayerPerceptronClassifier, MultilayerPerceptronClassificationModel


def read(spark, data, name):
    """A Parquet split with ``features`` as an ML vector, as pyspark.ml estimators take it."""
    from pyspark.ml.functions import array_to_vector

    df = spark.read.parquet(os.path.join(data, name))
    return df.withColumn("features", array_to_vector("features"))


def spread(df, partitions):
    """The rows in ``partitions`` partitions, each recomputed with the same rows in the same
    order (a lost executor then changes no weight): hashed and sorted by a row number that the
    Parquet files fix, where repartition(n) alone would deal rows out in arrival order."""
    from pyspark.sql import functions as F

    row = "__row"
    return (df.withColumn(row, F.monotonically_increasing_id())
            .repartition(partitions, row).sortWithinPartitions(row).drop(row))


def collect_rows(df):
    """(X, y) of a split as numpy arrays on the driver."""
    import numpy as np

    rows = df.toPandas()
    return np.stack(rows["features"].map(lambda v: v.toArray())), rows["label"].to_numpy()


def dropout_param(rates):
    """``--dropout`` as the Param takes it: no rate, one rate, or a list."""
    if not rates:
        return 0.0
    return rates[0] if len(rates) == 1 else rates


def train(spark, args):
    classifier, _ = estimator_classes(args.estimator)
    df = spread(read(spark, args.data, TRAIN), args.partitions).cache()
    n = df.count()
    layers = [784, *args.hidden, 10]
    unit = "round" if args.solver in ("adam", "sgd") else "iteration"
    print(f"training {layers} on {n} rows, {args.partitions} partitions, "
          f"{args.max_iter} {unit}s of {args.solver}", flush=True)
    mlp = classifier(layers=layers, maxIter=args.max_iter, blockSize=args.block_size,
                     solver=args.solver, seed=args.seed, tol=1e-9, stepSize=args.step_size)
    progress = None
    if args.estimator == "sparkann":
        from sparkann.progress import HeldOutScore, TrainingProgress

        # Params Spark MLlib does not have: hidden activation, initialisation, averaging
        mlp.setParams(activation=args.activation, initScheme=args.init, syncSteps=args.sync_steps,
                      dropout=dropout_param(args.dropout))
        progress = TrainingProgress(args.max_iter, unit=unit)
        if args.plot:   # the test rows, on the driver, score each round's weights
            X, y = collect_rows(read(spark, args.data, TEST))
            watch = HeldOutScore(layers, args.activation, X, y, then=progress)
        mlp.setCallback(watch if args.plot else progress)
    start = time.perf_counter()
    try:
        model = mlp.fit(df)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - start
    print(f"trained in {seconds:.1f} s", flush=True)
    if args.plot:
        from sparkann.plots import save_training_plot

        save_training_plot(args.plot, watch.history, network=f"{'-'.join(map(str, layers))} "
                           f"{args.activation}", solver=f"{args.solver} on Spark",
                           accuracy=watch.history.val_metric[-1], per="round",
                           watched="test", dropout=args.dropout)
        print(f"test loss per round drawn to {args.plot}", flush=True)
    model.write().overwrite().save(args.model)
    print(f"saved the model to {args.model}", flush=True)
    df.unpersist()
    return seconds


def evaluate(spark, args):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    _, model_class = estimator_classes(args.estimator)
    model = model_class.load(args.model)
    df = read(spark, args.data, TEST)
    start = time.perf_counter()
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
        model.transform(df))
    print(f"test accuracy: {accuracy:.4f} on {df.count()} rows "
          f"(evaluated in {time.perf_counter() - start:.1f} s)", flush=True)
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["prepare", "train", "evaluate", "all"])
    parser.add_argument("--data", required=True, help="folder of train.parquet and test.parquet")
    parser.add_argument("--model", help="where the model is saved / loaded from")
    parser.add_argument("--source", help="folder of the IDX files (default: Debian's package)")
    parser.add_argument("--overwrite", action="store_true",
                        help="all: prepare the data again even when --data holds it already")
    parser.add_argument("--train-rows", type=int, help="prepare: keep the first N rows only")
    parser.add_argument("--test-rows", type=int, help="prepare: keep the first N rows only")
    parser.add_argument("--estimator", choices=["sparkann", "mllib"], default="sparkann")
    # defaults: the recipe of scripts/main.sh (88-89% test accuracy on the full data);
    # Spark MLlib's own: --estimator mllib --activation sigmoid --solver l-bfgs --step-size 0.03
    parser.add_argument("--hidden", type=int, nargs="*", default=[256, 128],
                        help="hidden layer widths (default: 256 128)")
    parser.add_argument("--max-iter", type=int, default=15,
                        help="iterations (l-bfgs) or rounds of local steps and averaging (adam)")
    parser.add_argument("--solver", default="adam", help="l-bfgs, gd; sparkann also adam, sgd")
    parser.add_argument("--step-size", type=float, default=0.001)
    parser.add_argument("--activation", default="relu",
                        help="sparkann only: hidden activation (MLlib's is sigmoid)")
    parser.add_argument("--init", default="he", help="sparkann only: spark, glorot, he")
    parser.add_argument("--sync-steps", type=int, default=0,
                        help="sparkann adam/sgd only: local steps between two averagings "
                        "(0: one pass over each partition)")
    parser.add_argument("--dropout", type=float, nargs="*",
                        help="sparkann adam/sgd only: one rate after every hidden layer, or "
                        "the input's rate then each hidden layer's")
    parser.add_argument("--plot", metavar="FILE.png", help="sparkann only: draw each round's "
                        "training loss and test loss")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--master", help="Spark master (default: spark-submit's; with plain "
                        "python $SPARK_MASTER, else spark.master, else local[*])")
    parser.add_argument("--log-level", default="WARN",
                        help="Spark's log level, set as the session starts (default: WARN)")
    args = parser.parse_args(argv)
    if args.mode != "prepare" and not args.model:
        parser.error(f"{args.mode} needs --model")
    if args.estimator == "mllib" and (args.solver not in ("l-bfgs", "gd")
                                      or args.activation != "sigmoid"):
        parser.error("Spark MLlib's estimator has solvers l-bfgs and gd and sigmoid hidden "
                     "layers only: add --solver l-bfgs --activation sigmoid --step-size 0.03")
    if args.estimator == "mllib" and (args.dropout or args.plot):
        parser.error("--dropout and --plot are sparkann's only")

    if args.mode == "prepare":
        prepare(args.data, args.train_rows, args.test_rows, args.source)
        return 0
    start = time.perf_counter()
    if args.mode == "all":
        error = prepare_once(args)
        if error:
            parser.error(error)
    from sparkann.spark.session import script_session

    spark = script_session("sparkann-fashion-mnist", master=args.master,
                           log_level=args.log_level, driver_memory="4g")
    try:
        if args.mode in ("train", "all"):
            train(spark, args)
        if args.mode in ("evaluate", "all"):
            evaluate(spark, args)
    finally:
        spark.stop()
    print(f"total time: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
