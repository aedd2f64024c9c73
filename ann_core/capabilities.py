"""What this CPU and the installed backends offer the engine: ``ann_core.capabilities()``."""
import os
import platform
import warnings

from ann_core import _onednn
from ann_core.threads import blas_threads

# The CPU flags (as Linux names them) that decide which kernels and GEMMs run.
FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16",
            "amx_tile", "amx_bf16")

_warned = set()


def cpu_features():
    """The flags of FEATURES that this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [name for name in FEATURES if name in flags]
    except OSError:
        pass
    return []


def bf16_support():
    """``(True, None)`` when bfloat16 GEMMs run natively here, else ``(False, reason)``.

    ``SPARKANN_BF16=off`` turns them off (what a CPU without bfloat16 does), so that the
    float32 fallback can be chosen on any machine.
    """
    if os.environ.get("SPARKANN_BF16", "auto").lower() in ("off", "0", "false", "no"):
        return False, "bfloat16 GEMMs are turned off (SPARKANN_BF16=off)"
    state = _onednn.load()
    if state["error"] is not None:
        return False, state["error"]
    if not _onednn.native_bf16(state["isa"]):
        return False, (f"this CPU has no native bfloat16 (AVX512_BF16 or AMX): oneDNN's ISA "
                       f"is {_onednn.isa_name(state['isa'])}")
    return True, None


def warn_bf16_fallback(reason):
    """Warn once per reason that bfloat16 networks compute in float32."""
    if reason in _warned:
        return
    _warned.add(reason)
    warnings.warn(f"dtype='bfloat16' computes in float32 here: {reason}", RuntimeWarning,
                  stacklevel=3)


def capabilities():
    """CPU features, BLAS backend and bfloat16 support, as a dict::

        {"cpu": {"machine", "features"}, "blas": {"backend", "library", "threads"},
         "onednn": {"library", "isa", "amx", "error"}, "bf16": {"native", "reason"}}
    """
    native, reason = bf16_support()
    state = _onednn.load()
    return {"cpu": {"machine": platform.machine(), "features": cpu_features()},
            "blas": blas_threads(),
            "onednn": {"library": state["library"], "isa": _onednn.isa_name(state["isa"]),
                       "amx": _onednn.uses_amx(state["isa"]), "error": state["error"]},
            "bf16": {"native": native, "reason": reason}}
