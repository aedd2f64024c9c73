"""Test accuracy of bfloat16 against float32 training on Fashion-MNIST (Adam, ReLU).

For each topology (A: 784-256-128-10, B: 784-1024-1024-10) and seed, the same recipe is
trained in float32 and in dtype="bfloat16" (float32 weights, bfloat16 GEMM operands), and the
test accuracies are printed with their means over the seeds and the difference.

    python bench/bench_bf16_accuracy.py                      # sparkann.MLPClassifier
    python bench/bench_bf16_accuracy.py --spark local[2]     # sparkann.spark, local[2]
    python bench/bench_bf16_accuracy.py --topologies A --seeds 0 --epochs 2   # a short run

Where the CPU lacks native bfloat16 the bfloat16 runs warn and train in float32 (the line
says which precision ran).
"""
import argparse
import statistics
import sys
import time


import ann_core
from sparkann.datasets import load_fashion_mnist

TOPOLOGIES = {"A": (256, 128), "B": (1024, 1024)}


def single_machine(hidden, dtype, seed, epochs, data):
    from sparkann import MLPClassifier
    X, y, Xt, yt = data
    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", solver="adam",
                        learning_rate_init=1e-3, batch_size=128, max_iter=epochs, tol=0.0,
                        n_iter_no_change=epochs + 1, random_state=seed, dtype=dtype,
                        block_size=128)
    clf.fit(X, y)
    return float((clf.predict(Xt) == yt).mean())


def on_spark(hidden, dtype, seed, epochs, frames):
    from sparkann.spark import MultilayerPerceptronClassifier
    train, test = frames
    model = MultilayerPerceptronClassifier(layers=[784, *hidden, 10], activation="relu",
                                           solver="adam", stepSize=1e-3, maxIter=epochs,
                                           blockSize=128, initScheme="glorot", tol=0.0,
                                           seed=seed, dtype=dtype).fit(train)
    return float(model.evaluate(test).accuracy)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topologies", default="A,B")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--spark", metavar="MASTER", help="train with sparkann.spark on MASTER")
    args = parser.parse_args(argv)
    X, y = load_fashion_mnist(kind="train", dtype="float32")
    Xt, yt = load_fashion_mnist(kind="test", dtype="float32")
    print(f"bfloat16 here: {ann_core.capabilities()['bf16']}", flush=True)
    if args.spark:
        from sparkann.spark.data import dataframe_from_numpy
        from sparkann.spark.session import script_session
        # 1 GiB, Spark's default driver heap, cannot hold both cached splits
        spark = script_session("bf16-accuracy", master=args.spark, driver_memory="6g")
        frames = (dataframe_from_numpy(spark, X, y, num_partitions=2).cache(),
                  dataframe_from_numpy(spark, Xt, yt, num_partitions=2).cache())
        run = lambda hidden, dtype, seed: on_spark(hidden, dtype, seed, args.epochs, frames)  # noqa: E731
    else:
        data = (X, y, Xt, yt)
        run = lambda hidden, dtype, seed: single_machine(hidden, dtype, seed, args.epochs, data)  # noqa: E731
    seeds = [int(s) for s in args.seeds.split(",")]
    for topo in args.topologies.split(","):
        accuracy = {}
        for dtype in ("float32", "bfloat16"):
            accuracy[dtype] = []
            for seed in seeds:
                start = time.perf_counter()
                accuracy[dtype].append(run(TOPOLOGIES[topo], dtype, seed))
                print(f"{topo} {dtype:8} seed {seed}: test accuracy {accuracy[dtype][-1]:.4f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
        means = {d: statistics.mean(a) for d, a in accuracy.items()}
        print(f"{topo} mean over seeds {seeds}: float32 {100 * means['float32']:.2f}%, "
              f"bfloat16 {100 * means['bfloat16']:.2f}%, difference "
              f"{100 * (means['bfloat16'] - means['float32']):+.2f} points", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
