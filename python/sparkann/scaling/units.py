"""Rates and durations as people write them: ``'1Gbit'``, ``'125MB/s'``, ``'51G'``, ``'0.1ms'``."""
import re

_SI = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}
_NUMBER = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"


def _split(text, what, pattern):
    """``(value, regex match of the unit against pattern)``; a bare number has no unit."""
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(_NUMBER + r"([A-Za-z/]*)\s*", str(text))
        if match is None:
            raise ValueError(f"{what}: cannot read {text!r}; expected a number with a unit, "
                             f"e.g. {_EXAMPLES[what]}")
        value, unit = float(match.group(1)), match.group(2)
    found = re.fullmatch(pattern, unit)
    if found is None:
        raise ValueError(f"{what}: unknown unit {unit!r} in {text!r}; expected e.g. "
                         f"{_EXAMPLES[what]}")
    return value, found


def _positive(rate, text, what):
    if not rate > 0:
        raise ValueError(f"{what}: must be positive, received {text!r}")
    return rate


_SECONDS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "min": 60.0}
_EXAMPLES = {"bandwidth": "'1Gbit', '10GbE', '125MB/s'", "flops": "'51G', '2.5TFLOPS'",
             "duration": "'0.1ms', '50us', '2s'"}


def parse_bandwidth(text):
    """Bytes per second from a link speed.

    ``'1Gbit'``, ``'1Gbps'``, ``'10GbE'``, ``'100Mb/s'`` are bits per second; ``'125MB/s'``,
    ``'1GB'`` are bytes per second (SI prefixes, as network speeds are quoted). A bare number
    is bytes per second.
    """
    ethernet = text.replace("GbE", "Gbe").replace("MbE", "Mbe") if isinstance(text, str) else text
    value, match = _split(ethernet, "bandwidth", r"([kKmMgGtT]?)(bit|bits|bps|b|be|B|Bps|)(/s)?")
    prefix, base = match.group(1).lower(), match.group(2)
    bits = base in ("bit", "bits", "bps", "b", "be")
    if base == "" and prefix:
        raise ValueError(f"bandwidth: {text!r} has a prefix but no unit; write "
                         f"'{match.group(1)}bit' or '{match.group(1)}B/s'")
    return _positive(value * _SI[prefix] / (8.0 if bits else 1.0), text, "bandwidth")


def parse_flops(text):
    """FLOP per second from ``'51G'``, ``'51GFLOPS'``, ``'2.5T'`` or a bare number."""
    value, match = _split(text, "flops", r"([kKmMgGtTpP]?)(flops|flop/s|FLOPS|FLOP/s|)")
    return _positive(value * _SI[match.group(1).lower()], text, "flops")


def parse_duration(text):
    """Seconds from ``'0.1ms'``, ``'50us'``, ``'2s'``, ``'1min'`` or a bare number of seconds."""
    value, match = _split(text, "duration", "|".join(_SECONDS))
    scale = _SECONDS[match.group(0)]
    if value < 0:
        raise ValueError(f"duration: must be >= 0, received {text!r}")
    return value * scale
