"""``[sources.NAME]`` with ``integration = "jira"``."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from integrations.incremental import Duration
from integrations.jira.mappings import JiraMappings
from integrations.settings import ApiSettings

DEFAULT_FIELDS = ["summary", "status", "issuetype", "project", "assignee", "created", "updated"]


class Kind(StrEnum):
    project = "project"
    issue = "issue"
    comment = "comment"  # a child of issue: one request (or more) per issue


# Not comment: a child kind costs one request per issue, on every run.
DEFAULT_KINDS = [Kind.project, Kind.issue]


class JiraSettings(ApiSettings):
    """``incremental = true``: issues read only what changed since the watermark (the newest
    ``fields.updated`` a clean run saw) minus ``lookback``: the JQL becomes
    ``updated >= "yyyy-MM-dd HH:mm" AND (jql without its ORDER BY) ORDER BY updated DESC``.
    Projects are always read whole.

    JQL dates have minute precision: the time is rounded down to its minute, so the window
    only ever grows. They are read in the time zone of the API account's profile, the one in
    which Jira writes ``updated`` (``...T10:00:00.000+0100``): the JQL time is that value's own
    wall-clock time, in its own offset. The lookback (5m) covers updates the search index
    shows late (Jira Cloud's search is eventually consistent) and a run's own clock.

    Off by default, like GitHub's: an incremental run deletes nothing, so an issue deleted,
    moved out of the JQL or out of the account's sight stays in the target until a full run
    (``full_every = "1d"``, ``sluice run --full``).

    ``comment`` (``GET /rest/api/3/issue/{key}/comment``) is a child kind of ``issue``: every
    issue a run writes fans out to a request for its comments (``min(page_size, 100)`` a
    page), so a JQL selecting 20,000 issues costs 20,000 more requests per full run. That is
    why it is not among the default kinds: list it, with ``issue``, to sync comments
    (``kinds = ["project", "issue", "comment"]``). With ``incremental = true`` only the issues
    that changed fan out (a new comment changes its issue's ``updated``); comments are
    deleted by full runs.

    ``mappings``: every kind has a default mapping (``integrations.jira.mappings``), so on a
    target with typed tables its items land in ``{source}_{kind}`` with typed columns (key,
    summary, status, assignee, dates, the project). A source overrides it key by key, or turns
    it off (``mappings = false``, or ``{ comment = false }``): those items land whole in
    ``entities``."""

    integration: Literal["jira"]
    base_url: str = Field(description="https://YOUR-SITE.atlassian.net")
    email: str = Field(min_length=3, description="the account the API token belongs to")
    api_token: str = Field(min_length=1, description='write "${JIRA_API_TOKEN}"')
    kinds: list[Kind] = Field(default_factory=lambda: list(DEFAULT_KINDS), min_length=1)
    # /search/jql refuses unbounded queries: the default looks back 30 days.
    jql: str = Field("updated >= -30d ORDER BY updated DESC", min_length=1)
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS), min_length=1)
    page_size: int = Field(100, ge=1, le=5000)
    incremental: bool = Field(
        False, description="issues: read only what changed since the last clean run (by "
        "'updated' in the JQL); such runs delete nothing")
    lookback: Duration = Field("5m", description="ask from the watermark minus this: 30s, 5m, 1h")
    mappings: JiraMappings = Field(
        default_factory=JiraMappings, description="each kind's default mapping (into the "
        "typed table {source}_{kind}), overridden key by key; false: items land whole in "
        "entities")

    @model_validator(mode="after")
    def _updated(self) -> JiraSettings:
        if self.incremental and "updated" not in self.fields:
            raise ValueError("incremental = true needs 'updated' in fields (the watermark is "
                             "the newest fields.updated)")
        return self

    @model_validator(mode="after")
    def _parents(self) -> JiraSettings:
        if Kind.comment in self.kinds and Kind.issue not in self.kinds:
            raise ValueError("kinds: comment needs issue (the comments of each issue a run "
                             "writes are fetched)")
        return self

    def kind_names(self) -> list[str]:
        return [kind.value for kind in self.kinds]
