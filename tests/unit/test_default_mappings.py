"""GitHub's and Jira's default mappings: each compiles and maps the items their fakes serve to
typed rows; nulls give null columns, never a rejection; a source overrides them key by key or
turns them off, with errors that name the key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from integrations.errors import ConfigError
from integrations.github.fake import FakeGithub
from integrations.github.integration import GithubIntegration
from integrations.github.settings import GithubSettings
from integrations.jira.fake import FakeJira
from integrations.jira.integration import JiraIntegration
from integrations.jira.mappings import DEFAULTS
from integrations.jira.settings import JiraSettings
from integrations.mapping import ColumnType, Mapping, fit
from tasks.config import parse_config
from tasks.operator.preview import first_page
from tasks.write.mapped import columns_for

GITHUB = {"integration": "github", "org": "acme", "token": "t",
          "kinds": ["repository", "issue", "pull_request", "issue_comment"]}
JIRA = {"integration": "jira", "base_url": "https://x.atlassian.net", "email": "a@b.c",
        "api_token": "t", "kinds": ["project", "issue", "comment"]}


def gh(**kw: Any) -> GithubIntegration:
    return GithubIntegration(GithubSettings.model_validate({**GITHUB, **kw}))


def jr(**kw: Any) -> JiraIntegration:
    return JiraIntegration(JiraSettings.model_validate({**JIRA, **kw}))


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    with FakeGithub(repos=2, default_size=(6, 2)) as fake:
        yield fake


@pytest.fixture
def jira() -> Iterator[FakeJira]:
    with FakeJira(projects=3, issues=4) as fake:
        yield fake


def served(integ: Any, kind: str) -> list[Any]:
    """The first page of a kind as the fake serves it (a child kind: of the first parent)."""
    return asyncio.run(first_page(integ, kind, None))


def typed(mapping: Mapping | None, items: list[Any]
          ) -> tuple[dict[str, ColumnType], dict[str, dict[str, Any]]]:
    """The columns and the rows (by identifier) a batch lands as; nothing may be rejected."""
    assert mapping is not None
    mapped = mapping.map(items)
    assert not mapped.rejected and not mapped.skipped
    columns = columns_for(mapping, {}, mapped.rows)
    return columns, {i: {n: fit(v.get(n), t) for n, t in columns.items()}
                     for _, i, v, _ in mapped.rows}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_every_kind_has_a_default_mapping_that_compiles():
    github, jira = gh(), jr()
    assert all(github.mapping(k) is not None for k in github.kinds())
    assert all(jira.mapping(k) is not None for k in jira.kinds())
    issue, jira_issue = github.mapping_settings("issue"), jira.mapping_settings("issue")
    assert issue is not None and list(issue.relations) == ["repository"]
    assert jira_issue is not None and jira_issue.relations == {"project": ".fields.project.key"}
    # Every column is declared: its type does not depend on the first batch's values.
    for integ in (github, jira):
        for kind in integ.kinds():
            settings = integ.mapping_settings(kind)
            assert settings is not None
            assert None not in settings.declared().values(), kind


def test_github_defaults_map_the_items_the_fake_serves(github: FakeGithub):
    integ = gh(base_url=github.url, token=github.token)
    repos = served(integ, "repository")
    columns, rows = typed(integ.mapping("repository"), repos)
    assert columns == {"name": "text", "full_name": "text", "private": "boolean",
                       "archived": "boolean", "default_branch": "text", "language": "text",
                       "created_at": "timestamp", "updated_at": "timestamp",
                       "pushed_at": "timestamp"}
    assert rows["1000"] == {"name": "repo0", "full_name": "acme/repo0", "private": False,
                            "archived": False, "default_branch": "main", "language": "Python",
                            "created_at": utc("2024-01-01T00:00:00+00:00"),
                            "updated_at": utc("2024-01-01T00:00:00+00:00"),
                            "pushed_at": utc("2024-01-01T00:00:00+00:00")}
    assert rows["1001"]["language"] is None

    _, issues = typed(integ.mapping("issue"), served(integ, "issue"))
    assert set(issues) == {str(5_000_000 + n) for n in range(1, 7)}  # no pull request
    assert issues["5000003"] == {
        "number": 3, "title": "Issue 3", "state": "open", "author": "octocat",
        "assignee": "monalisa", "labels": ["bug"],
        "created_at": utc("2024-01-01T00:03:00+00:00"),
        "updated_at": utc("2024-01-01T00:03:00+00:00"), "closed_at": None,
        "repository": "acme/repo0"}
    assert (issues["5000001"]["assignee"], issues["5000001"]["labels"]) == (None, [])

    _, pulls = typed(integ.mapping("pull_request"), served(integ, "pull_request"))
    assert pulls["5000008"] == {
        "number": 8, "title": "PR 8", "state": "open", "author": "octocat", "assignee": None,
        "labels": [], "created_at": utc("2024-01-01T00:08:00+00:00"),
        "updated_at": utc("2024-01-01T00:08:00+00:00"), "closed_at": None, "draft": True,
        "merged_at": None, "base": "main", "head": "topic-8", "repository": "acme/repo0"}

    columns, comments = typed(integ.mapping("issue_comment"), served(integ, "issue_comment"))
    assert columns["issue_number"] == "integer" and columns["issue"] == "text"
    assert comments[str(7_000_000_000 + 1_000)] == {
        "body": "comment 0 on acme/repo0#1", "author": "hubot", "issue_number": 1,
        "created_at": utc("2024-01-01T00:01:00+00:00"),
        "updated_at": utc("2024-01-01T00:01:00+00:00"),
        "issue": "5000001", "repository": "acme/repo0"}  # the issue's identifier, as text


def test_jira_defaults_map_the_items_the_fake_serves(jira: FakeJira):
    integ = jr(base_url=jira.url, api_token=jira.token, email=jira.email)
    _, projects = typed(integ.mapping("project"), served(integ, "project"))
    assert projects["10001"] == {"key": "P1", "name": "Project 1", "project_type": "software"}

    columns, issues = typed(integ.mapping("issue"), served(integ, "issue"))
    assert columns["created"] == columns["updated"] == "timestamp"
    assert issues["20003"] == {
        "key": "P3-3", "summary": "Issue 3", "status": "To Do", "issue_type": "Task",
        "assignee": "Ada Lovelace", "created": utc("2026-11-01T10:00:00+00:00"),
        "updated": utc("2026-11-20T09:57:00+00:00"), "project": "P3"}
    assert issues["20001"]["assignee"] is None  # unassigned: null in the API

    columns, comments = typed(integ.mapping("comment"), served(integ, "comment"))
    assert columns["body"] == "json" and columns["text"] == "text"
    first = comments["1000000"]  # comment 0 of issue 0
    assert first["text"] == "comment 0 on issue 0" and first["body"]["type"] == "doc"
    assert (first["author"], first["issue_key"], first["issue"]) == ("Mia Krystof", "P0-0",
                                                                     "20000")
    assert first["created"] == utc("2026-11-20T10:00:00+00:00")


def test_nulls_and_missing_fields_give_null_columns_never_a_rejection():
    github, jira = gh(), jr()
    bare = {"id": 1, "labels": None, "user": None, "assignee": None, "base": None}
    for kind in github.kinds():
        _, rows = typed(github.mapping(kind), [bare, {"id": 2}])
        assert rows["1"].get("labels") in (None, [])  # [] for the kinds that have labels
        assert all(v is None for k, v in rows["2"].items() if k != "labels"), kind
    _, rows = typed(github.mapping("issue"), [{"id": 3, "repository_url": "not a url"}])
    assert rows["3"]["repository"] is None
    for kind in jira.kinds():
        _, rows = typed(jira.mapping(kind), [{"id": "1", "fields": None, "body": None},
                                             {"id": "2", "fields": {"assignee": None}}])
        assert all(v is None for row in rows.values() for v in row.values()), kind
    # Comment bodies: a v2 string as it is; an ADF document, a line per block.
    doc = {"type": "doc", "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "a "},
                                          {"type": "text", "text": "b"}]},
        {"type": "bulletList", "content": [{"type": "listItem", "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "c"}]}]}]},
        {"type": "rule"}]}
    _, rows = typed(jira.mapping("comment"), [
        {"id": "1", "body": "plain"}, {"id": "2", "body": doc}, {"id": "3", "body": {}}])
    assert [rows[i]["text"] for i in "123"] == ["plain", "a b\nc", None]


def test_a_closed_issue_and_a_merged_pull_request_as_github_documents_them():
    issue = {"id": 1, "number": 1347, "state": "closed", "title": "Found a bug",
             "user": {"login": "octocat"}, "assignee": {"login": "octocat"},
             "labels": [{"id": 208045946, "name": "bug"}, {"name": "good first issue"}],
             "created_at": "2011-04-22T13:33:48Z", "updated_at": "2011-04-22T13:33:48Z",
             "closed_at": "2011-04-23T09:01:00Z",
             "repository_url": "https://api.github.com/repos/octocat/Hello-World"}
    _, rows = typed(gh().mapping("issue"), [issue])
    assert rows["1"]["closed_at"] == utc("2011-04-23T09:01:00+00:00")
    assert rows["1"]["labels"] == ["bug", "good first issue"]
    assert rows["1"]["repository"] == "octocat/Hello-World"
    pull = {"id": 2, "number": 1347, "state": "closed", "draft": False,
            "merged_at": "2011-01-26T19:01:12Z", "head": {"ref": "new-topic"},
            "base": {"ref": "master", "repo": {"full_name": "octocat/Hello-World"}}}
    _, rows = typed(gh().mapping("pull_request"), [pull])
    assert (rows["2"]["draft"], rows["2"]["merged_at"], rows["2"]["base"], rows["2"]["head"],
            rows["2"]["repository"]) == (False, utc("2011-01-26T19:01:12+00:00"), "master",
                                         "new-topic", "octocat/Hello-World")


def test_a_source_overrides_a_default_key_by_key():
    default = gh().mapping_settings("issue")
    integ = gh(mappings={"issue": {
        "properties": {"title": ".title | ascii_downcase", "labels": False,
                       "comments": {"jq": ".comments", "type": "integer"}},
        "relations": {"milestone": ".milestone.number"},
        "selector": '.state != "deleted"', "table": "gh_issues", "schema": "freeze"}})
    settings = integ.mapping_settings("issue")
    assert default is not None and settings is not None
    assert settings.properties["title"] == ".title | ascii_downcase"  # replaced whole
    assert "labels" not in settings.properties  # false removes it
    assert settings.properties["comments"].type == "integer"
    # The other properties and the default relation stay.
    assert {k: v for k, v in settings.properties.items() if k not in ("title", "comments")} == {
        k: v for k, v in default.properties.items() if k not in ("title", "labels")}
    assert settings.relations == {**default.relations, "milestone": ".milestone.number"}
    assert (settings.selector, settings.table, settings.schema_mode) == (
        '.state != "deleted"', "gh_issues", "freeze")
    assert settings.identifier is None and default.table is None  # not given: the default's
    assert integ.mapping_settings("pull_request") == gh().mapping_settings("pull_request")
    _, rows = typed(integ.mapping("issue"), [{"id": 9, "title": "LOUD", "comments": 4,
                                              "user": {"login": "x"}}])
    assert (rows["9"]["title"], rows["9"]["comments"], rows["9"]["author"]) == ("loud", 4, "x")

    jira = jr(mappings={"issue": {"relations": {"project": False},
                                  "properties": {"project_id": ".fields.project.id"}}})
    jira_issue = jira.mapping_settings("issue")
    assert jira_issue is not None and jira_issue.relations == {}
    assert jira_issue.properties["project_id"] == ".fields.project.id"
    assert set(jira_issue.properties) - {"project_id"} == set(DEFAULTS["issue"].properties)


def test_mappings_turned_off_land_items_whole():
    off = gh(mappings=False)
    assert all(off.mapping_settings(k) is None and off.mapping(k) is None for k in off.kinds())
    some = jr(mappings={"comment": False, "project": True})
    assert some.mapping("comment") is None
    assert some.mapping("project") is not None and some.mapping("issue") is not None
    assert jr(mappings={"issue": {"enabled": False}}).mapping("issue") is None
    assert gh(mappings=True).mapping_settings("issue") == gh().mapping_settings("issue")


@pytest.mark.parametrize(("mappings", "error"), [
    ({"isue": {}}, "sources.gh.mappings.isue: unknown key"),
    ({"issue": {"propertys": {}}}, "sources.gh.mappings.issue.propertys: unknown key"),
    ({"issue": {"properties": {"titel": False}}},
     "sources.gh.mappings.issue.properties.titel: false removes a default column, and there is "
     "none named 'titel' (defaults: number, title,"),
    ({"issue": {"properties": {"title": ".title |"}}},
     "sources.gh.mappings.issue.properties.title: '.title |' is not valid jq"),
    ({"issue_comment": {"relations": {"issue": ". as"}}},
     "sources.gh.mappings.issue_comment.relations.issue: '. as' is not valid jq"),
    ({"issue": {"properties": {"title": " "}}},
     "sources.gh.mappings.issue.properties.title: an empty expression"),
    ({"issue": {"schema": "frozen"}}, "sources.gh.mappings.issue.schema: Input should be"),
    ({"issue": 3}, "sources.gh.mappings.issue: Input should be a valid dictionary"),
])
def test_bad_mappings_are_errors_naming_their_key(mappings: Any, error: str):
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": {"gh": {**GITHUB, "mappings": mappings}}}, Path("s.toml"))
    assert error in str(caught.value)


def test_rest_mapping_errors_keep_their_key_path():
    section = {"integration": "rest", "base_url": "https://x", "kinds": {
        "k": {"path": "/k", "mapping": {"properties": {"t": ".t |"}}}}}
    with pytest.raises(ConfigError, match=r"sources\.api\.kinds\.k\.mapping\.properties\.t: "
                                          r"'\.t \|' is not valid jq"):
        parse_config({"sources": {"api": section}}, Path("s.toml"))
