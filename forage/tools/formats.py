"""Tool-call formats: parse calls out of model text and format results back for the model.

Three formats ship:

* ``hermes`` (default): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks, the
  format of the Qwen/Hermes chat templates and vLLM's ``hermes`` tool parser; results come back
  in ``<tool_response>`` blocks.
* ``xml``: one tag per tool, as in Search-R1 and ReTool: ``<search>query</search>``,
  ``<python>code</python>``, ``<answer>text</answer>``; results in ``<information>`` blocks.
* ``openai``: the action is the JSON of an assistant message with ``tool_calls`` (or the list
  of calls itself); results are a JSON list of ``{"role": "tool", ...}`` messages.

Each format declares the strings at which a model's turn must stop (:meth:`ToolCallFormat.stop_strings`):
the end of a call, so the model cannot write the tool's results (and act on them) itself. Policies keep
the stop string in their output, so the parser sees the complete call. Parsing is total and linear:
any string gives a :class:`ParsedAction` (problems go to its ``errors``), in time linear in its length;
a turn that writes a result block itself has everything from that block on ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .base import Tool, ToolCall, ToolResult

__all__ = [
    "ParsedAction",
    "ToolCallFormat",
    "HermesFormat",
    "XMLTagFormat",
    "OpenAIFormat",
    "get_format",
    "FORMATS",
    "truncate_text",
    "loads_json",
    "MAX_JSON_DEPTH",
]

MAX_JSON_DEPTH = 64          # nesting levels a tool call's JSON may have (deeper: an error, never a RecursionError)
MAX_INT_DIGITS = 1000        # digits of an integer literal (Python's int() is quadratic in them)
MAX_ERRORS = 16              # parse problems reported one by one; the rest are counted in one line


@dataclass
class ParsedAction:
    """The tool calls found in one model turn, the problems met while parsing, and the rest."""

    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    text: str = ""


def truncate_text(text: str, max_chars: int | None) -> tuple[str, bool]:
    """Cut ``text`` to ``max_chars`` keeping head and tail, with a marker saying how much went."""
    if max_chars is None or len(text) <= max_chars:
        return text, False
    marker = f"\n...[truncated {len(text) - max_chars} of {len(text)} characters]...\n"
    keep = max(0, max_chars - len(marker))
    head = keep * 3 // 4
    tail = keep - head
    return text[:head] + marker + (text[-tail:] if tail else ""), True


def _parse_int(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS + 1:  # a sign and MAX_INT_DIGITS digits
        raise ValueError(f"an integer of {len(digits)} digits (the limit is {MAX_INT_DIGITS})")
    return int(digits)


_DECODER = json.JSONDecoder(parse_int=_parse_int)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/dicts more than ``limit`` levels (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        for child in (v.values() if isinstance(v, dict) else v):
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def loads_json(text: str) -> tuple[Any, str | None]:
    """Decode JSON without ever raising: ``(value, None)`` or ``(None, what is wrong)``, in linear time."""
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at position {e.pos})"
    except RecursionError:
        return None, f"not usable JSON (nested more than {MAX_JSON_DEPTH} levels)"
    except ValueError as e:  # an integer literal too long to convert
        return None, f"not usable JSON ({e})"
    if isinstance(value, (dict, list)) and text.count("[") + text.count("{") > MAX_JSON_DEPTH \
            and _deeper_than(value, MAX_JSON_DEPTH):
        return None, f"not usable JSON (nested more than {MAX_JSON_DEPTH} levels)"
    return value, None


def _coerce_arguments(raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    if raw is None:
        return {}, None
    if isinstance(raw, str):
        if not raw.strip():
            return {}, None
        raw, problem = loads_json(raw)
        if problem:
            return None, f"arguments are {problem}"
    if not isinstance(raw, dict):
        return None, f"arguments must be a JSON object, got {type(raw).__name__}"
    return raw, None


def _call_from_object(obj: Any, raw: str, index: int) -> tuple[ToolCall | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"tool call #{index + 1} must be a JSON object with 'name' and 'arguments'"
    if "function" in obj and isinstance(obj["function"], dict):  # OpenAI-shaped
        call_id = str(obj.get("id") or "")
        obj = obj["function"]
    else:
        call_id = str(obj.get("id") or "")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None, f"tool call #{index + 1} has no 'name'"
    args, problem = _coerce_arguments(obj.get("arguments", obj.get("parameters")))
    if problem:
        return None, f"tool call #{index + 1} ({name}): {problem}"
    return ToolCall(name=name, arguments=args or {}, id=call_id or f"call_{index}", raw=raw), None


class ToolCallFormat:
    """Base class of a tool-call format."""

    name = "base"

    def parse(self, text: str, tools: Mapping[str, Tool]) -> ParsedAction:
        """Find the tool calls in ``text``; never raises, linear time in ``len(text)``."""
        raise NotImplementedError

    def stop_strings(self, tools: Iterable[Tool] | Mapping[str, Tool]) -> tuple[str, ...]:
        """Where a model's turn stops: right after a complete call (kept in the output, never the results)."""
        return ()

    def format_call(self, call: ToolCall) -> str:
        """Write a call the way a model would (for scripted policies and demos)."""
        raise NotImplementedError

    def format_results(self, results: Sequence[ToolResult]) -> str:
        """Write tool results as the next observation."""
        raise NotImplementedError

    def instructions(self, tools: Sequence[Tool]) -> str:
        """A system-prompt section that teaches the format, for chat templates without tool support."""
        raise NotImplementedError


def _finish(out: ParsedAction) -> ParsedAction:
    """Cap the problems reported (a turn of 50,000 broken calls must not become a 50,000-line observation)."""
    if len(out.errors) > MAX_ERRORS:
        more = len(out.errors) - MAX_ERRORS + 1
        out.errors[MAX_ERRORS - 1 :] = [f"... and {more} more problems like these"]
    return out


def _imagined_results(tag: str) -> str:
    return f"the turn writes a <{tag}> block itself; results come only from the tools, so the rest of the turn was ignored"


def _strip_fence(body: str) -> str:
    """``body`` without a surrounding Markdown code fence (```json ... ```), in linear time."""
    body = body.strip()
    if body.startswith("```"):
        body = body[3:]
        if body.startswith("json"):
            body = body[4:]
    if body.endswith("```"):
        body = body[:-3]
    return body.strip()


class HermesFormat(ToolCallFormat):
    """``<tool_call>{json}</tool_call>`` calls and ``<tool_response>`` results."""

    name = "hermes"
    open_tag, close_tag, result_tag = "<tool_call>", "</tool_call>", "tool_response"
    _opener = re.compile(r"<tool_call>|<tool_response>")

    def parse(self, text: str, tools: Mapping[str, Tool]) -> ParsedAction:
        # One left-to-right pass: every search starts where the last one ended.
        out = ParsedAction()
        pieces: list[str] = []
        pos = 0
        while True:
            m = self._opener.search(text, pos)
            if m is None:
                pieces.append(text[pos:])
                break
            pieces.append(text[pos : m.start()])
            if m.group() != self.open_tag:
                out.errors.append(_imagined_results(self.result_tag))
                break
            end = text.find(self.close_tag, m.end())
            if end < 0:
                out.errors.append("a <tool_call> block was opened but never closed with </tool_call>")
                break
            pos = end + len(self.close_tag)
            self._add_block(out, text[m.end() : end], text[m.start() : pos])
        out.text = "".join(pieces).strip()
        return _finish(out)

    @staticmethod
    def _add_block(out: ParsedAction, body: str, raw: str) -> None:
        obj, problem = loads_json(_strip_fence(body))
        if problem:
            out.errors.append(f"tool call #{len(out.calls) + len(out.errors) + 1} is {problem}")
            return
        for o in obj if isinstance(obj, list) else [obj]:
            call, problem = _call_from_object(o, raw, len(out.calls) + len(out.errors))
            if call:
                out.calls.append(call)
            else:
                out.errors.append(problem or "malformed tool call")

    def stop_strings(self, tools: Iterable[Tool] | Mapping[str, Tool]) -> tuple[str, ...]:
        return (self.close_tag,)

    def format_call(self, call: ToolCall) -> str:
        return "<tool_call>\n" + json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False) + "\n</tool_call>"

    def format_results(self, results: Sequence[ToolResult]) -> str:
        return "\n".join(f"<tool_response>\n{r.content}\n</tool_response>" for r in results)

    def instructions(self, tools: Sequence[Tool]) -> str:
        schemas = "\n".join(json.dumps(t.schema(), ensure_ascii=False) for t in tools)
        return (
            "# Tools\n\nYou can call the functions below. Their signatures are inside <tools></tools>:\n"
            f"<tools>\n{schemas}\n</tools>\n\n"
            "To call a function, write a JSON object with its name and arguments between "
            "<tool_call></tool_call> tags, one block per call:\n"
            '<tool_call>\n{"name": "<function-name>", "arguments": {"<arg>": <value>}}\n</tool_call>\n'
            "The results come back inside <tool_response></tool_response> tags."
        )


class XMLTagFormat(ToolCallFormat):
    """One tag per tool (``<search>q</search>``), Search-R1 / ReTool style.

    The tag's body fills the tool's single required string parameter; for tools with several
    parameters the body must be a JSON object of arguments.
    """

    name = "xml"

    def __init__(self, result_tag: str = "information") -> None:
        self.result_tag = result_tag
        self._plans: dict[tuple[Tool, ...], tuple[re.Pattern[str], dict[str, tuple[Tool, bool, bool, bool, str | None]]]] = {}

    def _plan(self, tools: Mapping[str, Tool]) -> tuple[re.Pattern[str], dict[str, tuple[Tool, bool, bool, bool, str | None]]]:
        """One regex for every tool's opening tag and the result tag, and how each tool's body becomes
        its arguments (several required parameters, none, several properties, the text parameter):
        worked out once per tool set, not once per call."""
        key = tuple(tools.values())
        plan = self._plans.get(key)
        if plan is None:
            tags = sorted({*tools, self.result_tag}, key=len, reverse=True)
            pattern = re.compile("<(" + "|".join(re.escape(t) for t in tags) + ")>")
            shapes = {name: (t, len(t.required) > 1, not t.required, len(t.properties) > 1, self._text_param(t))
                      for name, t in tools.items()}
            if len(self._plans) > 64:
                self._plans.clear()
            plan = self._plans[key] = (pattern, shapes)
        return plan

    def parse(self, text: str, tools: Mapping[str, Tool]) -> ParsedAction:
        # One left-to-right pass: every search starts where the last one ended.
        out = ParsedAction()
        if not tools:
            out.text = text.strip()
            return out
        opener, shapes = self._plan(tools)
        pos = 0
        pieces: list[str] = []
        while True:
            m = opener.search(text, pos)
            if not m:
                pieces.append(text[pos:])
                break
            start, body_start = m.span()
            pieces.append(text[pos:start])
            name = m.group(1)
            shape = shapes.get(name)
            if shape is None:  # the model writes the results itself
                out.errors.append(_imagined_results(name))
                break
            close = f"</{name}>"
            end = text.find(close, body_start)
            if end < 0:
                out.errors.append(f"<{name}> was opened but never closed with {close}")
                break
            pos = end + len(close)
            args, problem = self._arguments(shape, text[body_start:end])
            if problem:
                out.errors.append(f"<{name}>: {problem}")
            else:
                out.calls.append(ToolCall(name, args or {}, f"call_{len(out.calls)}", text[start:pos]))
        out.text = "".join(pieces).strip()
        return _finish(out) if len(out.errors) > MAX_ERRORS else out

    def stop_strings(self, tools: Iterable[Tool] | Mapping[str, Tool]) -> tuple[str, ...]:
        names = tools.keys() if isinstance(tools, Mapping) else [t.name for t in tools]
        return tuple(f"</{n}>" for n in names)

    @staticmethod
    def _text_param(t: Tool) -> str | None:
        props = t.properties
        candidates = t.required or list(props)
        for p in candidates:
            if props.get(p, {}).get("type", "string") == "string":
                return p
        return None

    @staticmethod
    def _arguments(shape: tuple[Tool, bool, bool, bool, str | None], body: str) -> tuple[dict[str, Any] | None, str | None]:
        _, several_required, none_required, several_properties, param = shape
        stripped = body.strip()
        if several_required or (none_required and stripped.startswith("{")):
            return _coerce_arguments(stripped)
        if several_properties and stripped.startswith("{"):
            args, problem = _coerce_arguments(stripped)
            if args is not None:
                return args, None
        if param is None:
            return ({}, None) if not stripped else _coerce_arguments(stripped)
        return {param: body.strip("\n")}, None

    def format_call(self, call: ToolCall) -> str:
        if len(call.arguments) == 1:
            (value,) = call.arguments.values()
            if isinstance(value, str):
                return f"<{call.name}>{value}</{call.name}>"
        return f"<{call.name}>{json.dumps(call.arguments, ensure_ascii=False)}</{call.name}>"

    def format_results(self, results: Sequence[ToolResult]) -> str:
        tag = self.result_tag
        return "\n".join(f"<{tag}>{r.content}</{tag}>" for r in results)

    def instructions(self, tools: Sequence[Tool]) -> str:
        lines = ["# Tools", "", "Use a tool by writing its tag around the input:"]
        for t in tools:
            param = self._text_param(t)
            if len(t.required) > 1 or param is None:
                lines.append(f"- <{t.name}>{{JSON arguments}}</{t.name}>: {t.description}")
            else:
                lines.append(f"- <{t.name}>{param}</{t.name}>: {t.description}")
        lines.append(f"Results come back inside <{self.result_tag}></{self.result_tag}> tags.")
        return "\n".join(lines)


class OpenAIFormat(ToolCallFormat):
    """The action is an OpenAI assistant message (JSON) with ``tool_calls``, or the list itself."""

    name = "openai"

    def parse(self, text: str, tools: Mapping[str, Tool]) -> ParsedAction:
        out = ParsedAction()
        stripped = text.strip()
        if not stripped.startswith(("{", "[")):
            out.text = stripped
            return out
        obj, problem = loads_json(stripped)
        if problem:
            out.errors.append(f"the message is {problem}")
            return out
        if isinstance(obj, dict):
            content = obj.get("content")
            out.text = content if isinstance(content, str) else ""
            calls = obj.get("tool_calls") or []
        else:
            calls = obj
        if not isinstance(calls, list):
            out.errors.append("'tool_calls' must be a list")
            return out
        for i, c in enumerate(calls):
            call, problem = _call_from_object(c, json.dumps(c, ensure_ascii=False) if not isinstance(c, str) else c, i)
            if call:
                out.calls.append(call)
            else:
                out.errors.append(problem or "malformed tool call")
        return _finish(out)

    def format_call(self, call: ToolCall) -> str:
        return json.dumps({"role": "assistant", "content": None, "tool_calls": [call.to_openai()]}, ensure_ascii=False)

    def format_results(self, results: Sequence[ToolResult]) -> str:
        return json.dumps(
            [{"role": "tool", "tool_call_id": r.call_id, "name": r.name, "content": r.content} for r in results],
            ensure_ascii=False,
        )

    def instructions(self, tools: Sequence[Tool]) -> str:
        schemas = json.dumps([t.schema() for t in tools], ensure_ascii=False)
        return f"# Tools\n\nAvailable functions (OpenAI tool schema): {schemas}"


FORMATS: dict[str, type[ToolCallFormat]] = {
    "hermes": HermesFormat,
    "xml": XMLTagFormat,
    "openai": OpenAIFormat,
}


def get_format(fmt: str | ToolCallFormat) -> ToolCallFormat:
    """A format instance from its name (``hermes``, ``xml``, ``openai``) or the instance itself."""
    if isinstance(fmt, ToolCallFormat):
        return fmt
    try:
        return FORMATS[fmt]()
    except KeyError:
        raise ValueError(f"unknown tool-call format {fmt!r}; known: {', '.join(FORMATS)}") from None
