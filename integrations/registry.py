"""Which integration serves ``integration = "..."`` in sluice.toml."""

from __future__ import annotations

from integrations.base import Integration, SourceSettings
from integrations.rest.integration import RestIntegration
from integrations.rest.settings import RestSettings

# Each entry: the settings model (validated from the source's section) and the class.
SETTINGS: dict[str, type[SourceSettings]] = {"rest": RestSettings}


def load(settings: SourceSettings) -> Integration:
    """The integration for validated source settings."""
    if isinstance(settings, RestSettings):
        return RestIntegration(settings)
    raise TypeError(f"no integration for {type(settings).__name__}")
