"""Arrays and records as JavaScript data files a ``file://`` page can load with a ``<script>`` tag.

Chromium refuses ``fetch()`` of local files, so every data file is a script that hands its content
to the page: ``BNCL.put("key", {...});``. Large numeric arrays travel as base64 of their
little-endian bytes, with the dtype and shape beside them (``{"dtype": "u8", "shape": [N, D],
"data": "..."}``), which the page turns back into a typed array without parsing numbers; features
and probabilities are quantised to one byte per entry with a scale (value = code · scale), which
keeps exact zeros exact.
"""
from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np

DTYPES = {"u8": "<u1", "i8": "<i1", "u16": "<u2", "i32": "<i4", "u32": "<u4", "f32": "<f4"}
"""Names the page knows (``app.js``: ``TYPED``) -> numpy dtype, little-endian."""


def pack_array(values: Any, dtype: str, scale: float | None = None) -> dict[str, Any]:
    """A typed array as ``{"dtype", "shape", "data"[, "scale"]}``; ``values`` must already fit ``dtype``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    array = np.ascontiguousarray(np.asarray(values), dtype=DTYPES[dtype])
    packed = {"dtype": dtype, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}
    if scale is not None:
        packed["scale"] = float(scale)
    return packed


def unpack_array(packed: dict[str, Any]) -> np.ndarray:
    """The inverse of :func:`pack_array` (quantised codes times ``scale`` when there is one)."""
    array = np.frombuffer(base64.b64decode(packed["data"]), dtype=DTYPES[packed["dtype"]]).reshape(packed["shape"])
    return array * packed["scale"] if "scale" in packed else array.copy()


def quantize(values: Any) -> dict[str, Any]:
    """Real values as one byte each: ``u8`` codes 0..255 of [0, max] when no value is negative,
    otherwise ``i8`` codes −127..127 of [−max|v|, max|v|]. Zero stays exactly zero; the error of
    any entry is at most scale / 2."""
    array = np.asarray(values, dtype=np.float64)
    peak = float(np.abs(array).max()) if array.size else 0.0
    signed = bool(array.size) and float(array.min()) < 0
    levels = 127 if signed else 255
    scale = peak / levels if peak > 0 else 1.0
    codes = np.clip(np.rint(array / scale), -levels if signed else 0, levels)
    return pack_array(codes, "i8" if signed else "u8", scale)


def pack_bits(flags: Any) -> dict[str, Any]:
    """Booleans [..., D] as bits, row by row (``np.packbits`` along the last axis, big bit order)."""
    array = np.asarray(flags, dtype=bool)
    packed = pack_array(np.packbits(array, axis=-1), "u8")
    packed["bits"] = int(array.shape[-1])
    return packed


def json_ready(value: Any, digits: int = 5) -> Any:
    """numpy scalars and arrays -> Python values, floats rounded to ``digits`` significant digits,
    nan/inf -> None (strict JSON), recursively."""
    if isinstance(value, dict):
        return {str(key): json_ready(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item, digits) for item in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist(), digits)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}")
    return value


def data_script(key: str, content: Any) -> str:
    """The text of a data file: one call that hands ``content`` (JSON-ready) to the page under ``key``."""
    body = json.dumps(json_ready(content), separators=(",", ":"), allow_nan=False)
    return f"BNCL.put({json.dumps(key)},{body});\n"
