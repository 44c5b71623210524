"""Shared by the fuzz tests: hostile text for parsers and envs, and a scaling test of cost per character."""

from __future__ import annotations

import json
import random
import time
from typing import Callable

from hypothesis import strategies as st

from forage.tools.formats import MAX_JSON_DEPTH

TOOL_NAMES = ("search", "python", "move", "answer", "lookup", "submit", "command")

# Pieces every parser has to cope with, in any order and number: its own tags (opened, closed,
# unclosed, nested), the other formats' tags, result tags the model must not write, JSON
# punctuation, fences, escapes, lone surrogates and non-ASCII.
PIECES = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<search>", "</search>",
          "<answer>", "</answer>", "<python>", "</python>", "<move>", "</move>", "<information>", "</information>",
          "<", ">", "</", "{", "}", "[", "]", '"', "\\", "\\u", "\\ud800", ":", ",", '"name"', '"arguments"',
          '"tool_calls"', '"function"', '"search"', '"answer"', '"query"', "null", "true", "1e999", "NaN", "-",
          "9" * 50, "```", "```json", " ", "\n", "\t", "\ud800", "\udfff", "é", "🙂", "\x00", "a"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def hostile_texts(draw) -> str:
    """Tag soup, deep nesting, huge numbers, repeated/unclosed tags, surrogates and random unicode."""
    kind = draw(st.sampled_from(["soup", "deep", "bigint", "repeat", "unicode", "call", "openai"]))
    if kind == "soup":
        return "".join(draw(st.lists(st.sampled_from(PIECES), max_size=80)))
    if kind == "deep":
        opener = draw(st.sampled_from(["[", "{\"a\":", "[{\"b\":"]))
        depth = draw(st.integers(MAX_JSON_DEPTH - 2, 30_000))
        body = opener * depth + draw(st.sampled_from(["", "1", "]" * depth]))
        wrap = draw(st.sampled_from(["<tool_call>{}</tool_call>", "<search>{}</search>", "{}",
                                     '<tool_call>{{"name": "search", "arguments": {{"query": {}}}}}</tool_call>']))
        return wrap.replace("{}", body, 1) if wrap != "{}" else body
    if kind == "bigint":
        digits = "7" * draw(st.integers(900, 6000))
        return draw(st.sampled_from([f"<tool_call>{digits}</tool_call>", f"[{digits}]",
                                     f'<tool_call>{{"name": "move", "arguments": {{"x": {digits}, "y": 1}}}}</tool_call>',
                                     f'<move>{{"x": {digits}, "y": 2}}</move>']))
    if kind == "repeat":
        piece = draw(st.sampled_from(PIECES[:14] + ['<tool_call>{"name": "search", "arguments": {"query": "a"}}</tool_call>']))
        return piece * draw(st.integers(1, 3000))
    if kind == "unicode":
        return draw(st.text(max_size=400))
    if kind == "call":
        name = draw(st.sampled_from([*TOOL_NAMES, "", "nope", "\ud800"]))
        args = draw(st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=4), json_values))
        return draw(st.sampled_from(["<tool_call>{}</tool_call>", "{}", f"<{name}>{{}}</{name}>"])).replace(
            "{}", json.dumps({"name": name, "arguments": args}), 1)
    calls = draw(st.lists(st.fixed_dictionaries({"id": json_values, "function": json_values}), max_size=3))
    return json.dumps({"role": "assistant", "content": draw(json_values), "tool_calls": calls})


# -- linear time -------------------------------------------------------------------------------------
# Each family is a way to make a naive parser rescan its input: unclosed openers (a lazy regex scans to
# the end from each), whitespace runs (a `\s*$` anchor retries at each space), quotes and escapes,
# nesting, and many small calls. The same generator gives n and 8n characters.
FAMILIES: dict[str, Callable[[int], str]] = {
    "unclosed_tool_call": lambda n: "<tool_call>" * (n // 11),
    "unclosed_xml": lambda n: "<search>" * (n // 8),
    "open_close_soup": lambda n: "<tool_call><search></tool_response><answer>" * (n // 44),
    "whitespace_run": lambda n: "<tool_call>{" + " " * n + "x</tool_call>",
    "fenced_whitespace": lambda n: "<tool_call>```json" + " \n" * (n // 2) + "x```</tool_call>",
    "escaped_quotes": lambda n: '<tool_call>{"name": "' + '\\"' * (n // 2) + "</tool_call>",
    "deep_brackets": lambda n: "<tool_call>" + "[" * n + "</tool_call>",
    "openai_deep": lambda n: "[" * n,
    "many_calls": lambda n: '<tool_call>{"name": "search", "arguments": {"query": "a"}}</tool_call>' * (n // 70),
    "many_xml_calls": lambda n: "<search>a</search>" * (n // 18),
    "random_latin1": lambda n: random.Random(n).randbytes(n).decode("latin-1"),
}


def best_time(fn: Callable[[], object], repeats: int = 5) -> float:
    """The least CPU time of this thread over ``repeats`` runs (time spent waiting for a core not counted)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


GROWTH = 16   # the big input is GROWTH times the small one: linear time grows GROWTH-fold, quadratic GROWTH**2


def scaling_ratio(parse: Callable[[str], object], make: Callable[[int], str], floor_s: float = 0.005,
                  max_n: int = 1 << 20, tries: int = 3) -> tuple[int, float, float]:
    """How much more a parse of GROWTH*n characters costs than one of n, relative to copying the text once.

    n grows until one parse takes ``floor_s`` (above timer noise; a quadratic parser gets there early).
    Dividing by the same growth of a plain copy of the text (``text[1:]``, timed side by side) cancels
    what the machine adds at the larger size (cache misses, fresh pages), so a linear parser gives ~1
    and a quadratic one ~GROWTH. A busy machine can disturb one measurement, never a quadratic law:
    up to ``tries`` measurements, the first under GROWTH / 4 or else the least, is returned as
    (n, raw growth, relative growth).
    """
    n = 1 << 10
    while True:
        small = make(n)
        t_small = best_time(lambda: parse(small), repeats=9)
        if t_small >= floor_s or n >= max_n:
            break
        n *= 2
    big = make(GROWTH * n)
    best = (n, float("inf"), float("inf"))
    for _ in range(tries):
        t_small = best_time(lambda: parse(small), repeats=9)
        t_big = best_time(lambda: parse(big), repeats=3)
        copy_growth = best_time(lambda: big[1:], repeats=3) / max(best_time(lambda: small[1:], repeats=9), 1e-9)
        raw = t_big / max(t_small, 1e-9)
        best = min(best, (n, raw, raw / max(copy_growth, 1e-9)), key=lambda r: r[2])
        if best[2] < GROWTH / 4:
            break
    return best
