"""The jq subset evaluated in Python gives what jq gives, or steps aside (NotHere)."""

from __future__ import annotations

import functools
import json
import random
from typing import Any

import jq
import pytest

from integrations.jqsubset import NotHere, compile_subset

LEAVES = [".a", ".b", ".s", ".t", ".o.x", ".o.s", ".missing", ".missing.deeper", ".l", ".",
          "1", "0", "2", "-3", "true", "false", "null", '"x"', '"a b"', '""', '"\\(.a)"',
          '"n=\\(.b)!"', '"\\(.s)-\\(.t)"', '"\\(.o.x)"']
OPS = ["//", "or", "and", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%"]
VALUES = [None, True, False, 0, 1, 2, 7, -4, 0.5, -1.25, 2**53 + 1, "", "x", "open", "é",
          [], [1], {}, {"x": 1}]


def expression(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice(LEAVES)
    left, right = expression(rng, depth - 1), expression(rng, depth - 1)
    op = rng.choice(OPS)
    if op in ("==", "!=", "<", "<=", ">", ">="):  # comparisons do not chain in jq
        return f"({left}) {op} ({right})"
    return f"{left} {op} {right}" if rng.random() < 0.5 else f"({left} {op} {right})"


NUMBERS = [0, 1, 2, 3, 7, 10, -4, 0.5, -1.25, 2**52]


def item(rng: random.Random) -> Any:
    # Half the items hold numbers only where arithmetic looks, so that it is compared often.
    pool = NUMBERS if rng.random() < 0.5 else VALUES
    return {"a": rng.choice(pool), "b": rng.choice(pool), "s": rng.choice(VALUES),
            "t": rng.choice(["open", "closed", "é", 3]), "o": rng.choice(
                [None, {"x": rng.choice(VALUES), "s": "in"}, "text", 5]), "l": [1, 2]}


@functools.cache
def first_of(expr: str) -> Any:
    return jq.compile(f"[{expr}] | .[0]")


def jq_first(expr: str, value: Any) -> tuple[bool, Any]:
    """(True, jq's first output; null when there is none) or (False, jq's error)."""
    try:
        return True, first_of(expr).input_text(json.dumps(value)).first()
    except ValueError as exc:
        return False, exc


def strict(value: Any) -> str:
    """JSON with the Python type of each number kept (jq's 2 and Python's 2.0 differ). A path
    gives an integer past 2**53 exact, as Python read it, where jq rounds it to a double (an
    id of 19 digits would lose its last digits): compared as jq's double."""
    def typed(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: typed(v) for k, v in node.items()}
        if isinstance(node, list):
            return [typed(v) for v in node]
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 2**53:
            return int(float(node))
        return [type(node).__name__, node]
    return json.dumps(typed(value))


@pytest.mark.parametrize("seed", range(8))
def test_the_subset_agrees_with_jq_on_random_expressions_and_items(seed: int) -> None:
    rng = random.Random(seed)
    compared = stepped_aside = 0
    for _ in range(250):
        expr = expression(rng, 3)
        fn = compile_subset(expr)
        try:
            jq.compile(expr)
        except ValueError:  # a chained comparison, say: jq refuses it, and so does the subset
            assert fn is None, expr
            continue
        assert fn is not None, expr  # every other generated expression is in the subset
        for _ in range(6):
            value = item(rng)
            ok, want = jq_first(expr, value)
            try:
                got = fn(value)
            except NotHere:
                stepped_aside += 1
                continue
            assert ok, f"{expr} on {value}: jq fails ({want}) but the subset gave {got!r}"
            assert strict(got) == strict(want), f"{expr} on {value}: {got!r} != jq's {want!r}"
            compared += 1
    # Both happen a lot: the comparison is not vacuous, and the cases it leaves are real.
    assert compared > 300 and stepped_aside > 100, (compared, stepped_aside)


@pytest.mark.parametrize("expr", [
    ".a | length", ".[0]", ".a[]", "if .a then 1 else 2 end", "{a: .a}", "[.a]", ".a?",
    "1.5", '"\\n"', "not", ".a | not", "ascii_downcase", ".a, .b", '."key"', "$x",
    "1 < 2 < 3", "..", ".a .b",
])
def test_other_shapes_are_left_to_jq(expr: str) -> None:
    assert compile_subset(expr) is None


def test_the_usual_mapping_expressions_are_in_the_subset() -> None:
    issue = {"state": "open", "n": 12, "title": "Fix it", "assignee": None,
             "fields": {"project": {"key": "OPS"}}}
    cases = {
        '.state == "open"': True,
        ".n % 2 == 0": True,
        '"\\(.title) #\\(.n)"': "Fix it #12",
        '.assignee // "nobody"': "nobody",
        ".fields.project.key": "OPS",
        ".n > 10 and .state != \"closed\"": True,
        "(.n + 1) * 2": 26,
    }
    for expr, want in cases.items():
        fn = compile_subset(expr)
        assert fn is not None, expr
        assert fn(issue) == want == jq_first(expr, issue)[1], expr


def test_a_jq_error_is_never_a_value() -> None:
    # Indexing a string, adding a number to a string, dividing by zero: jq fails, and the
    # subset steps aside so that jq gives its message.
    for expr, value in [(".o.x", {"o": "text"}), (".a + 1", {"a": "x"}), (".a / 0", {"a": 1}),
                        (".a % 0", {"a": 3}), ('"\\(.a)"', {"a": 1.5})]:
        fn = compile_subset(expr)
        assert fn is not None
        with pytest.raises(NotHere):
            fn(value)


@pytest.mark.parametrize("seed", range(4))
def test_a_mapping_in_python_maps_a_batch_as_jq_does(seed: int, monkeypatch) -> None:
    """Mapping.map's one-pass path (every expression in the subset) against the same mapping
    run by jq alone (the subset switched off): the same rows, skips and rejections, on items
    whose identifiers are missing, whose selector is null or false, and whose values make
    the subset step aside or jq fail."""
    from integrations import mapping as module

    rng = random.Random(seed)
    checked = rejected = 0
    for _ in range(40):
        settings = module.MappingSettings.model_validate({
            "identifier": rng.choice([".a", ".t", ".o.x", '"\\(.t)-\\(.a)"']),
            "selector": rng.choice([".b", ".s != null", '.a > 1 or .t == "open"']),
            "properties": {f"p{i}": expression(rng, i % 3) for i in range(5)}})
        try:
            fast = module.Mapping(settings, kind="k", id_path="id")
        except ValueError:  # an expression jq refuses (a chained comparison)
            continue
        with monkeypatch.context() as patched:
            patched.setattr(module, "compile_subset", lambda expr: None)
            slow = module.Mapping(settings, kind="k", id_path="id")
        assert fast._fast_path and not slow._fast_path
        # Past 2**53 a path keeps an integer exact where jq rounds it: not compared here.
        items = json.loads(json.dumps([item(rng) for _ in range(20)]).replace(
            str(2**53 + 1), "5"))
        got, want = fast.map(items), slow.map(items, text=json.dumps(items))
        assert (got.skipped, [r[:2] for r in got.rejected]) == (
            want.skipped, [r[:2] for r in want.rejected]), settings
        assert [(i, ident, strict(v)) for i, ident, v, _ in got.rows] == [
            (i, ident, strict(v)) for i, ident, v, _ in want.rows], settings
        checked, rejected = checked + len(got.rows), rejected + len(got.rejected)
    assert checked > 100 and rejected > 20, (checked, rejected)  # both paths taken


@pytest.mark.parametrize("expr", ["[.labels[].name]", "[ .a.b[].c.d ]", "[.labels[]]",
                                  "[.[].x]"])
def test_a_field_of_every_element_is_collected_as_jq_collects_it(expr: str) -> None:
    """``[.labels[].name]`` (the names of an issue's labels) runs in Python; what jq would
    refuse (iterating null or a scalar) or order its own way (an object's values) is left
    to it."""
    fn = compile_subset(expr)
    assert fn is not None
    items = [{"labels": [{"name": "bug"}, {"name": "p2", "x": 1}, {}, None]},
             {"labels": []}, {"labels": None}, {}, {"labels": [1, "a"]},
             {"labels": {"k": {"name": "z"}}}, {"a": {"b": [{"c": {"d": 5}}, {"c": None}]}},
             [{"x": 1}, {"x": None}], {"labels": [{"name": 2**60}]}]
    ran = 0
    for item in items:
        try:
            got = fn(item)
        except NotHere:
            continue
        ran += 1
        assert jq_first(expr, item) == (True, got), (expr, item)
    assert ran >= 1
