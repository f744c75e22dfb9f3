"""A real ``sluice serve`` process for integration tests and the webhook benchmark, and
signed deliveries to it."""

from __future__ import annotations

from pathlib import Path

import httpx

from integrations.webhooks import hmac_digest
from tasks.operator.redisserver import free_port
from tasks.operator.supervisor import Child
from tests.support.workers import ROOT, SLUICE


class Serve:
    """``sluice serve --port FREE`` with ``config`` and ``env``; ``http`` talks to it."""

    def __init__(self, config: Path, redis_url: str, *, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.child = Child("serve", [*SLUICE, "serve", "--port", str(self.port)], log=log,
                           cwd=ROOT, env={"SLUICE_CONFIG": str(config),
                                          "SLUICE_REDIS_URL": redis_url, **(env or {})})
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> Serve:
        self.child.start()

        def up() -> bool:
            try:
                return self.http.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        self.child.wait_until(up, timeout=30)
        return self

    def stop(self) -> None:
        self.http.close()
        self.child.stop()

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def signed(body: bytes, secret: str) -> str:
    """GitHub's ``X-Hub-Signature-256`` of ``body`` (and the REST default's X-Signature)."""
    return "sha256=" + hmac_digest(secret, body).hex()
