"""A server program the tests start (Kinto, Datasette, the GraphQL API, the OIDC provider,
``sluice serve``) with the HTTP client that talks to it: stopping closes both, and ``with``
starts and stops it, so a failing test leaves no server behind."""

from __future__ import annotations

from typing import Self

import httpx

from tasks.operator.supervisor import Child


class Served:
    child: Child
    http: httpx.Client

    def start(self) -> Self:
        """Start ``child`` and return once it answers."""
        raise NotImplementedError

    def stop(self) -> None:
        self.http.close()
        self.child.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
