"""Plain values as tagged JSON: the only thing that crosses between a solution's sandbox and its grader.

Stdlib only, with no imports at module level besides ``json`` and ``math``: the same source runs inside
the sandbox (shipped as text) and on the host. Encodable: None, bool, int, float (nan and inf too),
str, and list, tuple, dict, set, frozenset of those. Decoding builds only these builtin types, so
nothing the other side sends can carry behaviour (an ``__eq__`` that always says True cannot cross).
"""

import json

MAX_DEPTH = 64
MAX_INT_HEX_DIGITS = 100_000


class WireError(ValueError):
    """A value that cannot be sent, or a message that is not a well-formed tagged value."""


def _enc(v, depth):
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if v is None:
        return ["none"]
    if isinstance(v, bool):
        return ["bool", bool(v)]
    if isinstance(v, int):
        return ["int", format(int.__index__(v), "x")]
    if isinstance(v, float):
        return ["float", float.__repr__(v)]
    if isinstance(v, str):
        return ["str", str.__str__(v)]
    if isinstance(v, (list, tuple, set, frozenset)):
        tag = "list" if isinstance(v, list) else "tuple" if isinstance(v, tuple) else \
            "set" if isinstance(v, set) else "frozenset"
        return [tag, [_enc(x, depth + 1) for x in list(v)]]
    if isinstance(v, dict):
        return ["dict", [[_enc(k, depth + 1), _enc(x, depth + 1)] for k, x in list(dict.items(v))]]
    raise WireError("cannot send a value of type " + type(v).__name__)


def encode(value):
    """``value`` as an ASCII JSON string of tagged plain values (WireError for anything else)."""
    return json.dumps(_enc(value, 0), ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")


_FLOAT_CHARS = set("0123456789.e+-naif")


def _dec(j, depth):
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if type(j) is not list or not j or type(j[0]) is not str:
        raise WireError("not a tagged value")
    tag = j[0]
    if tag == "none" and len(j) == 1:
        return None
    if len(j) != 2:
        raise WireError("malformed " + tag[:20])
    body = j[1]
    if tag == "bool" and type(body) is bool:
        return body
    if tag == "int" and type(body) is str and 0 < len(body) <= MAX_INT_HEX_DIGITS:
        return int(body, 16)
    if tag == "float" and type(body) is str and 0 < len(body) <= 32 and set(body) <= _FLOAT_CHARS:
        return float(body)
    if tag == "str" and type(body) is str:
        return body
    if tag in ("list", "tuple", "set", "frozenset") and type(body) is list:
        items = [_dec(x, depth + 1) for x in body]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict" and type(body) is list:
        out = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise WireError("malformed dict item")
            out[_dec(pair[0], depth + 1)] = _dec(pair[1], depth + 1)
        return out
    raise WireError("malformed " + tag[:20])


def decode(text):
    """The plain value that :func:`encode` wrote (WireError when ``text`` is not one)."""
    try:
        j = json.loads(text)
        return _dec(j, 0)
    except WireError:
        raise
    except (ValueError, TypeError, RecursionError) as e:  # bad JSON, unhashable dict key, bad number
        raise WireError(type(e).__name__ + ": " + str(e)[:200]) from None

