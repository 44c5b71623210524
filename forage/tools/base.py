"""The Tool abstraction: a named, JSON-schema-described, (async) callable."""

from __future__ import annotations

import asyncio
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Union, get_args, get_origin

import jsonschema

__all__ = [
    "Tool",
    "ToolCall",
    "ToolResult",
    "ToolError",
    "tool",
    "schema_from_function",
    "flat_schema_check",
]


class ToolError(Exception):
    """Raised by a tool to report a failure the agent should read (not a crash)."""


@dataclass
class ToolCall:
    """One parsed tool call: the tool's name, its arguments, and the text it came from."""

    name: str
    arguments: dict[str, Any]
    id: str = ""
    raw: str = ""

    def to_openai(self) -> dict[str, Any]:
        """This call as an OpenAI ``tool_calls`` entry."""
        import json

        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass
class ToolResult:
    """What a tool call gave back: text for the model, and an error kind when it failed."""

    content: str
    error: str | None = None
    name: str = ""
    call_id: str = ""
    truncated: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the call succeeded."""
        return self.error is None


ToolFn = Callable[..., Any]


class Tool:
    """A tool an agent can call: name, description, JSON-schema parameters and an async call.

    Subclass and override :meth:`run`, or build one from a typed function with :func:`tool`.
    ``terminal`` tools (``answer``, ``submit``) end the episode. ``concurrent`` tools may run
    in parallel with the other calls of the same turn.
    """

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    terminal: bool = False
    concurrent: bool = True
    timeout: float | None = 30.0

    def __init__(
        self,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
        fn: ToolFn | None = None,
        *,
        terminal: bool | None = None,
        concurrent: bool | None = None,
        timeout: float | None | Literal["default"] = "default",
        episode_arg: str | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        if description is not None:
            self.description = description
        if parameters is not None:
            self.parameters = parameters
        if terminal is not None:
            self.terminal = terminal
        if concurrent is not None:
            self.concurrent = concurrent
        if timeout != "default":
            self.timeout = timeout  # type: ignore[assignment]
        self._fn = fn
        self._episode_arg = episode_arg
        # A plain function cannot be interrupted by a timeout anyway: call it inline, without
        # the cost of a task and an event-loop round trip per call.
        self._inline = (fn is not None and not inspect.iscoroutinefunction(fn)
                        and type(self).run is Tool.run and type(self).acall is Tool.acall)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", self.name or ""):
            raise ValueError(f"invalid tool name {self.name!r}: use letters, digits, '_', '-', '.'")
        self._validator = jsonschema.Draft202012Validator(self.parameters)
        self._surely_valid = flat_schema_check(self.parameters)

    # -- description ---------------------------------------------------------------------
    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool schema (``{"type": "function", "function": {...}}``)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    @property
    def inline(self) -> bool:
        """True when a call runs the plain function inline (no task, so no timeout either)."""
        return self._inline

    @property
    def required(self) -> list[str]:
        """Names of the required parameters."""
        return list(self.parameters.get("required", []))

    @property
    def properties(self) -> dict[str, Any]:
        """The parameter schemas by name."""
        return dict(self.parameters.get("properties", {}))

    def validate(self, arguments: Any) -> str | None:
        """Return a readable message if ``arguments`` do not fit the schema, else None."""
        if not isinstance(arguments, dict):
            return f"arguments must be a JSON object, got {type(arguments).__name__}"
        if self._surely_valid is not None and self._surely_valid(arguments):
            return None
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        if not errors:
            return None
        msgs = []
        for err in errors[:3]:
            where = ".".join(str(p) for p in err.path)
            msg = err.message if len(err.message) < 200 else err.message[:200] + "..."
            msgs.append(f"{where}: {msg}" if where else msg)
        return "; ".join(msgs)

    # -- calling -------------------------------------------------------------------------
    async def run(self, episode: Any = None, **arguments: Any) -> Any:
        """Do the work. Return a str (or anything str()-able) or a ToolResult; raise ToolError."""
        if self._fn is None:
            raise NotImplementedError(f"tool {self.name!r} has no implementation")
        kwargs = dict(arguments)
        if self._episode_arg:
            kwargs[self._episode_arg] = episode
        out = self._fn(**kwargs)
        if inspect.isawaitable(out):
            out = await out
        return out

    async def acall(self, arguments: dict[str, Any], episode: Any = None) -> ToolResult:
        """Validate and run a call; every failure becomes an error ToolResult."""
        if self._inline:
            return self.call_inline(arguments, episode)
        problem = self.validate(arguments)
        if problem is not None:
            return self._invalid(problem)
        try:
            coro: Awaitable[Any] = self.run(episode, **arguments)
            if self.timeout:
                # in the caller's task (asyncio.wait_for would run each call as a task of its own: more loop rounds)
                async with asyncio.timeout(self.timeout):
                    out = await coro
            else:
                out = await coro
        except asyncio.TimeoutError:
            return ToolResult(f"Error: {self.name} timed out after {self.timeout:g} s", error="timeout", name=self.name)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return self._failure(e)
        return self._as_result(out)

    def call_inline(self, arguments: dict[str, Any], episode: Any = None) -> ToolResult:
        """:meth:`acall` for a plain-function tool (``inline``), run in the caller's thread without a loop."""
        if not self._inline:
            raise TypeError(f"tool {self.name!r} is not a plain function; await acall()")
        problem = self.validate(arguments)
        if problem is not None:
            return self._invalid(problem)
        kwargs = dict(arguments)
        if self._episode_arg:
            kwargs[self._episode_arg] = episode
        try:
            out = self._fn(**kwargs)  # type: ignore[misc]
        except Exception as e:
            return self._failure(e)
        return self._as_result(out)

    def _invalid(self, problem: str) -> ToolResult:
        return ToolResult(f"Error: invalid arguments for {self.name}: {problem}", error="invalid_arguments", name=self.name)

    def _failure(self, e: Exception) -> ToolResult:
        """A raised ToolError is the tool's message; anything else is a bug in the tool, which must not crash the episode."""
        if isinstance(e, ToolError):
            return ToolResult(f"Error: {e}", error="tool_error", name=self.name)
        return ToolResult(f"Error: {self.name} failed: {type(e).__name__}: {e}", error="exception", name=self.name)

    def _as_result(self, out: Any) -> ToolResult:
        if isinstance(out, ToolResult):
            out.name = out.name or self.name
            return out
        return ToolResult("" if out is None else str(out), name=self.name)

    def __call__(self, **arguments: Any) -> ToolResult:
        """Call synchronously (for notebooks and tests)."""
        return asyncio.run(self.acall(arguments))

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


# -- fast validation ---------------------------------------------------------------------

_EXACT_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) is int or type(v) is float,
    "boolean": lambda v: type(v) is bool,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "null": lambda v: v is None,
}
_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment", "deprecated"})
_FLAT_KEYS = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"}


def flat_schema_check(schema: Any) -> Callable[[dict[str, Any]], bool] | None:
    """A quick yes-test for flat object schemas (typed properties, required, additionalProperties).

    The test answers True only for arguments the schema surely accepts; False means "ask the full
    validator" (which also writes the message). None: the schema uses keywords it does not know.
    """
    if not isinstance(schema, dict) or not set(schema) <= _FLAT_KEYS or schema.get("type", "object") != "object":
        return None
    props, required, extra = schema.get("properties", {}), schema.get("required", []), schema.get("additionalProperties", True)
    if not isinstance(props, dict) or not isinstance(required, list) or type(extra) is not bool:
        return None
    if not all(isinstance(r, str) for r in required):
        return None
    checks: dict[str, Callable[[Any], bool] | None] = {}
    for pname, prop in props.items():
        if not isinstance(prop, dict) or not set(prop) <= _ANNOTATIONS | {"type"}:
            return None
        kind = prop.get("type")
        if kind is not None and not (isinstance(kind, str) and kind in _EXACT_TYPES):
            return None
        checks[pname] = _EXACT_TYPES[kind] if kind is not None else None
    need = tuple(dict.fromkeys(required))

    def surely_valid(arguments: dict[str, Any]) -> bool:
        for r in need:
            if r not in arguments:
                return False
        for key, value in arguments.items():
            if key in checks:
                check = checks[key]
                if check is not None and not check(value):
                    return False
            elif not extra:
                return False
        return True

    return surely_valid


# -- schema derivation ---------------------------------------------------------------------

_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    dict: {"type": "object"},
    list: {"type": "array"},
    Any: {},
}


def _json_type(tp: Any) -> dict[str, Any]:
    if tp in _PRIMITIVES:
        return dict(_PRIMITIVES[tp])
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, typing.List, tuple, set, frozenset):
        return {"type": "array", "items": _json_type(args[0])} if args else {"type": "array"}
    if origin in (dict, typing.Dict):
        return {"type": "object"}
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _json_type(non_none[0])
        return {"anyOf": [_json_type(a) for a in non_none]}
    return {}


def _param_docs(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (summary, {param: description})."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section = None
    current = None
    for line in lines:
        stripped = line.strip()
        if re.fullmatch(r"(Args|Arguments|Parameters):", stripped):
            section = "args"
            continue
        if re.fullmatch(r"[A-Z][a-z]+:", stripped):
            section = "other"
            continue
        if section is None:
            summary.append(stripped)
        elif section == "args":
            m = re.match(r"(\w+)\s*(\([^)]*\))?\s*:\s*(.*)", stripped)
            if m and line.startswith((" ", "\t")) and not line.startswith("        "):
                current = m.group(1)
                params[current] = m.group(3)
            elif m and current is None:
                current = m.group(1)
                params[current] = m.group(3)
            elif current and stripped:
                params[current] += " " + stripped
    return " ".join(s for s in summary if s).strip(), params


def schema_from_function(fn: ToolFn, skip: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """Derive (description, JSON-schema parameters) from a typed function and its docstring."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    summary, docs = _param_docs(fn.__doc__ or "")
    props: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in sig.parameters.items():
        if pname in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop = _json_type(hints.get(pname, Any))
        if pname in docs:
            prop["description"] = docs[pname]
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        elif param.default is not None:
            prop["default"] = param.default
        props[pname] = prop
    return summary, {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def tool(
    fn: ToolFn | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    terminal: bool = False,
    concurrent: bool = True,
    timeout: float | None = 30.0,
) -> Any:
    """Make a :class:`Tool` from a typed (sync or async) function.

    The JSON schema comes from the type hints, the description from the docstring's first
    paragraph and the parameter descriptions from its ``Args:`` section. A parameter named
    ``episode`` is not shown to the model: the env passes its per-episode state there.

    >>> @tool
    ... def add(a: int, b: int = 1) -> int:
    ...     '''Add two numbers.'''
    ...     return a + b
    """

    def build(f: ToolFn) -> Tool:
        episode_arg = "episode" if "episode" in inspect.signature(f).parameters else None
        summary, params = schema_from_function(f, skip=("episode",))
        return Tool(
            name or f.__name__,
            description if description is not None else summary,
            params,
            f,
            terminal=terminal,
            concurrent=concurrent,
            timeout=timeout,
            episode_arg=episode_arg,
        )

    return build(fn) if fn is not None else build
