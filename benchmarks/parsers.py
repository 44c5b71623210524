"""Tool-call parsing time per format on adversarial and random text, beside the floor of one scan.

Inputs: 50,000 unclosed ``<tool_call>`` tags (550,000 characters; the old Hermes regex took minutes),
1 MB of random Latin-1 bytes, 1 MB of tag soup (the formats' tags, JSON punctuation and quotes in
random order), 1 MB of deep ``[`` nesting (inside a Hermes block and bare, for the OpenAI format) and a
1 MB JSON array of strings (decoded in full by the OpenAI format). Baseline, timed side by side on the same string: one
``str.count("<")`` pass, the least any tag parser must do (read each character once). ``--old PATH``
also times another ``formats.py`` (e.g. ``git show REV:forage/tools/formats.py > /tmp/old.py``), once each,
in a child process killed after ``--timeout`` wall-clock seconds. Times are CPU seconds of the parsing
thread (best of 5; one run for the old parser).

    .venv/bin/python benchmarks/parsers.py [--old /tmp/old_formats.py] [--timeout 300]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import random
import sys
import time
from typing import Any

from forage.envs import answer_tool
from forage.tools import FORMATS, tool


@tool
def search(query: str) -> str:
    """Search."""
    return query


@tool
def lookup(name: str) -> str:
    """Look up."""
    return name


TOOLS = {t.name: t for t in (lookup, search, answer_tool())}
SOUP = ["<tool_call>", "</tool_call>", "<tool_response>", "<search>", "</search>", "<answer>", "</answer>",
        "<information>", "{", "}", "[", "]", '"', "\\", ":", ",", '"name"', " ", "\n", "a", "é"]


def inputs() -> dict[str, str]:
    """The strings every format parses."""
    rng = random.Random(0)
    soup: list[str] = []
    size = 0
    while size < 1_000_000:
        piece = rng.choice(SOUP)
        soup.append(piece)
        size += len(piece)
    return {
        "50k_unclosed_tool_call": "<tool_call>" * 50_000,
        "1MB_random_latin1": rng.randbytes(1_000_000).decode("latin-1"),
        "1MB_tag_soup": "".join(soup),
        "1MB_deep_brackets": "<tool_call>" + "[" * 1_000_000 + "</tool_call>",
        "1MB_bare_deep_brackets": "[" * 1_000_000,
        "1MB_json_array": json.dumps(["".join(rng.choices("abc <>{}[]\\\"é", k=30)) for _ in range(25_000)]),
    }


def best_of(fn: Any, repeats: int = 5) -> float:
    """Least CPU time of this thread over ``repeats`` runs (a parse is single-threaded: on an idle machine
    this is its wall time; on a loaded one it leaves out the time spent waiting for a core)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


def _load(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("forage.tools._old_formats", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = mod  # type: ignore[union-attr]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _old_child(path: str, fmt: str, name: str, out: Any) -> None:
    mod = _load(path)
    text = inputs()[name]
    parser = mod.FORMATS[fmt]()
    t = time.thread_time()
    try:
        parser.parse(text, TOOLS)
        out.put(("ok", time.thread_time() - t))
    except BaseException as e:  # noqa: BLE001 - the old parser's crash is a result here
        out.put((f"raised {type(e).__name__}", time.thread_time() - t))


def time_old(path: str, fmt: str, name: str, timeout: float) -> str:
    """One parse with the old module in a child process; 'timed out' past ``timeout``."""
    q: Any = mp.Queue()
    p = mp.Process(target=_old_child, args=(path, fmt, name, q))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        return f"> {timeout:.0f} s (killed)"
    status, secs = q.get()
    return f"{secs * 1e3:.1f} ms" + ("" if status == "ok" else f" ({status})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", help="another formats.py to time on the same inputs (e.g. the one before a change)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds an old parse may take")
    args = ap.parse_args()
    texts = inputs()
    print(f"{'input':26} {'format':7} {'parse':>11} {'str.count floor':>16} {'ratio':>8}" + ("   old parse" if args.old else ""))
    for name, text in texts.items():
        floor = best_of(lambda: text.count("<"))
        for fmt_name, cls in FORMATS.items():
            parser = cls()
            t = best_of(lambda: parser.parse(text, TOOLS))
            line = f"{name:26} {fmt_name:7} {t * 1e3:8.2f} ms {floor * 1e3:13.3f} ms {t / floor:7.1f}x"
            if args.old:
                line += "   " + time_old(args.old, fmt_name, name, args.timeout)
            print(line, flush=True)


if __name__ == "__main__":
    main()
