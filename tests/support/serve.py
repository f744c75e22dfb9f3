"""A real ``sluice serve`` process for integration tests and the webhook benchmark, and
signed deliveries to it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from integrations.webhooks import hmac_digest
from tasks.operator.redisserver import free_port
from tasks.operator.supervisor import Child
from tests.support.served import Served
from tests.support.workers import ROOT, SLUICE


class Serve(Served):
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



def signed(body: bytes, secret: str) -> str:
    """GitHub's ``X-Hub-Signature-256`` of ``body`` (and the REST default's X-Signature)."""
    return "sha256=" + hmac_digest(secret, body).hex()


@dataclass
class Answer:
    status: int
    body: bytes
    sent: float  # time.monotonic() when the request went out
    answered: float  # and when its answer was read


async def post_many(url: str, requests: list[tuple[str, bytes, dict[str, str]]], *,
                    concurrency: int) -> list[Answer]:
    """POST every (path, body, headers) on ``concurrency`` kept-alive connections, one request
    at a time on each; the answers in the requests' order. A bare HTTP/1.1 client on asyncio
    streams: httpx's pool spends milliseconds of CPU per request at dozens of connections (it
    scans every connection per request), which would load the sender, not the server."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port
    answers: list[Answer | None] = [None] * len(requests)
    todo = list(reversed(range(len(requests))))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while todo:
                i = todo.pop()
                path, body, headers = requests[i]
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                sent = time.monotonic()
                writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                answers[i] = Answer(status, await reader.readexactly(length), sent,
                                    time.monotonic())
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(min(concurrency, len(requests)))))
    return [a for a in answers if a is not None]
