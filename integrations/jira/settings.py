"""``[sources.NAME]`` with ``integration = "jira"``."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from integrations.base import ApiSettings

DEFAULT_FIELDS = ["summary", "status", "issuetype", "project", "assignee", "created", "updated"]


class Kind(StrEnum):
    project = "project"
    issue = "issue"


class JiraSettings(ApiSettings):
    integration: Literal["jira"]
    base_url: str = Field(description="https://YOUR-SITE.atlassian.net")
    email: str = Field(min_length=3, description="the account the API token belongs to")
    api_token: str = Field(min_length=1, description='write "${JIRA_API_TOKEN}"')
    kinds: list[Kind] = Field(default_factory=lambda: list(Kind), min_length=1)
    # /search/jql refuses unbounded queries: the default looks back 30 days.
    jql: str = Field("updated >= -30d ORDER BY updated DESC", min_length=1)
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS), min_length=1)
    page_size: int = Field(100, ge=1, le=5000)

    def kind_names(self) -> list[str]:
        return [kind.value for kind in self.kinds]
