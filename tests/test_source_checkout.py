"""Python started in a source checkout whose engine is not compiled says, in one line, how to
build it (instead of "No module named 'ann_core._blas'")."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _unbuilt_checkout(folder):
    """The checkout's ann_core/ sources, without any compiled module, under ``folder``."""
    os.makedirs(folder / "ann_core")
    for name in os.listdir(os.path.join(ROOT, "ann_core")):
        if name.endswith((".py", ".pyx", ".pxd")):
            shutil.copy(os.path.join(ROOT, "ann_core", name), folder / "ann_core")
    return folder


def _python_in(folder, code):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)


def test_unbuilt_checkout_says_how_to_build(tmp_path):
    checkout = _unbuilt_checkout(tmp_path)
    assert _python_in(checkout, "import sparkann").returncode == 0   # the engine loads lazily
    run = _python_in(checkout, "import sparkann; sparkann.Topology.from_sizes([2, 3, 2])"
                               ".network(dtype='float64', block_size=1)")
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last == (f"ImportError: sparkann's native engine is not built in the source "
                    f"checkout {checkout}: run `pip install -e .` there to compile it in place, "
                    f"or start Python outside that folder to use an installed sparkann")
    assert "ann_core._blas" not in run.stderr    # the cause is said, not the missing module


def test_other_missing_modules_are_not_reworded(tmp_path):
    # A module that ann_core needs and lacks (here: its threads helper) keeps its own error.
    import ann_core                  # the built engine this test runs with
    checkout = _unbuilt_checkout(tmp_path)
    built = ann_core.__path__[0]
    for name in os.listdir(built):
        if name.endswith((".so", ".pyd")):   # a built checkout: the compiled modules import
            shutil.copy(os.path.join(built, name), checkout / "ann_core")
    os.remove(checkout / "ann_core" / "threads.py")
    run = _python_in(checkout, "import ann_core")
    assert "No module named 'ann_core.threads'" in run.stderr
    assert "pip install -e ." not in run.stderr
