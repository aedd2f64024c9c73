"""Make the sparkann the driver runs importable on the executors too.

``spark-submit --py-files sparkann-*.whl`` puts the wheel on the driver's ``sys.path`` and
copies it to every executor, but PySpark adds only ``.zip``, ``.egg`` and ``.jar`` files to the
executors' ``sys.path``. When the driver imported sparkann from a wheel, ``ship_to_executors``
registers a ``.zip`` copy of it with ``SparkContext.addPyFile``; on the executors ann_core then
extracts its compiled modules to its cache (see ``ann_core._archive``).

Nothing happens when sparkann is installed normally (pip on every node, or ``--archives``).
"""
import os
import shutil
import tempfile
import zipimport

import sparkann
from ann_core import _archive

_shipped = set()  # (application id, archive) pairs already registered


def imported_from_archive():
    """The zip or wheel file sparkann was imported from, or None for an installed package."""
    loader = getattr(sparkann.__spec__, "loader", None)
    return loader.archive if isinstance(loader, zipimport.zipimporter) else None


def ship_to_executors(sc):
    """Register the wheel sparkann was imported from as a ``.zip`` executors can import.

    Idempotent and cheap: call it before any job whose tasks import sparkann.

    Parameters
    ----------
    sc : pyspark.SparkContext or None
        The active context; None in a Spark Connect session, whose client ships Python files
        with ``SparkSession.addArtifacts(..., pyfile=True)`` instead: nothing is done.

    Returns
    -------
    str or None
        The path of the registered ``.zip``, or None when nothing needed shipping.
    """
    archive = imported_from_archive()
    if sc is None or archive is None or archive.lower().endswith((".zip", ".egg", ".jar")):
        return None  # installed, or already on the executors' path via --py-files
    key = (sc.applicationId, archive)
    if key in _shipped:
        return None
    name = os.path.basename(archive)
    name = (name[:-4] if name.lower().endswith(".whl") else name) + ".zip"
    folder = os.path.join(_archive.cache_root(), "shipped")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, name)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    os.close(fd)
    shutil.copyfile(archive, tmp)
    os.replace(tmp, target)
    sc.addPyFile(target)
    _shipped.add(key)
    return target
