"""Load ann_core's compiled modules when the package is imported from inside an archive.

``spark-submit --py-files sparkann-*.whl`` (or a ``.zip``) puts the archive itself on
``sys.path``. Python imports pure-Python modules from a zip but cannot load a compiled
extension from one, so the compiled modules built for this interpreter are copied once to a
per-user cache directory and loaded from there.

The cache directory is ``$SPARKANN_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/sparkann``
(``~/.cache/sparkann``), else ``<tmp>/sparkann-<uid>`` when the home directory is not
writable (as for some YARN users). Each set of modules lives in a folder named by the hash of
its content, so different wheels never mix, and every file is written to a temporary name
then renamed, so concurrent executors on one node never see a half-written module.
"""
import hashlib
import importlib.machinery
import os
import sys
import sysconfig
import tempfile
import zipfile
import zipimport

CACHE_ENV = "SPARKANN_CACHE_DIR"
COMPILED_MODULES = ("_blas", "_onednn", "_network")


def use_extracted_modules(spec, package_path):
    """When ``spec`` says the package comes from a zip archive, make its compiled modules
    importable: extract them to the cache and put that folder first on ``package_path``.

    Does nothing for a package imported from an ordinary directory.

    Raises
    ------
    ImportError
        When the archive has no compiled module built for this interpreter and platform,
        or the cache directory cannot be written.
    """
    if not isinstance(getattr(spec, "loader", None), zipimport.zipimporter):
        return None
    archive = spec.loader.archive
    # origin is "<archive>/<inner folders>/ann_core/__init__.py"
    inner = os.path.dirname(spec.origin[len(archive) + 1:]).replace(os.sep, "/")
    with zipfile.ZipFile(archive) as zf:
        members = _compiled_members(zf, archive, inner)
        blobs = {name: zf.read(member) for name, member in members.items()}
    digest = hashlib.sha256()
    for name in sorted(blobs):
        digest.update(members[name].encode() + b"\0" + blobs[name])
    folder = os.path.join(cache_root(), "ann_core-" + digest.hexdigest()[:20])
    try:
        os.makedirs(folder, exist_ok=True)
        for name, data in blobs.items():
            _write_atomically(os.path.join(folder, members[name].rsplit("/", 1)[-1]), data)
    except OSError as exc:
        raise ImportError(f"sparkann cannot extract its compiled modules from {archive} to "
                          f"{folder}: {exc}. Set {CACHE_ENV} to a writable local directory."
                          ) from exc
    package_path.insert(0, folder)
    return folder


def cache_root():
    """The folder under which extracted modules are kept (see the module docstring)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidate = os.path.join(base, "sparkann")
    try:
        os.makedirs(candidate, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    return os.path.join(tempfile.gettempdir(), f"sparkann-{os.getuid()}")


def interpreter_description():
    """This interpreter and platform, as needed to choose a wheel."""
    impl = sys.implementation
    return (f"Python {sys.version.split()[0]} ({impl.name}, cache tag {impl.cache_tag}) on "
            f"{sysconfig.get_platform()}; compiled modules must end in one of "
            f"{', '.join(importlib.machinery.EXTENSION_SUFFIXES)}")


def _compiled_members(zf, archive, inner):
    """Map each compiled module name to its member in the archive, for this interpreter."""
    names = set(zf.namelist())
    found, missing = {}, []
    for module in COMPILED_MODULES:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            member = f"{inner}/{module}{suffix}"
            if member in names:
                found[module] = member
                break
        else:
            missing.append(module)
    if missing:
        present = sorted(n for n in names if n.startswith(inner + "/")
                         and n.endswith((".so", ".pyd", ".dylib")))
        raise ImportError(
            f"sparkann cannot load ann_core.{', ann_core.'.join(missing)} from {archive}: the "
            f"archive holds no compiled module built for this interpreter, "
            f"{interpreter_description()}. The archive holds "
            f"{', '.join(present) if present else 'no compiled modules at all'}"
            f"{_wheel_tags(zf)}. Build the wheel for the executors' Python and platform "
            f"(pip wheel . on such a machine) or install sparkann on every node.")
    return found


def _wheel_tags(zf):
    """' (wheel tags ...)' from the archive's dist-info/WHEEL, or '' when there is none."""
    for name in zf.namelist():
        if name.endswith(".dist-info/WHEEL"):
            tags = [line.split(":", 1)[1].strip()
                    for line in zf.read(name).decode("utf-8", "replace").splitlines()
                    if line.startswith("Tag:")]
            if tags:
                return f" (wheel built for {', '.join(tags)})"
    return ""


def _write_atomically(path, data):
    """Write ``data`` to ``path`` unless an identical file is already there."""
    try:
        with open(path, "rb") as existing:
            if existing.read() == data:
                return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
