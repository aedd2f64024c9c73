"""Training checkpoints: JSON + ``.npz``, written atomically, read without pickle.

A checkpoint directory holds ``checkpoint.json`` and one ``state-<iteration>.npz``. The
arrays (weights, optimizer moments...) go to a temporary file that is then renamed
(``os.replace``) to its final name; ``checkpoint.json``, which names that file and its
SHA-256, is written the same way afterwards. The rename of ``checkpoint.json`` is the commit:
a process killed at any moment leaves either the previous checkpoint or the new one, never a
half-written one. Older state files are removed only after the commit.

``checkpoint.json`` also holds a fingerprint of what was being trained (topology, training
parameters, data): :func:`load` refuses a checkpoint whose fingerprint differs, so a run can
never resume from another run's state. Its last field, ``record_sha256``, is the SHA-256 of
the rest of the record (canonical JSON), so an edit of ``checkpoint.json`` itself is refused
too. Everything is read with ``json`` and ``numpy.load(allow_pickle=False)``: a checkpoint
cannot run code.
"""
import glob
import hashlib
import json
import os

import numpy as np

FORMAT = "sparkann-checkpoint"
VERSION = 2  # 1: checkpoint.json had no digest of its own
META_FILE = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, of another format version, or from another run."""


def fingerprint(description):
    """SHA-256 of a JSON-serialisable description (keys sorted): what a checkpoint belongs to."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def record_digest(record):
    """SHA-256 of a checkpoint record without its ``record_sha256`` (canonical JSON)."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return fingerprint(json.loads(json.dumps(body, allow_nan=True)))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomically(path, write):
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save(directory, iteration, arrays, meta, fp):
    """Write a checkpoint of ``iteration`` into ``directory`` (created if missing).

    Parameters
    ----------
    directory : str
    iteration : int
        Completed iterations.
    arrays : dict of str -> ndarray
        Numeric arrays only (object arrays cannot be saved without pickle).
    meta : dict
        JSON-serialisable state (objective history, solver, counters...).
    fp : str
        The run's :func:`fingerprint`.
    """
    os.makedirs(directory, exist_ok=True)
    state_name = f"state-{int(iteration):08d}.npz"
    state_path = os.path.join(directory, state_name)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrays.items():
        if v.dtype.hasobject:
            raise ValueError(f"checkpoint array {k!r} has dtype {v.dtype}; only numbers can be "
                             "saved")
    _write_atomically(state_path, lambda f: np.savez(f, **arrays))
    record = {"format": FORMAT, "version": VERSION, "iteration": int(iteration),
              "fingerprint": fp, "state_file": state_name, "state_sha256": _sha256(state_path),
              "meta": meta}
    record["record_sha256"] = record_digest(record)
    data = json.dumps(record, indent=1, allow_nan=True).encode()
    _write_atomically(os.path.join(directory, META_FILE), lambda f: f.write(data))
    for old in glob.glob(os.path.join(directory, "state-*.npz")):
        if os.path.basename(old) != state_name:
            os.remove(old)


_FIELDS = {"iteration": int, "fingerprint": str, "state_file": str, "state_sha256": str,
           "meta": dict}
_KINDS = {int: "an integer", str: "a string", dict: "a JSON object"}


def _check_fields(meta_path, record):
    missing = set(_FIELDS) - set(record)
    if missing:
        raise CheckpointError(f"{meta_path}: missing fields {sorted(missing)}")
    for name, kind in _FIELDS.items():
        value = record[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{meta_path}: {name!r} is {value!r}, expected "
                                  f"{_KINDS[kind]}")
    if record["iteration"] < 0:
        raise CheckpointError(f"{meta_path}: 'iteration' is {record['iteration']}, expected "
                              "a count >= 0")


def load(directory, fp):
    """The checkpoint in ``directory``: ``(iteration, arrays, meta)``, or None if there is none.

    Raises
    ------
    CheckpointError
        If ``checkpoint.json`` or the state file is unreadable, truncated or altered, of
        another format version, or if its fingerprint is not ``fp`` (another topology,
        other training parameters or other data).
    """
    meta_path = os.path.join(directory, META_FILE)
    if not os.path.exists(meta_path):
        return None
    try:
        with open(meta_path, "rb") as f:
            record = json.loads(f.read().decode())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON (truncated or corrupt): "
                              f"{str(e)[:200]}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a sparkann checkpoint")
    if record.get("version") != VERSION:
        older = (" (written by an older sparkann; use an empty checkpoint directory for a new "
                 "run)" if record.get("version") == 1 else "")
        raise CheckpointError(f"{meta_path}: checkpoint format version "
                              f"{record.get('version')!r} is not supported; this sparkann "
                              f"reads version {VERSION}{older}")
    if record.get("record_sha256") != record_digest(record):
        raise CheckpointError(f"{meta_path}: its contents do not match the SHA-256 recorded in "
                              "it (edited or corrupt)")
    _check_fields(meta_path, record)
    if record["fingerprint"] != fp:
        raise CheckpointError(
            f"{meta_path}: the checkpoint belongs to another training run (its fingerprint "
            f"{record['fingerprint'][:12]}... differs from this run's {fp[:12]}...: "
            "another topology, other training parameters or other data); refusing to resume "
            "from it. Use an empty checkpoint directory for a new run.")
    name = record["state_file"]
    if os.path.basename(name) != name or not name.endswith(".npz"):
        raise CheckpointError(f"{meta_path}: invalid state file name {name!r}")
    state_path = os.path.join(directory, name)
    if not os.path.exists(state_path):
        raise CheckpointError(f"{state_path} is missing")
    if _sha256(state_path) != record["state_sha256"]:
        raise CheckpointError(f"{state_path}: contents do not match the SHA-256 recorded in "
                              f"{META_FILE} (corrupt or altered)")
    try:
        with np.load(state_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as e:
        raise CheckpointError(f"{state_path}: unreadable ({e})") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError
        raise CheckpointError(f"{state_path}: truncated or corrupt ({type(e).__name__}: {e})"
                              ) from None
    return record["iteration"], arrays, record["meta"]
