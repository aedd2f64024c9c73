"""Data readers: IDX files (the MNIST / Fashion-MNIST format) and Fashion-MNIST itself."""
import gzip
import os

import numpy as np

#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

# IDX type codes -> big-endian numpy dtypes
_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path):
    """Read an IDX file, gzipped or not.

    Returns
    -------
    ndarray of the file's shape and type (native byte order).

    Raises
    ------
    ValueError
        If the file is not IDX, or is shorter or longer than its header says.
    """
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        try:
            data = gzip.decompress(f.read()) if head == b"\x1f\x8b" else f.read()
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {data[:4].hex() or 'missing'})")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the "
                         f"file holds {len(data)} bytes")
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(directory, stem):
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz",
                 stem.replace("-idx", ".idx")):
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"no {stem}[.gz] in {directory}")


def fashion_mnist_dir(path=None):
    """The directory holding the Fashion-MNIST files: ``path``, else ``$SPARKANN_DATA``,
    else Debian's ``/usr/share/datasets/fashion-mnist``."""
    path = path or os.environ.get("SPARKANN_DATA") or DEBIAN_FASHION_MNIST
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Fashion-MNIST directory {path!r} does not exist: install Debian's "
            "dataset-fashion-mnist package or pass the directory holding "
            "train-images-idx3-ubyte.gz and friends")
    return path


def load_fashion_mnist(path=None, kind="train", dtype="float32"):
    """Fashion-MNIST images and labels.

    Parameters
    ----------
    path : str, optional
        Directory with the four IDX files (gzipped or not); by default
        :func:`fashion_mnist_dir` finds them.
    kind : {"train", "test"}
        60,000 training or 10,000 test examples.
    dtype : {"float32", "float64"}

    Returns
    -------
    X : ndarray (n, 784), pixels scaled to [0, 1]
    y : ndarray (n,), int64 class indices 0..9
    """
    if kind not in _FILES:
        raise ValueError(f"kind must be 'train' or 'test', received {kind!r}")
    directory = fashion_mnist_dir(path)
    images = read_idx(_find(directory, _FILES[kind][0]))
    labels = read_idx(_find(directory, _FILES[kind][1]))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {kind}: images of shape {images.shape} do not match "
                         f"labels of shape {labels.shape}")
    X = images.reshape(len(images), -1).astype(dtype) / np.asarray(255, dtype=dtype)
    return np.ascontiguousarray(X), labels.astype(np.int64)
