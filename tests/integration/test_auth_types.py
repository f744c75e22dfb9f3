"""Bearer, basic and API-key auth (in a header and in the query) through real workers, each
against a fake API that checks exactly that credential (401 otherwise). The query key is the
hard one: the fake API's Link headers repeat it in every next URL, which the run then stores
as its checkpoint; it must be masked there and put back on the way out. (Basic auth against a
real server, Kinto, is in test_real_apis.py; OAuth 2.0 against oidc-provider in
test_oauth.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from integrations.fakeapi import FakeAPI
from integrations.fakeauth import api_key, basic, bearer_token
from tasks.operator.redisserver import RedisServer
from tasks.runs.progress import RunState
from tests.support.workers import Client, Workers, redis_values

pytestmark = pytest.mark.integration

SECRETS = {"TOKEN": "tok-9a1f-bearer-secret", "PASSWORD": "pä:ss-wörd-7731",
           "HEADER_KEY": "hk-55e2-header-key", "QUERY_KEY": "qk-81c4-query-key"}

AUTHS = {
    "bearer": ('{ type = "bearer", token = "${TOKEN}" }', bearer_token(SECRETS["TOKEN"])),
    "basic": ('{ type = "basic", username = "bot", password = "${PASSWORD}" }',
              basic("bot", SECRETS["PASSWORD"])),
    "header": ('{ type = "api_key", name = "X-API-Key", value = "${HEADER_KEY}" }',
               api_key("X-API-Key", SECRETS["HEADER_KEY"])),
    "query": ('{ type = "api_key", name = "api_key", value = "${QUERY_KEY}", location = "query" }',
              api_key("api_key", SECRETS["QUERY_KEY"], location="query")),
}
ITEMS = 120


class Setup:
    def __init__(self, tmp: Path, apis: dict[str, FakeAPI], redis_url: str,
                 client: Client) -> None:
        self.tmp, self.apis, self.redis_url, self.client = tmp, apis, redis_url, client
        self.db = tmp / "db.sqlite"

    def rows(self, source: str) -> int:
        with sqlite3.connect(self.db) as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM entities WHERE source = ?",
                                    (source,)).fetchone()
        return int(count)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("auth-types")
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        apis = {name: stack.enter_context(FakeAPI(auth=check))
                for name, (_, check) in AUTHS.items()}
        config = f'[target]\npath = "{tmp / "db.sqlite"}"\n'
        for name, (section, _) in AUTHS.items():
            apis[name].set_items("item", ITEMS)
            # Link paging: the next URLs repeat the request's query, the query key included.
            config += f"""
[sources.{name}]
integration = "rest"
base_url = "{apis[name].url}"
auth = {section}
http = {{ retries = 1, backoff = 0.05 }}

[sources.{name}.kinds.item]
path = "/link/item"
paginator = {{ type = "link", limit = 25 }}
"""
        (tmp / "sluice.toml").write_text(config)
        stack.enter_context(Workers(config=tmp / "sluice.toml", redis_url=server.url,
                                    log=tmp / "worker.log", env=SECRETS,
                                    # one page a slice: every next URL is a checkpoint
                                    ))
        client = Client(server.url)
        stack.callback(client.close)
        yield Setup(tmp, apis, server.url, client)


@pytest.mark.parametrize("name", list(AUTHS))
def test_each_auth_type_lands_everything_against_a_server_that_checks_it(setup: Setup,
                                                                         name: str) -> None:
    run = setup.client.resync(name, "item", timeout=60)
    assert run.state == RunState.SUCCEEDED, (run.reason, run.error)
    assert setup.rows(name) == ITEMS
    statuses = [status for _, method, _, status in setup.apis[name].requests()]
    assert statuses and set(statuses) == {200}, statuses  # never a 401: sent every time


def test_a_wrong_credential_fails_the_run_with_a_401_and_no_secret(setup: Setup) -> None:
    api = setup.apis["header"]
    api.require(api_key("X-API-Key", "another-key"))
    try:
        run = setup.client.resync("header", "item", timeout=60)
    finally:
        api.require(AUTHS["header"][1])
    assert run.state == RunState.FAILED and "401" in run.error
    assert SECRETS["HEADER_KEY"] not in run.error + run.reason


def test_no_credential_is_stored_or_logged_in_clear(setup: Setup) -> None:
    for name in AUTHS:  # every source has run (and stored its checkpoints) by now
        setup.client.resync(name, "item", timeout=60)
    store = redis.Redis.from_url(setup.redis_url)
    blobs = [setup.db.read_bytes(), (setup.tmp / "worker.log").read_bytes()]
    blobs += [value for _, value in redis_values(store)]
    masked = [b for b in blobs if b"api_key=***" in b or b"api_key=%2A%2A%2A" in b]
    assert masked, "the query key's next URLs were stored nowhere: the test saw nothing"
    for value in SECRETS.values():
        assert not any(value.encode() in blob for blob in blobs), "a credential was written"
