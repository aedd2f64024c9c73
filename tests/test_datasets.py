"""IDX reader and Fashion-MNIST loader."""
import gzip
import os

import numpy as np
import pytest

from sparkann.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist, read_idx


def write_idx(path, array, code=0x08, compress=False):
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype, code", [(np.uint8, 0x08), (np.int32, 0x0C), (np.float64, 0x0E)])
def test_read_idx_round_trip(tmp_path, compress, dtype, code):
    a = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    write_idx(tmp_path / "a.idx", a, code, compress)
    b = read_idx(tmp_path / "a.idx")
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 4)
    np.testing.assert_array_equal(a, b)


def test_read_idx_rejects_bad_files(tmp_path):
    a = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "ok", a)
    raw = (tmp_path / "ok").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "gz").write_bytes(gzip.compress(raw)[:-8])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(tmp_path / "gz")


def test_load_from_a_given_directory(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([0, 9, 3, 3, 1], np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, compress=True)
    X, y = load_fashion_mnist(tmp_path, kind="test", dtype="float64")
    assert X.shape == (5, 784) and X.dtype == np.float64 and X.flags.c_contiguous
    np.testing.assert_allclose(X[1], images[1].ravel() / 255)
    assert y.dtype == np.int64 and y.tolist() == [0, 9, 3, 3, 1]
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_fashion_mnist(tmp_path, kind="train")
    with pytest.raises(ValueError, match="kind"):
        load_fashion_mnist(tmp_path, kind="validation")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_fashion_mnist(tmp_path / "missing")


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST), reason="dataset-fashion-mnist")
def test_debian_fashion_mnist_found_by_default():
    X, y = load_fashion_mnist(kind="test")
    assert X.shape == (10000, 784) and X.dtype == np.float32
    assert 0 <= X.min() and X.max() == 1.0
    assert np.bincount(y).tolist() == [1000] * 10
