"""Data readers: IDX files (the MNIST / Fashion-MNIST format) and Fashion-MNIST itself."""
import gzip
import math
import os
import zlib

import numpy as np

#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

# IDX type codes -> big-endian numpy dtypes
_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_CHUNK = 1 << 20  # bytes read at a time

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path):
    """Read an IDX file, gzipped or not.

    The header is read first and the data streamed after it, so memory never exceeds the
    size the header declares (a small ``.gz`` that inflates to gigabytes behind a header
    claiming one image is refused after reading one image's worth).

    Returns
    -------
    ndarray of the file's shape and type (native byte order).

    Raises
    ------
    ValueError
        If the file is not IDX, or is shorter or longer than its header says.
    """
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if not compressed:
            return _read_idx_stream(raw, path)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_idx_stream(stream, path)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from None


def _read_upto(stream, n):
    """Up to ``n`` bytes of ``stream`` (fewer at its end), read in bounded chunks."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _read_idx_stream(stream, path):
    magic = _read_upto(stream, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {magic.hex() or 'missing'})")
    dtype, ndim = _IDX_TYPES[magic[2]], magic[3]
    header = 4 + 4 * ndim
    dims = _read_upto(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({4 + len(dims)} bytes, expected "
                         f"{header})")
    shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    n_bytes = math.prod(shape) * dtype.itemsize  # a Python int: no overflow
    expected = header + n_bytes
    data = _read_upto(stream, n_bytes)
    if len(data) < n_bytes:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the "
                         f"file holds {header + len(data)} bytes")
    if stream.read(1):
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the "
                         f"file holds more")
    array = np.frombuffer(data, dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


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
