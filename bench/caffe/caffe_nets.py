"""Caffe `caffe time` nets written from sparkann's own topology spec.

The spec is the layer list `ann_core.Network` takes, e.g. for 784-256-10:
``[("dense", 256), ("activation", "sigmoid"), ("dense", 10), ("loss", "softmax_cross_entropy")]``.
Each dense layer becomes an InnerProduct, each activation an in-place layer on it (Sigmoid,
TanH, ReLU), the loss a SoftmaxWithLoss, and the data a DummyData layer of `batch` rows. The
data fillers are constant because Caffe refills any other filler's blob on every forward pass,
which would add random-number time to the figure; the weights get Spark MLlib's
initialisation (uniform in +-2.4/sqrt(n_in)), as the engine's do in bench_core.py.

    python bench/caffe/caffe_nets.py OUT_DIR     # A, B and C at batch 128 and 1024
"""
import argparse
import math
import pathlib
import sys

# sparkann activation -> Caffe layer type (leaky_relu's slope becomes ReLU's negative_slope)
ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "TanH", "relu": "ReLU", "leaky_relu": "ReLU"}
LOSSES = {"softmax_cross_entropy": "SoftmaxWithLoss"}


def _uniform(bound):
    return f'type: "uniform" min: {-bound:.9g} max: {bound:.9g}'


def net_prototxt(name, n_in, layers, batch, data_value=0.5):
    """The text of a Caffe NetParameter for `layers` (sparkann's spec) on `batch` rows of `n_in`."""
    if batch < 1 or n_in < 1:
        raise ValueError(f"batch and n_in must be positive integers, got batch={batch}, "
                         f"n_in={n_in}")
    if not layers or layers[-1][0] != "loss":
        raise ValueError(f"{name}: the spec must end with a ('loss', ...) entry, got {layers[-1:]}")
    out = [f'name: "{name}"',
           'layer {', '  name: "data" type: "DummyData" top: "data" top: "label"',
           '  dummy_data_param {',
           f'    shape {{ dim: {batch} dim: {n_in} }} shape {{ dim: {batch} }}',
           f'    data_filler {{ type: "constant" value: {data_value} }}',
           '    data_filler { type: "constant" value: 0 }',
           '  }', '}']
    bottom, width, n_dense = "data", n_in, 0
    for position, entry in enumerate(layers):
        kind, arg = entry[0], entry[1] if len(entry) > 1 else None
        if kind == "dense":
            n_dense += 1
            top = f"ip{n_dense}"
            bound = 2.4 / math.sqrt(width)
            out += ['layer {',
                    f'  name: "{top}" type: "InnerProduct" bottom: "{bottom}" top: "{top}"',
                    f'  inner_product_param {{ num_output: {arg}',
                    f'    weight_filler {{ {_uniform(bound)} }}',
                    f'    bias_filler {{ {_uniform(bound)} }} }}', '}']
            bottom, width = top, arg
        elif kind == "activation" and arg in ACTIVATIONS:
            slope = (f' relu_param {{ negative_slope: {entry[2]} }}'
                     if arg == "leaky_relu" and len(entry) > 2 else "")
            out += ['layer {', f'  name: "{arg}{n_dense}" type: "{ACTIVATIONS[arg]}" '
                    f'bottom: "{bottom}" top: "{bottom}"{slope}', '}']
        elif kind == "loss" and arg in LOSSES and position == len(layers) - 1:
            out += ['layer {', f'  name: "loss" type: "{LOSSES[arg]}" bottom: "{bottom}" '
                    'bottom: "label" top: "loss"', '}']
        else:
            raise ValueError(f"{name}: layer {position} {entry!r} has no Caffe counterpart here "
                             f"(supported: dense, activation {sorted(ACTIVATIONS)}, and "
                             f"loss {sorted(LOSSES)} as the last layer)")
    return "\n".join(out) + "\n"


def write_nets(out_dir, topologies, batches, spec):
    """Write `<topology>_<batch>.prototxt` for each; return {(topology, batch): path}."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for topo, sizes in topologies.items():
        for batch in batches:
            path = out_dir / f"{topo}_{batch}.prototxt"
            path.write_text(net_prototxt(f"{topo}_{batch}", sizes[0], spec(sizes), batch))
            paths[topo, batch] = path
    return paths


def main(argv=None):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from bench_core import TOPOLOGIES, spec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument("--batches", default="128,1024")
    args = parser.parse_args(argv)
    chosen = {t: TOPOLOGIES[t] for t in args.topologies.split(",")}
    for path in write_nets(args.out_dir, chosen, [int(b) for b in args.batches.split(",")],
                           spec).values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
