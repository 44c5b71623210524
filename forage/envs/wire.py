"""The frames of the env server's WebSocket: msgpack (binary frames) when installed, else JSON (text frames).

Both ends accept both kinds; a reply goes in the kind of the client's last frame. Values JSON cannot
hold natively (NumPy scalars and arrays, sets, dataclasses) are converted, anything else becomes ``str``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

try:
    import msgpack
except ImportError:  # JSON text frames only
    msgpack = None

__all__ = ["HAVE_MSGPACK", "encode", "decode", "dumps", "to_jsonable"]

HAVE_MSGPACK = msgpack is not None


def to_jsonable(obj: Any) -> Any:
    """A JSON-friendly copy of ``obj`` (NumPy scalars/arrays, tuples, sets; anything else as ``str``)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return to_jsonable(dataclasses.asdict(obj))
    return str(obj)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return dataclasses.asdict(obj)
    return str(obj)


def dumps(data: Any) -> str:
    """``data`` as JSON text, converting what JSON cannot hold."""
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=True, default=_default)
    except (TypeError, ValueError):   # keys that are not str/int/float/bool/None, or a cycle
        return json.dumps(to_jsonable(data), ensure_ascii=False, allow_nan=True)


def encode(data: Any, binary: bool) -> bytes | str:
    """One frame: msgpack bytes when ``binary`` (and msgpack is installed), else JSON text."""
    if binary and msgpack is not None:
        try:
            return msgpack.packb(data, default=_default)
        except (TypeError, ValueError, OverflowError):   # e.g. an int over 64 bits: JSON holds it
            pass
    return dumps(data)


def decode(frame: bytes | str) -> Any:
    """A frame's value (bytes: msgpack, str: JSON); raises ValueError when it cannot be read."""
    if isinstance(frame, str):
        return json.loads(frame)
    if msgpack is None:
        raise ValueError("a binary (msgpack) frame, but msgpack is not installed here")
    try:
        return msgpack.unpackb(frame, strict_map_key=False)
    except Exception as e:  # msgpack raises several kinds for garbage
        raise ValueError(f"the binary frame is not msgpack ({type(e).__name__}: {e})") from e
