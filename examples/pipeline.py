"""sparkann's classifier inside a pyspark.ml Pipeline: index string labels, assemble and scale
numeric columns, train, turn predictions back into label names; save and reload the whole
fitted pipeline.

    python examples/pipeline.py                 # local[*]
    spark-submit --py-files dist/sparkann-*.whl examples/pipeline.py

The data are three noisy, interleaved spirals (not linearly separable), made with numpy.
"""
import argparse
import os
import sys
import tempfile

import numpy as np


COLOURS = ["blue", "green", "red"]


def spirals(n_per_class=400, noise=0.15, seed=0):
    """Rows (x, y, radius, label name) of three interleaved spirals."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, name in enumerate(COLOURS):
        t = rng.uniform(0.0, 1.0, n_per_class)
        angle = 3.0 * np.pi * t + 2.0 * np.pi * k / 3
        x = t * np.cos(angle) + noise * t * rng.standard_normal(n_per_class)
        y = t * np.sin(angle) + noise * t * rng.standard_normal(n_per_class)
        rows += [(float(a), float(b), float(np.hypot(a, b)), name) for a, b in zip(x, y)]
    return rows


def build_pipeline(classifier_class, max_iter=300):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import IndexToString, StandardScaler, StringIndexer, VectorAssembler

    # alphabetical order: label i is COLOURS[i], known before fitting
    indexer = StringIndexer(inputCol="colour", outputCol="label", stringOrderType="alphabetAsc")
    assemble = VectorAssembler(inputCols=["x", "y", "radius"], outputCol="raw")
    scale = StandardScaler(inputCol="raw", outputCol="features")
    mlp = classifier_class(layers=[3, 32, 32, 3], maxIter=max_iter, seed=3, blockSize=64)
    names = IndexToString(inputCol="prediction", outputCol="predicted_colour", labels=COLOURS)
    return Pipeline(stages=[indexer, assemble, scale, mlp, names])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--master", help="Spark master (default: spark-submit's; with plain "
                        "python $SPARK_MASTER, else spark.master, else local[*])")
    parser.add_argument("--estimator", choices=["sparkann", "mllib"], default="sparkann")
    parser.add_argument("--max-iter", type=int, default=300, help="l-bfgs iterations")
    args = parser.parse_args(argv)

    from pyspark.ml import PipelineModel
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    from sparkann.spark.session import script_session

    if args.estimator == "mllib":
        from pyspark.ml.classification import MultilayerPerceptronClassifier
    else:
        from sparkann.spark import MultilayerPerceptronClassifier

    spark = script_session("sparkann-pipeline", master=args.master)
    try:
        df = spark.createDataFrame(spirals(), ["x", "y", "radius", "colour"])
        train, test = df.randomSplit([0.8, 0.2], seed=1)
        model = build_pipeline(MultilayerPerceptronClassifier, args.max_iter).fit(train)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "pipeline")
            model.write().overwrite().save(path)
            reloaded = PipelineModel.load(path)
            predictions = reloaded.transform(test).cache()
            accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
                predictions)
            agree = predictions.filter("colour = predicted_colour").count() / predictions.count()
        predictions.select("x", "y", "colour", "predicted_colour").show(5)
        print(f"pipeline test accuracy: {accuracy:.4f} (names agree on {agree:.4f})")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
