"""``[sources.NAME]`` with ``integration = "github"``."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from integrations.github.mappings import GithubMappings
from integrations.incremental import Duration
from integrations.settings import ApiSettings


class Kind(StrEnum):
    repository = "repository"
    issue = "issue"
    pull_request = "pull_request"
    issue_comment = "issue_comment"  # a child of issue: one request (or more) per issue


# Not issue_comment: a child kind costs one request per issue, on every run.
DEFAULT_KINDS = [Kind.repository, Kind.issue, Kind.pull_request]


class GithubSettings(ApiSettings):
    """``incremental = true``: issues and pull requests read only what changed since the
    repository's watermark (the newest ``updated_at`` a clean run saw) minus ``lookback``.
    Issues ask for it with GitHub's ``since``; pull requests, whose endpoint has no ``since``,
    are listed ``sort=updated&direction=desc`` and the paging stops at the first one older.

    Off by default: an incremental run deletes nothing, so an issue deleted or transferred
    away stays in the target until a full run (``full_every = "1d"``, ``sluice run --full``).
    Turning it on is a choice about deletions as much as about requests; a source that does
    not make it reads and deletes as before.

    ``issue_comment`` (the conversation of each issue, ``GET /repos/{owner}/{repo}/issues/
    {number}/comments``) is a child kind of ``issue``: every issue a run writes fans out to a
    request for its comments, so a repository of 10,000 issues costs 10,000 more requests per
    full run (of a budget of 5,000 an hour for a token). That is why it is not among the
    default kinds: list it, with ``issue``, to sync comments (``kinds = ["repository",
    "issue", "pull_request", "issue_comment"]``). With ``incremental = true`` only the issues
    that changed fan out (a new comment changes its issue's ``updated_at``); comments are
    deleted by full runs. Comments on pull requests are not fetched (pull requests are not
    issues here).

    ``mappings``: every kind has a default mapping (``integrations.github.mappings``), so on a
    target with typed tables its items land in ``{source}_{kind}`` with typed columns (title,
    state, author, assignee, labels, dates, the repository). A source overrides it key by key
    (``mappings = { issue = { properties = { title = ".title | ascii_downcase" } } }``), or
    turns it off (``mappings = false``, or ``{ issue = false }``): those items land whole in
    ``entities``.

    ``graphql = true``: issues and their comments come from GitHub's GraphQL API
    (``integrations.github.v4``), each page of 100 issues with the first 100 comments of
    each, so ``issue_comment`` costs a request only for an issue with more comments. The
    items are built in REST's shape, so they land in the same typed rows; a mapping of an
    issue field GraphQL is not asked for (``integrations.github.v4``) reads null. Needs
    ``issue`` among the kinds and its mapping (and ``issue_comment``'s) on."""

    integration: Literal["github"]
    org: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$", description="the organisation")
    token: str = Field(min_length=1, description='a token; write "${GITHUB_TOKEN}"')
    base_url: str = "https://api.github.com"
    kinds: list[Kind] = Field(default_factory=lambda: list(DEFAULT_KINDS), min_length=1)
    state: Literal["open", "closed", "all"] = "all"
    per_page: int = Field(100, ge=1, le=100)
    incremental: bool = Field(
        False, description="issues and pull requests: read only what changed since the last "
        "clean run (per repository); such runs delete nothing")
    # GitHub's timestamps are in seconds; the lookback covers an update committed while the
    # previous run was paging and listed later than its watermark's item.
    lookback: Duration = Field("2m", description="ask from the watermark minus this: 30s, 2m, 1h")
    graphql: bool = Field(
        False, description="issues and their comments through GitHub's GraphQL API: each "
        "page of issues brings their first comments, so comments cost a request only past "
        "those (repositories and pull requests stay on REST)")
    mappings: GithubMappings = Field(
        default_factory=GithubMappings, description="each kind's default mapping (into the "
        "typed table {source}_{kind}), overridden key by key; false: items land whole in "
        "entities")

    @model_validator(mode="after")
    def _parents(self) -> GithubSettings:
        if Kind.issue_comment in self.kinds and Kind.issue not in self.kinds:
            raise ValueError("kinds: issue_comment needs issue (the comments of each issue a "
                             "run writes are fetched)")
        if self.graphql:
            if Kind.issue not in self.kinds:
                raise ValueError("graphql: true reads issues and their comments through "
                                 "GraphQL, and kinds has no issue (drop graphql, or add issue)")
            for kind in (Kind.issue, Kind.issue_comment):
                if kind in self.kinds and self.mappings.of(kind) is None:
                    raise ValueError(
                        f"graphql: true needs mappings.{kind} (GraphQL items carry only the "
                        "fields the default mappings read, so they cannot land whole in "
                        "entities as REST's do; drop graphql, or keep the mapping)")
        return self

    def kind_names(self) -> list[str]:
        return [kind.value for kind in self.kinds]
