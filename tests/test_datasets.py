"""IDX reader and Fashion-MNIST loader."""
import gzip
import os
import tracemalloc

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


def _peak_bytes(fn):
    """``fn()``'s exception and the peak traced memory while it ran."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as error:
            fn()
        return error.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("compress", [True, False])
def test_header_claiming_less_than_the_data_is_refused_in_bounded_memory(tmp_path, compress):
    # a header claiming one 28x28 image in front of 32 MB: with gzip, 32 KB on disk
    header = bytes([0, 0, 0x08, 3]) + np.array([1, 28, 28], ">u4").tobytes()
    data = header + bytes(32 << 20)
    path = tmp_path / "bomb"
    path.write_bytes(gzip.compress(data, 9) if compress else data)
    error, peak = _peak_bytes(lambda: read_idx(path))
    assert "header says shape (1, 28, 28) (800 bytes) but the file holds more" in str(error)
    assert peak < 4 << 20, f"{peak} bytes traced reading a header of 800 bytes"


def test_header_claiming_more_than_the_data_is_refused_in_bounded_memory(tmp_path):
    dims = [2**32 - 1] * 3  # 7.9e28 bytes claimed, one image present
    header = bytes([0, 0, 0x08, 3]) + np.array(dims, ">u4").tobytes()
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(header + bytes(784)))
    error, peak = _peak_bytes(lambda: read_idx(path))
    claimed = 16 + (2**32 - 1) ** 3
    assert f"header says shape {tuple(dims)} ({claimed} bytes) but the file holds 800 bytes" \
        in str(error)
    assert peak < 4 << 20


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
