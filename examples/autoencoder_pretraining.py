"""Unsupervised pretraining on Spark: a stacked autoencoder starts a classifier with few labels.

A ``StackedAutoencoder`` 784-256-64 learns from all 60,000 Fashion-MNIST training images
without their labels (layer by layer, 10 rounds of adam with step 0.001 each, then 10 rounds
of the whole stack); then, for each seed, the same classifier 784-256-64-10 (sigmoid, l-bfgs)
is trained on 1,000 labelled images twice: from the encoder's weights
(``model.classifier(10, ...)``: all layers train, the encoder's included) and from the random
start of the same seed (the output layer starts the same in both). It prints each layer's
reconstruction loss after each round and its final mean squared error, both test accuracies
per seed and their means (docs/benchmarks.md has a measured run: +2.55 points)::

    python examples/autoencoder_pretraining.py                 # local[2], the full run
    python examples/autoencoder_pretraining.py --rows 5000 --seeds 0   # a quick look

The images come from Debian's ``dataset-fashion-mnist`` (``sparkann.datasets``).
"""
import argparse
import os
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--rows", type=int, default=60000,
                        help="unlabelled training images for the autoencoder")
    parser.add_argument("--labelled", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ae-iter", type=int, default=10,
                        help="adam rounds (passes over the data) per autoencoder layer")
    parser.add_argument("--ae-step", type=float, default=0.001,
                        help="adam's step size (0.03 drives most sigmoid codes to 0 or 1, and "
                             "a saturated encoder is a poor start for the classifier)")
    parser.add_argument("--fine-tune", action=argparse.BooleanOptionalAction, default=True,
                        help="after the layers, train the whole stack for --ae-iter rounds")
    parser.add_argument("--clf-iter", type=int, default=100, help="l-bfgs iterations")
    args = parser.parse_args(argv)

    import numpy as np
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    from sparkann.datasets import load_fashion_mnist
    from sparkann.spark import MultilayerPerceptronClassifier, StackedAutoencoder
    from sparkann.spark.data import dataframe_from_numpy

    spark = (SparkSession.builder.master(args.master).appName("autoencoder-pretraining")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "4g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    X, y = load_fashion_mnist(kind="train")
    X_test, y_test = load_fashion_mnist(kind="test")
    unlabelled = dataframe_from_numpy(spark, X[:args.rows]).cache()
    test = dataframe_from_numpy(spark, X_test, y_test).cache()

    start = time.perf_counter()
    ae = StackedAutoencoder(layers=[784, 256, 64], solver="adam", maxIter=args.ae_iter,
                            stepSize=args.ae_step, fineTune=args.fine_tune, seed=0)
    model = ae.fit(unlabelled)
    print(f"autoencoder 784-256-64 on {args.rows} unlabelled images: "
          f"{time.perf_counter() - start:.0f} s")
    for s in model.layerSummaries:
        h = s["objectiveHistory"]
        print(f"  layer {s['layer'] + 1} {s['layers']} ({s['loss']} per image, rounds 1-{len(h)}): "
              + " ".join(f"{v:.2f}" for v in h)
              + f"; reconstruction MSE {s['reconstructionError']:.5f}")
    if args.fine_tune:
        print("  fine-tuning of the whole stack, rounds 1-"
              f"{len(model.fineTuneHistory)}: "
              + " ".join(f"{v:.2f}" for v in model.fineTuneHistory))
    print(f"  whole stack reconstruction MSE {model.reconstructionError(unlabelled):.5f}")

    results = []
    for seed in args.seeds:
        rows = np.random.RandomState(seed).choice(len(X), args.labelled, replace=False)
        labelled = dataframe_from_numpy(spark, X[rows], y[rows]).cache()
        params = dict(solver="l-bfgs", maxIter=args.clf_iter, seed=seed)
        accuracy = {}
        for name, clf in (("encoder", model.classifier(10, **params)),
                          ("random", MultilayerPerceptronClassifier(layers=[784, 256, 64, 10],
                                                                    **params))):
            accuracy[name] = clf.fit(labelled).evaluate(test).accuracy
        labelled.unpersist()
        results.append((accuracy["encoder"], accuracy["random"]))
        print(f"seed {seed}: {args.labelled} labels, test accuracy from the encoder "
              f"{accuracy['encoder']:.4f}, from a random start {accuracy['random']:.4f}, "
              f"difference {100 * (accuracy['encoder'] - accuracy['random']):+.2f} points",
              flush=True)
    encoder, random = (float(np.mean(a)) for a in zip(*results))
    print(f"mean over {len(results)} seeds: encoder {encoder:.4f}, random {random:.4f}, "
          f"difference {100 * (encoder - random):+.2f} points")
    spark.stop()


if __name__ == "__main__":
    main()
