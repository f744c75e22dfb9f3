"""PostgreSQL with a role that may only read and write rows: a superuser runs what
`sluice schema --sql --role ROLE` prints, and full, incremental, mapped and child kinds then
run as that role with real workers, without CREATE on any schema; a table that is missing (or
lacks a column) fails with an error that names it and says what to run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from integrations.errors import TargetRejected
from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import RedisServer
from tasks.targets.base import Table
from tests.support.configs import (
    SINCE,
    comments_of,
    cursor_kind,
    postgres_target,
    rest_source,
    toml,
)
from tests.support.workers import SLUICE, Client, Workers
from tests.unit.test_targets import postgres_dsn

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ISSUE_PROPERTIES = """[sources.api.kinds.issue.mapping.properties]
title = { jq = ".title", type = "text" }
n = { jq = ".n", type = "integer" }
updated = { jq = ".updated_at", type = "timestamp" }"""


def config_text(dsn: str, url: str) -> str:
    return toml(
        postgres_target(dsn), rest_source(url, "delete_threshold = 0.9"),
        cursor_kind("plain"), cursor_kind("post", SINCE), comments_of("post"),
        cursor_kind("issue", SINCE, ISSUE_PROPERTIES),
        cursor_kind("gone", "mapping = { properties = { title = "
                            '{ jq = ".title", type = "text" } } }'))


class Setup:
    def __init__(self, *, dsn: str, role: str, api: FakeAPI, client: Client, env: dict[str, str]
                 ) -> None:
        self.dsn, self.role, self.api, self.client, self.env = dsn, role, api, client, env
        self.role_dsn = role_dsn(dsn, role)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """A query as the superuser, in the role's schema."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {self.role}")
            cursor = conn.execute(query, args or None)
            return cursor.fetchall() if cursor.description else []

    def entities(self, kind: str) -> dict[str, Any]:
        return dict(self.sql("SELECT identifier, data FROM sluice_entities WHERE source = 'api'"
                             " AND kind = %s", kind))


def role_dsn(dsn: str, role: str) -> str:
    import psycopg

    return psycopg.conninfo.make_conninfo(dsn, user=role)


def admin(dsn: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    dsn = postgres_dsn()
    role = f"sluice_lp_{os.getpid()}"  # roles are the cluster's: one of this process's own
    tmp = tmp_path_factory.mktemp("least-privilege")
    admin(dsn, f"DROP SCHEMA IF EXISTS {role} CASCADE",
          f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
          f" DROP OWNED BY {role}; DROP ROLE {role}; END IF; END $$",
          f"CREATE ROLE {role} LOGIN",
          # A schema of its own, which the role may use but not create in; found first.
          f"CREATE SCHEMA {role}", f"GRANT USAGE ON SCHEMA {role} TO {role}",
          f"ALTER ROLE {role} SET search_path = {role}")
    try:
        with FakeAPI() as api, RedisServer() as redis_server:
            config = tmp / "sluice.toml"
            config.write_text(config_text(role_dsn(dsn, role), api.url))
            env = {**os.environ, "SLUICE_CONFIG": str(config), "SLUICE_REDIS_URL": redis_server.url}
            printed = subprocess.run([*SLUICE, "schema", "--sql", "--role", role], env=env,
                                     capture_output=True, text=True, timeout=60, check=True)
            (tmp / "schema.sql").write_text(printed.stdout)
            admin(dsn, f"SET search_path TO {role}; {printed.stdout}")
            with Workers(config=config, redis_url=redis_server.url, log=tmp / "worker.log"):
                client = Client(redis_server.url)
                try:
                    yield Setup(dsn=dsn, role=role, api=api, client=client, env=env)
                finally:
                    client.close()
    finally:
        admin(dsn, f"DROP SCHEMA IF EXISTS {role} CASCADE", f"DROP OWNED BY {role}",
              f"DROP ROLE {role}")


def test_the_role_has_no_create_and_the_printed_sql_makes_every_table(setup: Setup):
    (db,) = setup.sql("SELECT current_database()")[0]
    rights = setup.sql(
        "SELECT has_schema_privilege(%s, %s, 'CREATE'), has_schema_privilege(%s, 'public',"
        " 'CREATE'), has_database_privilege(%s, %s, 'CREATE'),"
        " has_database_privilege(%s, %s, 'TEMPORARY')",
        setup.role, setup.role, setup.role, setup.role, db, setup.role, db)
    assert rights == [(False, False, False, True)]
    tables = {t for (t,) in setup.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", setup.role)}
    assert tables == {"sluice_entities", "sluice_entities_state", "sluice_entities_watermarks",
                      "sluice_entities_secrets", "api_issue", "api_gone"}
    granted = setup.sql(
        "SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type) FROM"
        " information_schema.role_table_grants WHERE grantee = %s GROUP BY table_name",
        setup.role)
    assert {t: p for t, p in granted} == dict.fromkeys(tables, "DELETE,INSERT,SELECT,UPDATE")


def test_full_incremental_mapped_and_child_kinds_run_without_create(setup: Setup):
    api, client = setup.api, setup.client
    plain = api.set_items("plain", 120)
    run = client.resync("api", "plain")
    assert (run.state, run.items_written, run.batches_failed) == ("succeeded", 120, 0), run
    del plain[100:]
    run = client.resync("api", "plain")  # a full run deletes what the API no longer has
    assert (run.state, run.deleted) == ("succeeded", 20), run
    assert setup.entities("plain") == {i["id"]: i for i in plain}

    posts = api.set_timed_items("post", 60)
    api.set_children("comment", posts, 2)
    first = client.resync("api", "post", timeout=120)
    assert (first.state, first.incremental) == ("succeeded", False), first
    assert first.children["comment"]["items_written"] == 120
    api.change("post", [4, 30], when=500_000)
    api.state.children["comment"]["post-4"].append({"id": "comment-post-4-new", "body": "x"})
    second = client.resync("api", "post", timeout=120)
    assert (second.state, second.incremental) == ("succeeded", True), second
    assert "(changed at" in setup.entities("post")["post-30"]["title"]
    assert len(setup.entities("comment")) == 121

    issues = api.set_timed_items("issue", 130)
    first = client.resync("api", "issue")
    assert (first.state, first.items_written) == ("succeeded", 130), first
    api.change("issue", [7], when=600_000)
    second = client.resync("api", "issue")
    # issue-7, and issue-129, which is at the watermark
    assert (second.state, second.incremental, second.items_written) == ("succeeded", True, 2)
    rows = dict(setup.sql("SELECT identifier, title FROM api_issue"))
    assert len(rows) == len(issues) and rows["issue-7"].endswith("(changed at 600000)")
    marks = setup.sql("SELECT kind FROM sluice_entities_watermarks ORDER BY kind")
    assert {k for (k,) in marks} == {"issue", "post"}

    for run in (first, second):
        assert client.progress.dead_letters(run.run_id) == {}


def test_the_role_keeps_secrets_in_the_table_made_for_them(setup: Setup):
    from tasks.targets.postgres import PostgresTarget

    target = PostgresTarget(setup.role_dsn)
    try:
        target.keep_secret("api", "kept", "sealed-1")
        target.keep_secret("api", "kept", "sealed-2")
        assert target.secret("api", "kept") == "sealed-2"
    finally:
        target.close()


def test_a_missing_typed_table_dead_letters_its_batches_naming_it(setup: Setup):
    setup.sql("DROP TABLE api_gone")
    setup.api.set_items("gone", 60)
    run = setup.client.resync("api", "gone")
    assert run.state == "failed" and run.batches_failed == 2, run
    errors = [d.error for d in setup.client.progress.dead_letters(run.run_id).values()]
    assert len(errors) == 2
    for error in errors:
        assert "typed table api_gone does not exist and this role may not create it" in error
        assert f"permission denied for schema {setup.role}" in error
        assert "sluice schema --sql" in error


def test_a_missing_own_table_and_a_missing_column_name_what_to_run(setup: Setup):
    from tasks.targets.pgschema import own_tables
    from tasks.targets.postgres import PostgresTarget

    # The case of issue 20: every right on an existing entities table, no state table.
    setup.sql(own_tables("sluice_other")["sluice_other"])
    setup.sql(f"GRANT ALL ON sluice_other TO {setup.role}")
    other = PostgresTarget(setup.role_dsn, table="sluice_other")
    with pytest.raises(TargetRejected) as raised:
        other.upsert([{"identifier": "a", "kind": "k", "source": "s", "data": {}}],
                     run_id="r", run_seq=1)
    other.close()
    assert "table sluice_other_state does not exist and this role may not create it" in str(
        raised.value)
    assert "sluice schema --sql" in str(raised.value)

    target = PostgresTarget(setup.role_dsn)
    grown = Table("api_issue", {"title": "text", "n": "integer", "updated": "timestamp",
                                "extra": "integer"})
    with pytest.raises(TargetRejected) as raised:
        target.upsert_rows(grown, [{"identifier": "x", "values": {"extra": 1}, "raw": {}}],
                           run_id="r", run_seq=1)
    target.close()
    assert ("typed table api_issue lacks columns extra and this role may not add them"
            in str(raised.value))
    assert ('have its owner run: ALTER TABLE "api_issue" ADD COLUMN IF NOT EXISTS "extra"'
            " bigint" in str(raised.value))


def test_without_temporary_on_the_database_the_error_says_to_grant_it(setup: Setup):
    from tasks.targets.postgres import PostgresTarget

    (db,) = setup.sql("SELECT current_database()")[0]
    setup.sql(f'REVOKE TEMPORARY ON DATABASE "{db}" FROM PUBLIC, {setup.role}')
    target = PostgresTarget(setup.role_dsn)
    try:
        with pytest.raises(TargetRejected) as raised:
            target.upsert([{"identifier": "a", "kind": "k", "source": "s", "data": {}}],
                          run_id="r", run_seq=1)
    finally:
        target.close()
        setup.sql(f'GRANT TEMPORARY ON DATABASE "{db}" TO PUBLIC, {setup.role}')
    assert "this role may not create the temporary table COPY stages a batch in" in str(
        raised.value)
    assert "GRANT TEMPORARY ON DATABASE" in str(raised.value)


def test_a_table_named_in_capitals_is_found_without_altering_it(setup: Setup):
    """The config's ``table`` is written unquoted, so PostgreSQL folds it: its columns are
    read as the name finds the table (a role that may not alter it must not find them
    missing)."""
    from tasks.targets.pgschema import own_tables
    from tasks.targets.postgres import PostgresTarget

    setup.sql(";\n".join(own_tables("LP_Mixed").values()))
    setup.sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON lp_mixed, lp_mixed_state TO {setup.role}")
    target = PostgresTarget(setup.role_dsn, table="LP_Mixed")
    try:
        target.upsert([{"identifier": "a", "kind": "k", "source": "s", "data": {"x": 1}}],
                      run_id="r", run_seq=1)
        assert target.read("s", "k", limit=5) == [
            {"identifier": "a", "kind": "k", "source": "s", "data": {"x": 1}}]
    finally:
        target.close()
