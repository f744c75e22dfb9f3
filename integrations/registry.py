"""Which integration serves ``integration = "..."`` in sluice.toml."""

from __future__ import annotations

from integrations.base import Integration, SourceSettings
from integrations.github.integration import GithubIntegration
from integrations.github.settings import GithubSettings
from integrations.jira.integration import JiraIntegration
from integrations.jira.settings import JiraSettings
from integrations.rest.integration import RestIntegration
from integrations.rest.settings import RestSettings

# integration name -> (its settings model, its class)
INTEGRATIONS: dict[str, tuple[type[SourceSettings], type]] = {
    "rest": (RestSettings, RestIntegration),
    "github": (GithubSettings, GithubIntegration),
    "jira": (JiraSettings, JiraIntegration),
}
SETTINGS: dict[str, type[SourceSettings]] = {name: s for name, (s, _) in INTEGRATIONS.items()}


def load(settings: SourceSettings) -> Integration:
    """The integration for validated source settings."""
    _, cls = INTEGRATIONS[settings.integration]
    integration: Integration = cls(settings)
    return integration
