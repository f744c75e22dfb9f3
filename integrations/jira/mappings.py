"""Jira's default mappings: the columns each kind lands with in its typed table
``{source}_{kind}``, from the fields REST API v3 returns (an issue's are those of ``fields``
in the source settings: one left out there gives a null column). A source overrides them key
by key, or turns them off, with ``mappings`` (``integrations.mapping.MappingOverride``).

Every expression is null-safe (an unassigned issue's ``assignee`` is null) and every column
has a declared type. The ``project`` relation holds the project's ``key`` (a column of
``{source}_project``), as people and JQL name projects; a comment's ``issue`` relation holds
its issue's id (the identifier of ``{source}_issue``).
"""

from __future__ import annotations

from typing import ClassVar

from integrations.mapping import (
    DefaultMappings,
    MappingOverride,
    MappingSettings,
    text,
    timestamp,
    typed,
)

# The text of a v3 body (Atlassian Document Format): its text nodes, a line per top-level
# block that has text; a plain string (v2) as it is; null when there is none.
BODY_TEXT = ('.body | if type == "string" then . else [objects | .content[]? | '
             '[.. | objects | select(.type == "text") | .text | strings] | join("") '
             '| select(. != "")] | join("\\n") end | select(. != "")')

DEFAULTS: dict[str, MappingSettings] = {
    "project": MappingSettings.model_validate({"properties": {
        "key": text(".key"),
        "name": text(".name"),
        "project_type": text(".projectTypeKey"),
    }}),
    "issue": MappingSettings.model_validate({
        "properties": {
            "key": text(".key"),
            "summary": text(".fields.summary"),
            "status": text(".fields.status.name"),
            "issue_type": text(".fields.issuetype.name"),
            "assignee": text(".fields.assignee.displayName"),
            "created": timestamp(".fields.created"),
            "updated": timestamp(".fields.updated"),
        },
        "relations": {"project": ".fields.project.key"},
    }),
    # A comment carries its issue's key and id (JiraIntegration.with_parent).
    "comment": MappingSettings.model_validate({
        "properties": {
            "body": typed(".body", "json"),
            "text": text(BODY_TEXT),
            "author": text(".author.displayName"),
            "issue_key": text("._parent_key"),
            "created": timestamp(".created"),
            "updated": timestamp(".updated"),
        },
        "relations": {"issue": "._parent_id"},
    }),
}


class JiraMappings(DefaultMappings):
    """``mappings``: each kind's section merges over its default (``false``: off)."""

    DEFAULTS: ClassVar[dict[str, MappingSettings]] = DEFAULTS

    project: MappingOverride = MappingOverride()
    issue: MappingOverride = MappingOverride()
    comment: MappingOverride = MappingOverride()
