"""What a child kind takes from its parent: ``{parent.<dot path>}`` in a path or a parameter,
filled from the parent's ref (``Integration.parent_ref``). Shared by the REST integration and
the built-in ones whose kinds hang off another (GitHub's issue comments, Jira's comments)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from integrations.errors import NoParentValue

PARENT_FIELD = re.compile(r"\{parent\.([A-Za-z0-9_.-]+)\}")
# ``{item.<dot path>}``: a webhook follow-up's path, filled from the event's item.
ITEM_FIELD = re.compile(r"\{item\.([A-Za-z0-9_.-]+)\}")


def fill(template: str, ref: dict[str, Any], *, quoted: bool = False,
         field: re.Pattern[str] = PARENT_FIELD) -> str:
    """``{parent.<dot path>}`` in ``template`` replaced by the parent's value (quoted as a
    path segment in a path); ``field=ITEM_FIELD``: ``{item.<dot path>}`` instead. A parent
    without the value is a malformed page of it (the children task rejects that parent with
    the reason, and fetches the others)."""

    def value(match: re.Match[str]) -> str:
        got = ref.get(match[1])
        if got is None or isinstance(got, (dict, list)):
            whose = "parent item" if field is PARENT_FIELD else "item"
            raise NoParentValue(f"the {whose} has no value at {match[1]!r} for {template!r}")
        text = str(got)
        if quoted and text in (".", ".."):  # a dot segment: the URL would name another path
            whose = "parent item" if field is PARENT_FIELD else "item"
            raise NoParentValue(f"the {whose}'s {match[1]!r} is {text!r}, not a path segment"
                                f" for {template!r}")
        return quote(text, safe="") if quoted else text

    return field.sub(value, template)


def fill_json(value: Any, ref: dict[str, Any]) -> Any:
    """``fill`` of every string in a JSON value (a GraphQL query's variables). A string that
    is one ``{parent.<dot path>}`` alone becomes the parent's value itself, of its JSON type:
    an ``Int!`` variable takes the parent's number, not its text. Raises NoParentValue."""
    if isinstance(value, str):
        whole = PARENT_FIELD.fullmatch(value)
        if whole is None:
            return fill(value, ref)
        got = ref.get(whole[1])
        if got is None or isinstance(got, (dict, list)):
            raise NoParentValue(f"the parent item has no value at {whole[1]!r} for {value!r}")
        return got
    if isinstance(value, dict):
        return {k: fill_json(v, ref) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_json(v, ref) for v in value]
    return value
