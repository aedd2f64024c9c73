"""``sparkann scale`` (and ``python -m sparkann.scaling``): the predicted curve and the best
number of workers, from given or measured machine costs."""
import argparse
import dataclasses
import sys

from sparkann.scaling.fit import ULANOV_BENCHMARK, ulanov_validation
from sparkann.scaling.model import AGGREGATIONS, Parameters, ScalingModel, weights_of
from sparkann.scaling.units import parse_bandwidth, parse_duration, parse_flops
from sparkann.topology import check_weights_fit

#: one line for the subcommand's help
HELP = "predict seconds per iteration on n workers, and the best n"


def add_arguments(parser):
    """Add the ``scale`` options to an ``argparse`` parser."""
    parser.add_argument("--layers", help="layer sizes, e.g. 784,2500,2000,1500,1000,500,10")
    parser.add_argument("--examples", type=int, help="training examples")
    parser.add_argument("--ulanov", action="store_true",
                        help="instead: calibrate on the published ann-benchmark's 1- and "
                             "2-worker points and compare the predictions with 3..5 workers")
    parser.add_argument("--bandwidth", default="1Gbit",
                        help="link speed: 1Gbit, 10GbE, 125MB/s (default 1Gbit)")
    parser.add_argument("--flops", help="FLOP/s of one worker: 51G, 2.5T (or --calibrate)")
    parser.add_argument("--latency", default="0.1ms", help="per message (default 0.1ms)")
    parser.add_argument("--job-overhead", default="0.1s",
                        help="fixed seconds per iteration (default 0.1s)")
    parser.add_argument("--task-overhead", default="0s", help="fixed seconds per task")
    parser.add_argument("--read-rate", default=None,
                        help="bytes/s at which a task reads its cached training blocks, e.g. "
                             "1GB/s (default: reading is free)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--depth", type=int, default=2, help="treeAggregate depth")
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="tree",
                        help="how the partial gradients are summed: tree (a job per "
                             "iteration, treeAggregate), reduce-scatter (a query per "
                             "iteration under Spark Connect), exchange (the whole fit in "
                             "one query; needs a task slot per partition)")
    parser.add_argument("--partitions-per-worker", type=int, default=1)
    parser.add_argument("--max-workers", type=int, default=None,
                        help="rows of the printed curve (default: 2 x the optimum, >= 8)")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure the FLOP rate and the Spark costs here (needs pyspark)")
    parser.add_argument("--master", default="local[2]", help="Spark master for --calibrate")
    parser.add_argument("--plot", help="write the curve to this PNG file")
    return parser


def _layers(text):
    try:
        layers = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--layers: expected comma-separated integers, received {text!r}")
    # the driver holds the weights: a network larger than this machine cannot be trained here
    check_weights_fit(weights_of(layers), f"--layers {layers}")
    return layers


def model_from_args(args):
    """The :class:`ScalingModel` the command-line arguments describe."""
    if args.layers is None or args.examples is None:
        raise ValueError("--layers and --examples are required (or --ulanov)")
    layers = _layers(args.layers)
    if args.calibrate:
        from sparkann.spark.calibration import calibrate_local     # needs pyspark and Java

        return calibrate_local(layers, args.examples, args.dtype, master=args.master)
    if args.flops is None:
        raise ValueError("--flops: required unless --calibrate (e.g. --flops 51G)")
    params = Parameters(flops=parse_flops(args.flops), bandwidth=parse_bandwidth(args.bandwidth),
                        latency=parse_duration(args.latency),
                        task=parse_duration(args.task_overhead),
                        job=parse_duration(args.job_overhead),
                        read=None if args.read_rate is None else parse_bandwidth(args.read_rate))
    return ScalingModel(layers, args.examples, params,
                        bytes_per_weight=4 if args.dtype == "float32" else 8,
                        partitions_per_worker=args.partitions_per_worker, depth=args.depth)


def _run_ulanov(args, out):
    result = ulanov_validation()
    model, data = result["model"], ULANOV_BENCHMARK
    measured = dict(zip(data["workers"], data["total_s"]))
    p = model.params
    print(f"published: {data['source']}", file=out)
    print(f"calibrated on {data['workers'][:2]} workers: {p.flops / 1e9:.1f} GFLOP/s, "
          f"{p.bandwidth * 8 / 1e9:.2f} Gbit/s effective, task {p.task:.2f} s, job "
          f"{p.job:.3f} s", file=out)
    opt = result["optimum"]
    n_max = args.max_workers or model.shown_workers(opt)
    print(model.table(n_max, measured=measured), file=out)
    print(f"largest error on 3..5 workers: {result['max_abs_error']:.1%}; measured best "
          f"{result['measured_best']} workers, predicted n* = {opt['n_best']} (closed form "
          f"{opt['n_closed_form']:.2f}, {opt['n_within']} within 5% of the best)", file=out)
    _beyond(opt, n_max, out)
    if args.plot:
        model.plot(args.plot, n_max=n_max, measured=measured,
                   title="Ulanov ann-benchmark, 1 GbE, float64")
        print(f"plot written to {args.plot}", file=out)
    return model


def _beyond(opt, n_max, out):
    if opt["n_best"] > n_max:
        print(f"(n* = {opt['n_best']} lies past the {n_max} workers shown: raise "
              f"--max-workers to see it)", file=out)


def run(args, out=None):
    """Print the curve and the optimum for parsed arguments; returns the model."""
    out = out or sys.stdout
    if getattr(args, "ulanov", False):
        return _run_ulanov(args, out)
    model = model_from_args(args)
    if args.aggregation != model.aggregation:
        model = dataclasses.replace(model, aggregation=args.aggregation)
    opt = model.optimum()
    p = model.params
    n_max = args.max_workers or model.shown_workers(opt)
    print(f"network {'-'.join(map(str, model.layers))}: {model.n_weights:,} weights "
          f"({model.weight_bytes / 1e6:.1f} MB), {model.examples:,} examples", file=out)
    read = "free" if p.read is None else f"{p.read / 1e6:.3g} MB/s"
    print(f"worker {p.flops / 1e9:.3g} GFLOP/s, link {p.bandwidth * 8 / 1e9:.3g} Gbit/s, "
          f"latency {p.latency * 1e3:.3g} ms, job {p.job:.3g} s, task {p.task:.3g} s, reading "
          f"cached data {read}", file=out)
    print(model.table(n_max), file=out)
    print(f"n* = {opt['n_best']} (predicted {opt['time_best']:.3f} s per iteration, "
          f"{model.time(1) / opt['time_best']:.2f}x one worker); closed form "
          f"n* = {opt['n_closed_form']:.2f}; {opt['n_within']} workers come within 5% of the "
          f"best", file=out)
    _beyond(opt, n_max, out)
    if args.plot:
        model.plot(args.plot, n_max=n_max)
        print(f"plot written to {args.plot}", file=out)
    return model


def command(args):
    """``run`` as a ``sparkann`` subcommand: exit code 0."""
    run(args)
    return 0


def main(argv=None):
    """``python -m sparkann.scaling`` (``sparkann scale``): print the predicted curve and n*."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="sparkann scale",
        description="Predict seconds per full-batch iteration on n Spark workers, and n*."))
    args = parser.parse_args(argv)
    try:
        run(args)
    except ValueError as err:
        parser.error(str(err))
    return 0

