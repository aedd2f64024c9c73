"""Dropout on Fashion-MNIST: 784-1024-1024-10 ReLU, Adam, dropout 0.2 on the input and 0.5 on
the hidden layers, on one machine and on ``local[2]`` Spark; the same recipe without dropout,
to show what dropout prevents.

Recipe: inputs standardised with the training rows' mean and standard deviation, Adam with step
size 0.001 decayed by a cosine over the run, mini-batches of 128, He initialisation. After
every epoch (Spark: every round, one pass over each partition's rows) the weights are scored on
the 10,000 test rows, which are never trained on; ``--plot PREFIX`` draws training and test
loss per epoch to ``PREFIX-<run>.png``::

    python bench/dropout_recipe.py --plot dropout                # all three runs
    python bench/dropout_recipe.py --runs spark --epochs 100     # one of them
"""
import argparse
import time

import numpy as np

from sparkann.datasets import load_fashion_mnist

HIDDEN = (1024, 1024)
DROPOUT = (0.2, 0.5, 0.5)      # the input's rate, then each hidden layer's
RUNS = ("dropout", "plain", "spark")


def standardised(X, X_test):
    """Both splits scaled by the training rows' mean and standard deviation."""
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-3   # + 1e-3: a few pixels never vary
    return (X - mean) / scale, (X_test - mean) / scale


def single_machine(X, y, X_test, y_test, args, dropout):
    from sparkann import MLPClassifier

    clf = MLPClassifier(HIDDEN, activation="relu", solver="adam", learning_rate_init=args.lr,
                        learning_rate="cosine", batch_size=128, max_iter=args.epochs,
                        dropout=dropout, alpha=0.0, random_state=args.seed,
                        n_threads=args.threads)
    clf.fit(X, y, validation_data=(X_test, y_test))
    return clf.history_, clf.score(X_test, y_test)


def spark(X, y, X_test, y_test, args):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    from sparkann.progress import HeldOutScore, TrainingProgress
    from sparkann.spark import MultilayerPerceptronClassifier
    from sparkann.spark.data import dataframe_from_numpy
    from sparkann.spark.session import script_session

    session = script_session("sparkann-dropout-recipe", master="local[2]", driver_memory="6g")
    try:
        train = dataframe_from_numpy(session, X, y, num_partitions=2).cache()
        test = dataframe_from_numpy(session, X_test, y_test, num_partitions=2)
        layers = [X.shape[1], *HIDDEN, 10]
        watch = HeldOutScore(layers, "relu", X_test, y_test,
                             then=TrainingProgress(args.epochs, bar=False))
        mlp = MultilayerPerceptronClassifier(
            layers=layers, solver="adam", stepSize=args.lr, stepSizeSchedule="cosine",
            maxIter=args.epochs, blockSize=128, activation="relu", initScheme="he",
            dropout=list(DROPOUT), seed=args.seed, tol=0.0)
        model = mlp.setCallback(watch).fit(train)
        accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
            model.transform(test))
        train.unpersist()
        return watch.history, accuracy
    finally:
        session.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=",".join(RUNS),
                        help=f"comma-separated, of {', '.join(RUNS)} (default: all)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs (Spark: rounds)")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="BLAS threads on one machine")
    parser.add_argument("--plot", metavar="PREFIX", help="draw PREFIX-<run>.png")
    args = parser.parse_args(argv)
    runs = [r for r in args.runs.split(",") if r]
    unknown = set(runs) - set(RUNS)
    if unknown:
        parser.error(f"unknown runs {sorted(unknown)}; choose from {RUNS}")

    X, y = load_fashion_mnist(kind="train", dtype="float32")
    X_test, y_test = load_fashion_mnist(kind="test", dtype="float32")
    X, X_test = standardised(X, X_test)
    for run in runs:
        start = time.perf_counter()
        if run == "spark":
            history, accuracy = spark(X, y, X_test, y_test, args)
        else:
            history, accuracy = single_machine(X, y, X_test, y_test, args,
                                               DROPOUT if run == "dropout" else 0.0)
        best = int(np.nanargmin(history.val_loss))
        print(f"{run}: test accuracy {accuracy:.4f} after {len(history)} epochs in "
              f"{time.perf_counter() - start:.0f} s; final training loss {history.loss[-1]:.4f}, "
              f"test loss {history.val_loss[-1]:.4f} (lowest {history.val_loss[best]:.4f} at "
              f"epoch {best + 1})", flush=True)
        print(f"{run}: test loss per epoch " +
              " ".join(f"{v:.4f}" for v in history.val_loss), flush=True)
        if args.plot:
            from sparkann.plots import save_training_plot

            where = "on local[2] Spark" if run == "spark" else "one machine"
            path = save_training_plot(
                f"{args.plot}-{run}.png", history, network="784-1024-1024-10 relu",
                solver=f"adam, {where}", accuracy=accuracy, watched="test",
                dropout=list(DROPOUT) if run != "plain" else None)
            print(f"{run}: curves drawn to {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
