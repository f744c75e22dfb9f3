"""Secrets: every value that sluice.toml takes from the environment (``${NAME}``).

Such values are credentials until proven otherwise (a token in a header, an API key in a
query parameter, a password in a DSN), so wherever Sluice writes something down that a
request or an error may have carried (logs, checkpoints, run records, dead letters, task
arguments) it passes it through a ``Redactor`` first, which replaces each value, raw or
URL-encoded, with ``***``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 4  # a shorter value would mask ordinary text ("1", "on"); no credential is that short
# Where a token ends: a secret is a run of characters without spaces, quotes or separators.
_TOKEN_REST = re.compile(r"[^\s\"'&,;<>()\[\]{}]*")


class Redactor:
    """Replaces known secret values in text and in JSON-like data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = frozenset(s for s in secrets if len(s) >= MIN_LENGTH)
        forms = set(self.secrets)
        for secret in self.secrets:
            escaped = json.dumps(secret)[1:-1]  # as it appears inside JSON text
            forms |= {quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret),
                      escaped, json.dumps(secret, ensure_ascii=False)[1:-1],
                      escaped.replace("/", "\\/"),  # JSON with escaped slashes (PHP, Java)
                      repr(secret)[1:-1]}  # inside a Python repr (a rejected item's preview)
        # Longest first, so a secret that contains another is masked whole.
        self._pattern = (re.compile("|".join(re.escape(f) for f in
                                             sorted(forms, key=len, reverse=True)))
                         if forms else None)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def hides(self, text: str) -> bool:
        """True when ``text`` holds a secret."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def text(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def data(self, node: Any) -> Any:
        """A copy of JSON-like ``node`` with every string redacted."""
        if self._pattern is None:
            return node
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, dict):
            return {k: self.data(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.data(v) for v in node]
        return node


def excerpt(text: str, limit: int) -> str:
    """About ``limit`` characters of ``text`` for a message. Redacted first with the secrets of
    this process's configuration (``install``): half a secret could not be matched later.
    Without them, the cut never falls inside a token (a run without spaces, quotes or
    separators, up to 8 KiB), so the token reaches a later ``Redactor`` whole."""
    text = _installed.text(text)
    if len(text) <= limit:
        return text
    rest = _TOKEN_REST.match(text, limit)
    tail = rest.group()[:8192] if rest else ""
    return text[:limit] + tail + "..."


# This process's secrets, for ``excerpt``: error messages are cut where they are made (an HTTP
# answer's body, an item's preview), deep inside code that has no configuration at hand.
_installed = Redactor()


def installed() -> Redactor:
    """This process's secrets (what ``install`` was given last)."""
    return _installed


def install(redactor: Redactor) -> None:
    """Make ``redactor`` the one ``excerpt`` applies (the worker's runtime does, at every load
    of sluice.toml)."""
    global _installed
    _installed = redactor
