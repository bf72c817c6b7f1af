"""What ``--json`` prints: one JSON document whose floats carry 6 significant digits.

Measures are means over queries (ir-measures computes them in float64); a run over even 100,000
queries moves a mean by 1e-5 per query, so 6 significant digits keep every difference a paired test
can detect while dropping float noise such as ``0.6789000000000001``. p-values, timings and losses
get the same 6 digits. NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import json
import math
from typing import Any

DIGITS = 6

__all__ = ["DIGITS", "dumps", "rounded"]


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """``value`` with every float (in dicts, lists, tuples) rounded to ``digits`` significant digits."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) or type(value).__module__ == "numpy" and hasattr(value, "dtype") \
            and getattr(value.dtype, "kind", "") == "f":
        value = float(value)
        return None if not math.isfinite(value) else float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def dumps(value: Any, digits: int = DIGITS, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`rounded` ``value`` (``kwargs`` as json.dumps takes them)."""
    return json.dumps(rounded(value, digits), **kwargs)
