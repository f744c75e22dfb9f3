"""The common shapes of jq expressions, evaluated in Python, as jq would evaluate them.

jq costs several microseconds per item even for ``.n % 2 == 0`` (it parses the batch's JSON
again, runs its bytecode, and converts what comes out), and it holds the GIL, so in a threads
pool it shares one core with everything else. Most mapping expressions are a few shapes:
paths, literals, comparisons, ``and``/``or``, ``//``, arithmetic and string interpolation.
``compile_subset`` turns an expression made only of those into a Python function; anything
else (pipes, functions, ``if``, object construction ...) returns None and stays with jq.

The functions are exact or they step aside: wherever this module is not certain to give what
jq gives (a value of another type than the common ones, a number past 2**53, a float turned
into text, anything jq would raise an error for), it raises ``NotHere`` and the caller asks
jq for that item (which then also gives jq's own error message). ``tests/unit/
test_jqsubset.py`` checks this against jq on many random expressions and items. One
difference is kept on purpose: a path gives an integer past 2**53 exact, where jq rounds it
to a double (an id of 19 digits would lose its last ones). One is known and left: a JSON
``-0`` reads as Python's ``0``, so interpolating it gives "0" where jq keeps "-0".

    fn = compile_subset('.state == "open" and .n > 2')   # None: not in the subset
    fn({"state": "open", "n": 3})                          # True, or raises NotHere
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

Fn = Callable[[Any], Any]

_BIG = 2**53  # past it jq's numbers (doubles) are not Python's ints


class NotHere(Exception):
    """This item needs real jq (a case this module does not mirror, or a jq error)."""


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>[0-9]+(?![0-9.eE]))
    | (?P<field>\.[A-Za-z_][A-Za-z0-9_]*)
    | (?P<dot>\.)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<str>")
    | (?P<op>//|==|!=|<=|>=|[<>+\-*/%()])
    )""", re.VERBOSE)

_FIELD = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*")
# Binding strength of the binary operators (jq's order: // lowest, then or, and,
# comparisons, + -, * / %); jq's // is right-associative, comparisons do not chain.
_BINARY = {"//": 1, "or": 2, "and": 3, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
           "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}


class _Unsupported(Exception):
    """The expression is not in the subset."""


def compile_subset(expression: str) -> Fn | None:
    """A Python function giving what jq gives for ``expression`` (its one output), or None
    when the expression is not made only of the shapes this module knows."""
    try:
        parser = _Parser(expression)
        fn = parser.expression(0)
        if parser.pos != len(expression.rstrip()):
            return None
        return fn
    except _Unsupported:
        return None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def _peek(self) -> tuple[str, str] | None:
        match = _TOKEN.match(self.text, self.pos)
        if not match or match.end() == match.start() or not match.lastgroup:
            if self.text[self.pos:].strip():
                raise _Unsupported
            return None
        return match.lastgroup, match.group(match.lastgroup)

    def _take(self) -> tuple[str, str]:
        match = _TOKEN.match(self.text, self.pos)
        if not match or not match.lastgroup:
            raise _Unsupported
        self.pos = match.end()
        return match.lastgroup, match.group(match.lastgroup)

    def expression(self, floor: int) -> Fn:
        left = self._primary()
        while True:
            token = self._peek()
            if token is None or token[0] not in ("op", "word") or token[1] not in _BINARY:
                return left
            op = token[1]
            power = _BINARY[op]
            if power < floor:
                return left
            self._take()
            if power == 4:  # comparisons do not chain: the right side binds tighter
                right = self.expression(power + 1)
                after = self._peek()
                if after and after[1] in _BINARY and _BINARY[after[1]] == 4:
                    raise _Unsupported
            else:
                right = self.expression(power if op == "//" else power + 1)
            left = _binary(op, left, right)

    def _primary(self) -> Fn:
        rest = self.text[self.pos:]
        if rest.lstrip().startswith("["):
            self.pos += len(rest) - len(rest.lstrip()) + 1
            return self._collect()
        kind, text = self._take()
        if kind == "op" and text == "(":
            inner = self.expression(0)
            if self._take() != ("op", ")"):
                raise _Unsupported
            return inner
        if kind == "num":
            value = int(text)
            if value >= _BIG:
                raise _Unsupported
            return lambda item: value
        if kind == "op" and text == "-":  # a negative integer literal, nothing else
            kind, text = self._take()
            if kind != "num" or int(text) >= _BIG:
                raise _Unsupported
            negative = -int(text)
            return lambda item: negative
        if kind == "word" and text in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[text]
            return lambda item: constant
        if kind == "dot":
            return self._path([])
        if kind == "field":
            return self._path([text[1:]])
        if kind == "str":
            return self._string()
        raise _Unsupported

    def _path(self, keys: list[str]) -> Fn:
        while True:
            match = _FIELD.match(self.text, self.pos)
            if not match:
                break
            keys.append(match.group()[1:])
            self.pos = match.end()
        if self.text[self.pos:self.pos + 1] in ("[", "."):
            raise _Unsupported  # .[0], .a[], ."x": left to jq

        return _path_of(keys)

    def _collect(self) -> Fn:
        """``[.a.b[].c]`` after its ``[``: a field of every element of an array (the names of
        an issue's labels), the one shape of iteration mappings use all the time."""
        if self.text[self.pos:].lstrip()[:1] != ".":
            raise _Unsupported
        self.pos += len(self.text[self.pos:]) - len(self.text[self.pos:].lstrip())
        outer: list[str] = []
        if self.text.startswith(".[]", self.pos):
            self.pos += 1
        while match := _FIELD.match(self.text, self.pos):
            outer.append(match.group()[1:])
            self.pos = match.end()
        if not self.text.startswith("[]", self.pos):
            raise _Unsupported
        self.pos += 2
        inner: list[str] = []
        while match := _FIELD.match(self.text, self.pos):
            inner.append(match.group()[1:])
            self.pos = match.end()
        if not self.text[self.pos:].lstrip().startswith("]"):
            raise _Unsupported
        self.pos += len(self.text[self.pos:]) - len(self.text[self.pos:].lstrip()) + 1
        return _collect_of(_path_of(outer), _path_of(inner))

    def _string(self) -> Fn:
        """A string literal after its opening quote: plain text and ``\\(expr)`` parts."""
        parts: list[str | Fn] = []
        buf: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise _Unsupported
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                break
            if char == "\\":
                nxt = self.text[self.pos + 1:self.pos + 2]
                if nxt == "(":
                    if buf:
                        parts.append("".join(buf))
                        buf = []
                    self.pos += 2
                    parts.append(self.expression(0))
                    if self._take() != ("op", ")"):
                        raise _Unsupported
                    continue
                if nxt in ('"', "\\", "/"):
                    buf.append(nxt)
                    self.pos += 2
                    continue
                raise _Unsupported  # other escapes: left to jq
            buf.append(char)
            self.pos += 1
        if buf:
            parts.append("".join(buf))
        if all(isinstance(p, str) for p in parts):
            constant = "".join(p for p in parts if isinstance(p, str))
            return lambda item: constant

        def interpolated(item: Any) -> str:
            return "".join([p if type(p) is str else _tostring(p(item))  # type: ignore[operator]
                            for p in parts])
        return interpolated


def _path_of(keys: list[str]) -> Fn:
    """``.a.b``: null through nulls and missing keys; indexing anything but an object is
    jq's error. Paths of one or two keys (most) get a function of their own: they run for
    every item of every batch."""
    if not keys:
        return lambda item: item
    if len(keys) == 1:
        (key,) = keys

        def one(item: Any) -> Any:
            if type(item) is dict:
                return item.get(key)
            if item is None:
                return None
            raise NotHere  # jq: "Cannot index ..."
        return one

    def path(item: Any) -> Any:
        node = item
        for key in keys:
            if type(node) is dict:
                node = node.get(key)
            elif node is None:
                return None
            else:
                raise NotHere
        return node
    return path


def _collect_of(outer: Fn, inner: Fn) -> Fn:
    """``[OUTER[] INNER]``: jq iterates an array in order; iterating null, a scalar or an
    object (its values) is left to jq (an error, or an order to mirror)."""
    def collect(item: Any) -> list[Any]:
        elements = outer(item)
        if type(elements) is not list:
            raise NotHere
        return [inner(element) for element in elements]
    return collect


def _tostring(value: Any) -> str:
    """jq's ``tostring`` of what is interpolated, for the values where Python's text is jq's."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int) and -_BIG < value < _BIG:
        return str(value)
    raise NotHere  # a float's digits, an array, an object: jq's own formatting


def _truthy(value: Any) -> bool:
    return value is not None and value is not False


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -_BIG < value < _BIG


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, str)) or _number(value)


_RANK = {type(None): 0, bool: 1, int: 2, float: 2, str: 3}


def _order(a: Any, b: Any) -> int:
    """jq's order of two scalars: null < false < true < numbers < strings."""
    if type(a) is int and type(b) is int and -_BIG < a < _BIG and -_BIG < b < _BIG:
        return 0 if a == b else -1 if a < b else 1  # the usual case, first
    if not (_scalar(a) and _scalar(b)):
        raise NotHere
    ra, rb = _RANK[type(a)], _RANK[type(b)]
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 3 and not (a.isascii() and b.isascii()):
        try:  # jq compares UTF-8 bytes (code point order); a lone surrogate it would replace
            a.encode(), b.encode()
        except UnicodeEncodeError:
            raise NotHere from None
    if a == b:
        return 0
    return -1 if a < b else 1


def _result(value: float | int) -> int | float:
    """A number as it comes out of jq: a double, an integral one as an int."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not -_BIG < value < _BIG:
        raise NotHere
    return value


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b if _scalar(b) else _raise()
    if b is None:
        return a if _scalar(a) else _raise()
    if _number(a) and _number(b):
        return _result(a + b)
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    raise NotHere


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "%" and type(a) is int and type(b) is int and 0 <= a < _BIG and 0 < b < _BIG:
        return a % b  # the usual case, first (where C's and Python's % agree)
    if not (_number(a) and _number(b)):
        raise NotHere
    if op == "-":
        return _result(a - b)
    if op == "*":
        return _result(a * b)
    if op == "/":
        if b == 0:
            raise NotHere  # jq's error
        return _result(a / b)
    # %: jq truncates both to integers; here only where C's and Python's % agree
    if not (isinstance(a, int) and isinstance(b, int)) or a < 0 or b <= 0:
        raise NotHere
    return a % b


def _raise() -> Any:
    raise NotHere


def _binary(op: str, left: Fn, right: Fn) -> Fn:
    if op == "and":
        return lambda item: _truthy(left(item)) and _truthy(right(item))
    if op == "or":
        return lambda item: _truthy(left(item)) or _truthy(right(item))
    if op == "//":
        def alternative(item: Any) -> Any:
            value = left(item)
            return value if _truthy(value) else right(item)
        return alternative
    if op in ("==", "!="):
        want = op == "=="
        return lambda item: (_order(left(item), right(item)) == 0) == want
    if op in ("<", "<=", ">", ">="):
        test: Callable[[int], bool] = {"<": lambda c: c < 0, "<=": lambda c: c <= 0,
                                       ">": lambda c: c > 0, ">=": lambda c: c >= 0}[op]
        return lambda item: test(_order(left(item), right(item)))
    if op == "+":
        return lambda item: _add(left(item), right(item))
    return lambda item: _arith(op, left(item), right(item))
