"""What a fake API was asked: the tests of incremental reads and windows check the query each
request carried (``since``, a window's bounds), then start the next run from a clean log."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from integrations.fakeapi import FakeAPI


def queries_asked(api: FakeAPI, path: str) -> list[dict[str, str]]:
    """The query of every GET under ``path`` so far, and forget every request logged."""
    got = [dict(parse_qsl(urlsplit(r[2]).query)) for r in api.requests(path) if r[1] == "GET"]
    with api.server.lock:
        api.state.log.clear()
    return got
