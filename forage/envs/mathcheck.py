"""Do two short math answers mean the same thing? A parser that never evaluates code, and a sympy comparison.

Stdlib + sympy. Answers are read by a small recursive-descent parser into sympy objects (no
``eval``, no ``parse_expr``), so a hostile answer can only be slow or large, never run code;
:func:`answers_equivalent` is meant to run in a worker process with a time and memory limit
(:class:`forage.envs.math.AnswerChecker`). Understood: integers (exact), decimals (exact
rationals), fractions, ``^``/``**``, implicit products (``2n(n+1)``), ``!``, ``sqrt``/``√``,
``floor``/``ceil``, ``C(n, k)``/``\\binom``, LaTeX (``\\frac12``, ``\\sqrt[n]{x}``, ``\\left``,
``\\cdot``, ``^{...}``, ``\\{...\\}``), sums and products (``sum_(i=1)^n i^3``, ``\\sum_{k=1}^{n}``),
Unicode minus and ``±``; sets (``376 and 625``, ``{1, 4, 9}``),
tuples (``(8, 2)``), intervals (``[-1, 1)``), assignments (``x=6, y=5``, ``(x, y) = (6, 5)``,
``x=±1``), a number inside a short sentence (``The minimum is -9.``), and yes/no. Signs,
operators, brackets and interval ends all matter.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = ["answers_equivalent", "parse_answer", "clean_answer", "reference_forms"]

_MAX_CHARS = 400
_MAX_BITS = 200_000  # an integer power larger than this is refused instead of computed


# -- cleaning -------------------------------------------------------------------------------------

def _strip_braced(s: str, command: str) -> str:
    """``\\boxed{X}`` -> ``X`` (balanced braces)."""
    while True:
        i = s.find(command + "{")
        if i < 0:
            return s
        j, depth = i + len(command), 0
        for k in range(j, len(s)):
            depth += {"{": 1, "}": -1}.get(s[k], 0)
            if depth == 0:
                s = s[:i] + s[j + 1:k] + s[k + 1:]
                break
        else:
            return s


def clean_answer(s: str) -> str:
    """Strip wrappers (``$``, ``\\boxed``, ``**``, "The answer is"), a final period, and odd characters."""
    s = unicodedata.normalize("NFKC", str(s)).strip()
    for a, b in (("−", "-"), ("–", "-"), ("—", "-"), ("∓", "-+"), ("\u2009", " "), ("\u00a0", " ")):
        s = s.replace(a, b)
    s = _strip_braced(s, "\\boxed")
    s = _strip_braced(s, "\\text")
    s = _strip_braced(s, "\\mathrm")
    s = s.replace("$", "").strip()
    if s.startswith("**") and s.endswith("**") and len(s) > 4:  # markdown bold, not a power
        s = s[2:-2]
    s = re.sub(r"(?<=\d)\\,(?=\d{3}\b)", "", s)  # 2\,500
    s = re.sub(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*", "", s.strip(), flags=re.IGNORECASE)
    return s.strip().rstrip(".").strip()


_REF_SENTENCES = [
    r"^the limit exists and is equal to (.+)$", r"^(.+?) is the only possible value$",
    r"^the only possible value for the limit is (.+)$", r"^the only possible value is (.+)$",
    r"^(-?\d+) [a-z][a-z -]*$",  # "98 values", "2 inequalities", "0 pairs"
    r"^([a-z](?:\s*[-+]\s*\d+)?) (?:times|values|numbers)$",  # "n times", "k-2 values"
]


def reference_forms(reference: str) -> list[str]:
    """The forms a CHAMP reference spells out: ``"C(10, 5), or equivalently 252"`` -> both; templates unwrapped."""
    ref = clean_answer(reference)
    forms = [ref]
    m = re.search(r"\s*\(([^()]*)\)\s*$", ref)
    if m and re.match(r"(?i)(i\.e\.|ie\b|that is|e\.g\.|no\b|none\b|at most\b)", m.group(1).strip()):
        forms = [ref[:m.start()].strip()]
        said = re.match(r"(?i)(?:i\.e\.|ie|that is)[,:]?\s*(.*)$", m.group(1).strip())
        if said:  # "100 (i.e., all numbers)": the words say the same as the number
            forms.append(said.group(1).strip())
    head = forms[0]
    parts = re.split(r",?\s+or\s+(?:equivalently|an equivalent form such as)\s+", head)
    if len(parts) > 1:
        forms = parts + forms[1:]
    else:
        forms = [re.split(r",\s+or\s+approximately\s+", head)[0]] + forms[1:]
    out = []
    for f in forms:
        out.append(f.strip())
        for pat in _REF_SENTENCES:
            mm = re.match(pat, f.strip(), re.IGNORECASE)
            if mm:
                out.append(mm.group(1).strip())
    return list(dict.fromkeys(o for o in out if o))


# -- LaTeX and Unicode to the parser's plain notation -------------------------------------------------

def _group(s: str, i: int) -> tuple[str, int]:
    """The argument starting at ``s[i]``: a balanced ``{...}`` or one character; returns (text, next index)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise ValueError("missing argument")
    if s[i] != "{":
        if s[i] == "\\":
            m = re.match(r"\\[a-zA-Z]+", s[i:])
            if m:
                return m.group(0), i + len(m.group(0))
        return s[i], i + 1
    depth = 0
    for k in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[k], 0)
        if depth == 0:
            return s[i + 1:k], k + 1
    raise ValueError("unbalanced braces")


def _replace_commands(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        m = re.match(r"\\([dt]?frac|[dt]?binom|sqrt)", s[i:])
        if not m:
            out.append(s[i])
            i += 1
            continue
        name, i = m.group(1), i + len(m.group(0))
        if name == "sqrt":
            root = None
            if i < len(s) and s[i] == "[":
                k = s.index("]", i)
                root, i = s[i + 1:k], k + 1
            arg, i = _group(s, i)
            arg = _replace_commands(arg)
            out.append(f"(({arg})^(1/({_replace_commands(root)})))" if root else f"sqrt({arg})")
        else:
            a, i = _group(s, i)
            b, i = _group(s, i)
            a, b = _replace_commands(a), _replace_commands(b)
            out.append(f"(({a})/({b}))" if name.endswith("frac") else f"C({a},{b})")
    return "".join(out)


_LATEX_WORDS = [
    (r"\\left|\\right|\\displaystyle|\\[,;:!]|\\quad|\\qquad|\\ ", " "), (r"\\cdot|\\times|×|·|\\ast", "*"),
    (r"\\div|÷", "/"), (r"\\pm", "±"), (r"\\mp", "-+"), (r"\\lfloor|⌊", " floor("), (r"\\rfloor|⌋", ") "),
    (r"\\lceil|⌈", " ceil("), (r"\\rceil|⌉", ") "), (r"\\pi|π", " pi "), (r"\\infty|∞", " oo "),
    (r"\\\{|\\lbrace", " ⦃ "), (r"\\\}|\\rbrace", " ⦄ "), (r"\\le(?:q)?\b|≤", "<="), (r"\\ge(?:q)?\b|≥", ">="),
    (r"\\in\b|∈", "="),  # "x \in [-1, 1]", "(x, y) \in \{...\}": the name takes each value
    (r"\\sum\b", "sum"), (r"\\prod\b", "prod"), (r"\\ln\b", "ln"), (r"\\log\b", "log"), (r"\\exp\b", "exp"), (r"\\sin\b", "sin"), (r"\\cos\b", "cos"),
    (r"\\tan\b", "tan"), (r"\\lvert|\\rvert|\\vert", "|"),
]


def _plain(s: str) -> str:
    s = _replace_commands(s)
    for pat, rep in _LATEX_WORDS:
        s = re.sub(pat, rep, s)
    s = re.sub(r"√\s*(\d+|[a-zA-Z])", r"sqrt(\1)", s)
    s = s.replace("√", "sqrt")
    return _sums(_braces(s).replace("**", "^"))


_SUM = re.compile(r"\b(sum|prod)\s*_\s*\(\s*([A-Za-z])\s*=\s*([^()]+?)\s*\)\s*\^\s*(\([^()]*\)|[A-Za-z0-9]+)\s*")


def _sums(s: str) -> str:
    """``sum_(i=1)^n i^3`` (and LaTeX's ``\\sum_{i=1}^{n}``) -> ``sum(i, 1, n, i^3)``: the body runs to the end."""
    m = _SUM.search(s)
    if m is None:
        return s
    return s[:m.start()] + f"{m.group(1)}({m.group(2)},{m.group(3)},{m.group(4)},{_sums(s[m.end():])})"


def _braces(s: str) -> str:
    """``^{..}``/``_{..}`` group like parentheses; any other ``{..}`` is a set."""
    out, stack = [], []
    for i, c in enumerate(s):
        if c == "{":
            prev = s[:i].rstrip()[-1:]
            stack.append(")" if prev in ("^", "_") else "⦄")
            out.append("(" if stack[-1] == ")" else "⦃")
        elif c == "}":
            out.append(stack.pop() if stack else ")")
        else:
            out.append(c)
    return "".join(out)


# -- the expression parser -------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|([A-Za-z](?:_\(?[A-Za-z0-9]+\)?)?)"
                    r"|(\*\*|<=|>=|[-+*/^()!,%±⦃⦄\[\]|=<>]))")
_FUNCS = {"sqrt", "floor", "ceil", "C", "binom", "binomial", "factorial", "log", "ln", "exp", "sin", "cos", "tan",
          "abs", "sum", "prod"}
_CONSTS = {"pi", "oo", "inf", "infty"}
_WORDS = {"is", "the", "are", "of", "to", "for", "all", "no", "yes", "and", "or", "with", "then", "so", "if", "be",
          "not", "only", "than", "at", "most", "each", "one", "none", "some", "any", "such", "that", "it", "as", "we",
          "in", "on", "by", "an"}


def _tokens(s: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(s):
        if s[i:].strip() == "":
            break
        m = _TOKEN.match(s, i)
        if not m:
            raise ValueError(f"unexpected {s[i:i + 10]!r}")
        num, ident, op = m.groups()
        if num is not None:
            out.append(("num", num))
        elif op is not None:
            out.append(("op", op))
        else:
            out.append(("id", ident))
        i = m.end()
    # words: a run of letters is a function or constant name, else a product of one-letter symbols
    merged: list[tuple[str, str]] = []
    for kind, text in out:
        if kind == "id" and merged and merged[-1][0] == "word" and "_" not in text:
            merged[-1] = ("word", merged[-1][1] + text)
        elif kind == "id" and "_" not in text:
            merged.append(("word", text))
        else:
            merged.append((kind, text))
    final: list[tuple[str, str]] = []
    for kind, text in merged:
        if kind != "word":
            final.append((kind, text))
        elif text in _FUNCS or text in _CONSTS:
            final.append(("func" if text in _FUNCS else "const", text))
        elif len(text) <= 3 and text.lower() not in _WORDS:  # "xyz" is x*y*z; "ways" is a word
            final.extend(("id", c) for c in text)
        else:
            raise ValueError(f"word {text!r}")
    if any(a[0] == "num" and b[0] == "num" for a, b in zip(final, final[1:])):
        raise ValueError("two numbers in a row")  # "2 500" is not 2*500
    return final


class _Parser:
    def __init__(self, toks: list[tuple[str, str]]) -> None:
        self.toks, self.i = toks, 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, text: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (text is not None and tok[1] != text):
            raise ValueError(f"expected {text!r}")
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "op" and tok[1] in texts

    def expr(self) -> Any:
        value = self.term()
        while self.at("+", "-"):
            op = self.take()[1]
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def _starts_atom(self) -> bool:
        tok = self.peek()
        return tok is not None and (tok[0] in ("num", "id", "func", "const") or tok[1] in ("(", "⦃"))

    def term(self) -> Any:
        value = self.unary()
        while True:
            if self.at("*", "/"):
                op = self.take()[1]
                rhs = self.unary()
                if op == "/" and rhs == 0:
                    raise ValueError("division by zero")
                value = value * rhs if op == "*" else value / rhs
            elif self._starts_atom():
                value = value * self.power()
            else:
                return value

    def unary(self) -> Any:
        if self.at("-"):
            self.take()
            return -self.unary()
        if self.at("+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Any:
        base = self.postfix()
        if self.at("^", "**"):
            self.take()
            exp = self.unary()
            return _safe_pow(base, exp)
        return base

    def postfix(self) -> Any:
        import sympy

        value = self.atom()
        while self.at("!", "%"):
            if self.take()[1] == "%":
                value = value / 100
            else:
                if value.is_Integer and value > 5000:
                    raise ValueError("factorial too large")
                value = sympy.factorial(value)
        return value

    def atom(self) -> Any:
        import sympy

        tok = self.take()
        kind, text = tok
        if kind == "num":
            return sympy.Rational(text) if "." in text else sympy.Integer(text)
        if kind == "id":
            return sympy.Symbol(text.replace("(", "").replace(")", ""))
        if kind == "const":
            return sympy.pi if text == "pi" else sympy.oo
        if kind == "func":
            self.take("(")
            args = [self.expr()]
            while self.at(","):
                self.take()
                args.append(self.expr())
            self.take(")")
            return _call(text, args)
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        if text == "|":
            value = self.expr()
            self.take("|")
            return sympy.Abs(value)
        raise ValueError(f"unexpected {text!r}")


def _safe_pow(base: Any, exp: Any) -> Any:
    import math

    if base.is_Integer and exp.is_Integer and abs(int(base)) > 1:
        if abs(int(exp)) * math.log2(abs(int(base))) > _MAX_BITS:
            raise ValueError("power too large")
    elif base.is_number and exp.is_number and exp.is_real and abs(float(exp)) > 10_000:
        raise ValueError("power too large")
    return base ** exp


def _call(name: str, args: list[Any]) -> Any:
    import sympy

    one = {"sqrt": sympy.sqrt, "floor": sympy.floor, "ceil": sympy.ceiling, "log": sympy.log, "ln": sympy.log,
           "exp": sympy.exp, "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "abs": sympy.Abs}
    if name in one and len(args) == 1:
        return one[name](args[0])
    if name == "factorial" and len(args) == 1:
        if args[0].is_Integer and args[0] > 5000:
            raise ValueError("factorial too large")
        return sympy.factorial(args[0])
    if name in ("sum", "prod") and len(args) == 4 and args[0].is_Symbol:
        op = sympy.Sum if name == "sum" else sympy.Product
        return op(args[3], (args[0], args[1], args[2])).doit()
    if name in ("C", "binom", "binomial") and len(args) == 2:
        if all(a.is_Integer for a in args) and int(args[0]) > 100_000:
            raise ValueError("binomial too large")
        return sympy.binomial(args[0], args[1])
    raise ValueError(f"bad call {name}/{len(args)}")


def parse_expression(s: str) -> Any:
    """One expression (plain or LaTeX) as a sympy object; ValueError when it is not one."""
    p = _Parser(_tokens(_plain(s)))
    value = p.expr()
    if p.peek() is not None:
        raise ValueError(f"unexpected {p.peek()[1]!r}")
    return value


# -- structured answers ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """An interval with its two ends and whether each is open."""

    lo: Any
    hi: Any
    lo_open: bool
    hi_open: bool


@dataclass(frozen=True)
class Text:
    """An answer in words (compared after normalisation)."""

    text: str


def _split_top(s: str, seps: str) -> list[str]:
    """Split at ``seps`` (a regex) where no bracket is open."""
    parts, depth, last = [], 0, 0
    pattern = re.compile(seps)
    i = 0
    while i < len(s):
        c = s[i]
        if c in "([{⦃":
            depth += 1
        elif c in ")]}⦄":
            depth -= 1
        elif depth == 0:
            m = pattern.match(s, i)
            if m and m.end() > i:
                parts.append(s[last:i])
                last = i = m.end()
                continue
        i += 1
    parts.append(s[last:])
    return [p.strip() for p in parts]


def _expand_pm(s: str) -> list[str]:
    if "±" not in s:
        return [s]
    i = s.index("±")
    return _expand_pm(s[:i] + "+" + s[i + 1:]) + _expand_pm(s[:i] + "-" + s[i + 1:])


_SEPS = r"\s*,\s*(?:and\s+|or\s+)?|\s*;\s*|\s+and\s+|\s+or\s+"


def _value(item: str) -> Any:
    """One item: an interval, a tuple, a set or an expression."""
    item = item.strip()
    m = re.fullmatch(r"([\[(])(.*)([\])])", item, re.DOTALL)
    if m and _split_top(m.group(2), r"\s*,\s*") != [m.group(2).strip()]:
        inner = _split_top(m.group(2), r"\s*,\s*")
        if m.group(1) == "[" or m.group(3) == "]":
            if len(inner) != 2:
                raise ValueError("an interval has two ends")
            return Interval(_value(inner[0]), _value(inner[1]), m.group(1) == "(", m.group(3) == ")")
        return tuple(_value(x) for x in inner)
    m = re.fullmatch(r"⦃(.*)⦄|\{(.*)\}", item, re.DOTALL)
    if m:
        body = m.group(1) if m.group(1) is not None else m.group(2)
        return frozenset(_items(body)) if body.strip() else frozenset()
    return parse_expression(item)


def _items(s: str) -> list[Any]:
    out = []
    for part in _split_top(s, _SEPS):
        out.extend(_value(x) for x in _expand_pm(part) if x)
    return out


def _assignment_groups(parts: list[str]) -> list[dict[str, Any]] | None:
    """``x=6, y=5 and x=1, y=2`` -> one dict per solution; None when there is no ``=``."""
    if not any("=" in p for p in parts):
        return None
    flat: list[str] = []
    for part in parts:  # "(x=8, y=2), (x=2, y=8)": a bracketed group of assignments is one solution
        m = re.fullmatch(r"\((.*=.*)\)", part)
        flat.extend(_split_top(m.group(1), _SEPS) if m and not re.match(r"\([^()]*\)\s*=", part) else [part])
    parts = flat
    groups: list[dict[str, Any]] = [{}]
    last_vars: list[str] = []
    for part in parts:
        if "=" in part:
            sides = [x.strip() for x in part.split("=")]
            names, value = sides[:-1], sides[-1]
            tuple_names = re.fullmatch(r"\((\s*[A-Za-z]\w*\s*(?:,\s*[A-Za-z]\w*\s*)+)\)", names[0]) if names else None
            if tuple_names and len(names) == 1:
                last_vars = [n.strip() for n in tuple_names.group(1).split(",")]
                values = [_value(x) for x in _expand_pm(value)]
            else:
                if not all(re.fullmatch(r"[A-Za-z](?:_?\w+)?(?:\([a-z]\))?", n) for n in names):
                    raise ValueError("not an assignment")
                last_vars = names
                values = [_value(x) for x in _expand_pm(value)]
        else:
            if not last_vars:
                raise ValueError("a value before any name")
            values = [_value(x) for x in _expand_pm(part)]
        if len(values) == 1 and isinstance(values[0], frozenset):  # x = {1, 2}: x takes each value
            values = list(values[0])
        for v in values:
            vals = list(v) if len(last_vars) > 1 and isinstance(v, tuple) else [v] * len(last_vars)
            if len(vals) != len(last_vars):
                raise ValueError("names and values differ in number")
            if any(n in groups[-1] for n in last_vars):
                groups.append({})
            groups[-1].update(zip(last_vars, vals))
    return [g for g in groups if g]


def parse_answer(s: str) -> Any:
    """A cleaned answer as a comparable value: expression, tuple, Interval, frozenset of solutions, or Text."""
    s = clean_answer(s)
    if len(s) > _MAX_CHARS:
        raise ValueError("answer too long")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d{1,3}(?: \d{3})+", s):  # 2,001,000 or 2 001 000
        s = s.replace(",", "").replace(" ", "")
    plain = _plain(s)
    m = re.fullmatch(r"(?i)(yes|no)(?:\s*[,.;!]\s*.*)?", plain)
    if m:
        return Text(m.group(1).lower())
    parts = [x for x in _split_top(plain, _SEPS) if x]
    groups = _assignment_groups(parts)
    if groups is not None:
        sols = [tuple(g[k] for k in sorted(g)) if len(g) > 1 else next(iter(g.values())) for g in groups]
        return sols[0] if len(sols) == 1 else frozenset(sols)
    items = []
    for part in parts:
        items.extend(_value(x) for x in _expand_pm(part) if x)
    if len(items) == 1:
        return items[0]
    return frozenset(items)


def _sentence_value(s: str) -> str | None:
    """The math inside a short sentence (``"The minimum is -9."`` -> ``"-9"``), or None."""
    s = clean_answer(s)
    if re.search(r"(?i)\b(not|no|never|none|nor|neither|cannot|can't|isn't|wrong|false|except|unless|besides|"
                 r"other than|instead|or|maybe|perhaps|either)\b|n't\b|[<>≠]|!=", s):
        return None  # "not 7", "7 or 8", "7 is wrong": no single value is asserted
    m = re.search(r"(?:=|\bis\b|\bequals\b|\bequal to\b|\bof\b)\s*([^=]+)$", s)
    if m and re.search(r"[\d\\√]|\b[a-z]\b", m.group(1)):
        return m.group(1).strip()
    runs = re.findall(r"(?<![A-Za-z])[-+]?\d[\d,./^]*(?![A-Za-z])", s)
    if len(runs) == 1 and len(s.split()) <= 12:
        return runs[0].rstrip(",.")
    return None


# -- comparison ------------------------------------------------------------------------------------

def _same_expr(a: Any, b: Any) -> bool:
    import sympy

    if a.is_Integer and b.is_Integer or a.is_Rational and b.is_Rational:
        return bool(a == b)
    if a == b:
        return True
    free = sorted(a.free_symbols | b.free_symbols, key=str)
    try:
        if sympy.simplify(a - b) == 0:
            return True
    except Exception:
        pass
    if not free:
        try:
            d = sympy.N(a - b, 50)
            return bool(d.is_number and abs(d) < sympy.Float("1e-40", 50) * max(1, abs(sympy.N(b, 50))))
        except Exception:
            return False
    # Equal at many points, exactly (catches forms simplify misses). A reference with floor, ceiling,
    # factorial or a binomial is a function of integers: integer points of mixed parity; otherwise
    # non-integer rationals too, so floor(x) is not x.
    integer_valued = b.has(sympy.floor, sympy.ceiling, sympy.factorial, sympy.binomial)
    points = [7, 10, 13, 6, 11, 20, 9, 16] if integer_valued else \
        [sympy.Rational(7, 3), sympy.Rational(5, 2), 3, sympy.Rational(11, 7), 10, sympy.Rational(13, 4), 6,
         sympy.Rational(17, 5)]
    for shift in range(len(points)):
        subs = {s: points[(shift + j) % len(points)] + 3 * j for j, s in enumerate(free)}
        try:
            d = sympy.simplify((a - b).subs(subs))
            close = d == 0 or (d.is_number and abs(sympy.N(d, 50)) < sympy.Float("1e-40", 50))
        except Exception:
            return False
        if not close:
            return False
    return True


def same_answer(a: Any, b: Any) -> bool:
    """Structural equality with :func:`_same_expr` at the leaves; sets match one-to-one, tuples in order."""
    if isinstance(a, Text) or isinstance(b, Text):
        return a == b
    if isinstance(a, Interval) or isinstance(b, Interval):
        return isinstance(a, Interval) and isinstance(b, Interval) and a.lo_open == b.lo_open and \
            a.hi_open == b.hi_open and same_answer(a.lo, b.lo) and same_answer(a.hi, b.hi)
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and \
            all(same_answer(x, y) for x, y in zip(a, b))
    if isinstance(a, frozenset) or isinstance(b, frozenset):
        if not (isinstance(a, frozenset) and isinstance(b, frozenset)) or len(a) != len(b):
            return False
        left = list(b)
        for x in a:
            hit = next((k for k, y in enumerate(left) if same_answer(x, y)), None)
            if hit is None:
                return False
            left.pop(hit)
        return True
    return _same_expr(a, b)


def _normal_text(s: str) -> str:
    """Lower case, articles and spacing dropped; signs, brackets and operators kept."""
    s = clean_answer(s).lower()
    s = re.sub(r"(?<![\w^_])(a|an|the)\s+(?=[a-z])", " ", s)
    return " ".join(s.split()).rstrip(".")


def answers_equivalent(prediction: str, reference: str) -> bool:
    """True when ``prediction`` means the same as one of the forms of the CHAMP ``reference``."""
    if prediction is None or not str(prediction).strip() or len(str(prediction)) > 4 * _MAX_CHARS:
        return False
    refs = reference_forms(reference)
    pred_text = _normal_text(prediction)
    if any(pred_text == _normal_text(r) for r in [reference, *refs] if _normal_text(r)):
        return True
    parsed_refs = []
    for r in refs:
        try:
            parsed_refs.append(parse_answer(r))
        except (ValueError, TypeError, ZeroDivisionError, RecursionError):
            pass
    if not parsed_refs:
        return False
    candidates = [prediction]
    inner = _sentence_value(prediction)
    if inner is not None and inner != clean_answer(prediction):
        candidates.append(inner)
    for cand in candidates:
        try:
            value = parse_answer(cand)
        except (ValueError, TypeError, ZeroDivisionError, RecursionError):
            continue
        if any(same_answer(value, r) for r in parsed_refs):
            return True
        if not isinstance(value, Text):
            return False  # the answer parsed: what it says is final (no second reading of a sentence)
    return False
