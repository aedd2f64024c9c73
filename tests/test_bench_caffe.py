"""bench/caffe/: the Caffe nets follow sparkann's topology spec; `caffe time` output is read right.

The last test runs a real Caffe when SPARKANN_CAFFE names one (a binary or a build directory,
see bench/caffe/build_caffe.sh); without it, it is skipped.
"""
import os
import re

import pytest

from caffe_nets import net_prototxt, write_nets
from caffe_time import caffe_time, find_caffe


def mlp_spec(sizes, activation="sigmoid"):
    layers = []
    for n in sizes[1:-1]:
        layers += [("dense", n), ("activation", activation)]
    return layers + [("dense", sizes[-1]), ("loss", "softmax_cross_entropy")]


def layer_blocks(text):
    """(name, type, bottoms, tops, body) of each `layer { ... }` block, in order."""
    blocks = []
    for body in re.findall(r"^layer \{\n(.*?)\n\}$", text, re.S | re.M):
        blocks.append((re.search(r'name: "([^"]+)"', body).group(1),
                       re.search(r'type: "([^"]+)"', body).group(1),
                       re.findall(r'bottom: "([^"]+)"', body),
                       re.findall(r'top: "([^"]+)"', body), body))
    return blocks


def test_net_follows_the_spec_layer_by_layer():
    sizes = [784, 2500, 2000, 1500, 1000, 500, 10]
    text = net_prototxt("C_1024", sizes[0], mlp_spec(sizes), 1024)
    blocks = layer_blocks(text)
    types = [b[1] for b in blocks]
    assert types == (["DummyData"] + ["InnerProduct", "Sigmoid"] * 5 +
                     ["InnerProduct", "SoftmaxWithLoss"])
    assert "shape { dim: 1024 dim: 784 } shape { dim: 1024 }" in blocks[0][4]
    assert blocks[0][4].count('type: "constant"') == 2  # filled once, not on every pass
    inner = [b for b in blocks if b[1] == "InnerProduct"]
    assert [int(re.search(r"num_output: (\d+)", b[4]).group(1)) for b in inner] == sizes[1:]
    for (name, _, bottoms, tops, body), n_in in zip(inner, sizes[:-1]):
        bound = float(re.search(r"weight_filler \{[^}]*max: ([0-9.e-]+)", body).group(1))
        assert bound == pytest.approx(2.4 / n_in ** 0.5, rel=1e-8)
        assert tops == [name]
    for previous, (name, kind, bottoms, tops, _) in zip(blocks, blocks[1:]):
        if kind == "Sigmoid":  # in place, on the InnerProduct just before it
            assert previous[1] == "InnerProduct" and bottoms == tops == [previous[0]]
    assert blocks[-1][2] == ["ip6", "label"]


def test_other_activations_map_to_caffe_layers():
    spec = [("dense", 8), ("activation", "leaky_relu", 0.25), ("dense", 8),
            ("activation", "tanh"), ("dense", 3), ("loss", "softmax_cross_entropy")]
    blocks = layer_blocks(net_prototxt("x", 5, spec, 4))
    assert [b[1] for b in blocks] == ["DummyData", "InnerProduct", "ReLU", "InnerProduct",
                                      "TanH", "InnerProduct", "SoftmaxWithLoss"]
    assert "negative_slope: 0.25" in blocks[2][4]


@pytest.mark.parametrize("spec, message", [
    ([("dense", 4), ("activation", "gelu"), ("dense", 2), ("loss", "softmax_cross_entropy")],
     r"layer 1 \('activation', 'gelu'\) has no Caffe counterpart"),
    ([("dense", 2), ("loss", "squared_error")], r"layer 1 \('loss', 'squared_error'\)"),
    ([("dense", 2)], "must end with a \\('loss', ...\\) entry"),
])
def test_unsupported_specs_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        net_prototxt("bad", 3, spec, 2)


def test_write_nets_names_one_file_per_topology_and_batch(tmp_path):
    paths = write_nets(tmp_path, {"A": [784, 256, 128, 10]}, [128, 1024], mlp_spec)
    assert sorted(p.name for p in paths.values()) == ["A_1024.prototxt", "A_128.prototxt"]
    assert "dim: 1024 dim: 784" in paths["A", 1024].read_text()


def test_find_caffe_names_what_it_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match="no executable `caffe` there"):
        find_caffe(tmp_path)


@pytest.mark.skipif(not os.environ.get("SPARKANN_CAFFE"),
                    reason="SPARKANN_CAFFE does not name a Caffe build")
def test_caffe_time_runs_the_net_and_reports_each_layer(tmp_path, monkeypatch):
    binary = find_caffe(os.environ["SPARKANN_CAFFE"])
    glog_dir = tmp_path / "tmp"
    glog_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(glog_dir))  # where glog writes its log files by default
    paths = write_nets(tmp_path, {"A": [784, 64, 10]}, [32], mlp_spec)
    total, layers = caffe_time(binary, paths["A", 32], iterations=20, threads=1)
    assert set(layers) == {"data", "ip1", "sigmoid1", "ip2", "loss"}
    # the layers' times are in microseconds, the total in whole milliseconds over the iterations
    assert 0 < sum(f + b for f, b in layers.values()) <= total + 1 / 20
    assert list(glog_dir.iterdir()) == []  # the log went to stderr, not to files
