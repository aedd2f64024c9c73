"""Build of the native engine: csrc/ (C99) compiled into the Cython modules of ann_core."""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

CSRC = ["csrc/ann_arena.c", "csrc/ann_kernels.c", "csrc/ann_optim.c", "csrc/ann_bf16.c"]
# Headers too: a change to one must rebuild the module (ann_kernels_impl.h holds the kernels).
HEADERS = sorted(glob.glob("csrc/*.h") + glob.glob("ann_core/*.pxi"))
# Portable by default; SPARKANN_NATIVE=1 builds for this machine's CPU only.
# -fno-math-errno: nothing reads errno, and the chance that sqrt sets it keeps a loop that calls
# sqrt from vectorising (the Adam step); no function's value changes.
FLAGS = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno", "-std=c99"]
if os.environ.get("SPARKANN_NATIVE") == "1":
    FLAGS.append("-march=native")

# The largest module first: the modules compile side by side (one per core), so a build
# takes about as long as _network alone rather than the three in a row.
extensions = [
    Extension("ann_core._network", ["ann_core/_network.pyx"] + CSRC, include_dirs=["csrc"],
              extra_compile_args=FLAGS, depends=HEADERS),
    Extension("ann_core._blas", ["ann_core/_blas.pyx"], extra_compile_args=FLAGS),
    Extension("ann_core._onednn", ["ann_core/_onednn.pyx", "csrc/ann_dnnl.c"],
              include_dirs=["csrc"], extra_compile_args=FLAGS, depends=HEADERS),
]

setup(ext_modules=cythonize(extensions, language_level=3),
      options={"build_ext": {"parallel": os.cpu_count() or 1}})
