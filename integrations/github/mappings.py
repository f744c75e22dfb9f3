"""GitHub's default mappings: the columns each kind lands with in its typed table
``{source}_{kind}``, from the fields the REST API (v3, 2022-11-28) returns. A source overrides
them key by key, or turns them off, with ``mappings`` (``integrations.mapping.MappingOverride``).

Every expression is null-safe: a field the API leaves null or out (no assignee, no labels,
an open issue's ``closed_at``) gives a null column, never a rejected item. Every column has a
declared type, so a table's columns do not depend on the values of its first batch (a title
that looks like a date stays text).

The ``repository`` relation holds the repository's ``full_name`` (``owner/repo``, a column of
``{source}_repository``): issues and pull requests do not carry the repository's id.
"""

from __future__ import annotations

from typing import Any, ClassVar

from integrations.mapping import (
    DefaultMappings,
    MappingOverride,
    MappingSettings,
    text,
    timestamp,
    typed,
)

# owner/repo from an issue's repository_url (https://api.github.com/repos/OWNER/REPO)
REPOSITORY_OF_URL = '.repository_url | strings | capture("/repos/(?<name>[^/]+/[^/]+)/?$").name'
LABELS = typed("[.labels[]? | .name? | strings]", "json")  # [] when there are none

_COMMON: dict[str, Any] = {
    "number": typed(".number", "integer"),
    "title": text(".title"),
    "state": text(".state"),
    "author": text(".user.login"),
    "assignee": text(".assignee.login"),
    "labels": LABELS,
    "created_at": timestamp(".created_at"),
    "updated_at": timestamp(".updated_at"),
    "closed_at": timestamp(".closed_at"),
}

DEFAULTS: dict[str, MappingSettings] = {
    "repository": MappingSettings.model_validate({"properties": {
        "name": text(".name"),
        "full_name": text(".full_name"),
        "private": typed(".private", "boolean"),
        "archived": typed(".archived", "boolean"),
        "default_branch": text(".default_branch"),
        "language": text(".language"),
        "created_at": timestamp(".created_at"),
        "updated_at": timestamp(".updated_at"),
        "pushed_at": timestamp(".pushed_at"),
    }}),
    "issue": MappingSettings.model_validate({
        "properties": _COMMON,
        "relations": {"repository": REPOSITORY_OF_URL},
    }),
    "pull_request": MappingSettings.model_validate({
        "properties": {
            **_COMMON,
            "draft": typed(".draft", "boolean"),
            "merged_at": timestamp(".merged_at"),
            "base": text(".base.ref"),
            "head": text(".head.ref"),
        },
        "relations": {"repository": ".base.repo.full_name"},
    }),
    # An issue comment carries its issue's fields (GithubIntegration.with_parent).
    "issue_comment": MappingSettings.model_validate({
        "properties": {
            "body": text(".body"),
            "author": text(".user.login"),
            "issue_number": typed("._parent_number", "integer"),
            "created_at": timestamp(".created_at"),
            "updated_at": timestamp(".updated_at"),
        },
        "relations": {"issue": "._parent_id", "repository": "._parent_repository"},
    }),
}


class GithubMappings(DefaultMappings):
    """``mappings``: each kind's section merges over its default (``false``: off)."""

    DEFAULTS: ClassVar[dict[str, MappingSettings]] = DEFAULTS

    repository: MappingOverride = MappingOverride()
    issue: MappingOverride = MappingOverride()
    pull_request: MappingOverride = MappingOverride()
    issue_comment: MappingOverride = MappingOverride()
