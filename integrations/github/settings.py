"""``[sources.NAME]`` with ``integration = "github"``."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from integrations.base import ApiSettings


class Kind(StrEnum):
    repository = "repository"
    issue = "issue"
    pull_request = "pull_request"


class GithubSettings(ApiSettings):
    integration: Literal["github"]
    org: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$", description="the organisation")
    token: str = Field(min_length=1, description='a token; write "${GITHUB_TOKEN}"')
    base_url: str = "https://api.github.com"
    kinds: list[Kind] = Field(default_factory=lambda: list(Kind), min_length=1)
    state: Literal["open", "closed", "all"] = "all"
    per_page: int = Field(100, ge=1, le=100)

    def kind_names(self) -> list[str]:
        return [kind.value for kind in self.kinds]
