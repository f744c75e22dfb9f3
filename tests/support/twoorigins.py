"""The bench of the modules that test paging across origins (test_paginators, test_trust): the
fake API the sources read, another fake API on another origin that a next URL may point to,
the workers, a client and the SQLite target's file (the config is ``configs.api_and_open``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from integrations.fakeapi import FakeAPI
from tests.support.workers import Client, Workers


@dataclass
class TwoOrigins:
    api: FakeAPI
    other: FakeAPI
    workers: Workers
    client: Client
    db: Path
