"""Which integration serves ``integration = "..."`` in sluice.toml.

An integration class registers itself, with the settings model it is generic over:

    @register("github")
    class GithubIntegration(PagedIntegration[GithubSettings]): ...

Importing this module imports ``integrations/NAME/integration.py`` of every package NAME, so
``SETTINGS`` and ``load`` know every integration without a list to edit.
"""

from __future__ import annotations

import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, TypeVar

from integrations.base import Integration
from integrations.settings import SourceSettings


@dataclass(frozen=True)
class Registered:
    settings: type[SourceSettings]
    # The integration class: called with settings of the type above.
    factory: Callable[[Any], Integration]


INTEGRATIONS: dict[str, Registered] = {}
SETTINGS: dict[str, type[SourceSettings]] = {}  # integration name -> its settings model

C = TypeVar("C", bound=Callable[[Any], Integration])


def register(name: str, settings: type[SourceSettings] | None = None) -> Callable[[C], C]:
    """A class decorator: the class serves ``integration = "name"``, configured by
    ``settings`` (default: the settings model of its generic base, as in
    ``PagedIntegration[GithubSettings]``). The settings model must accept that name."""
    def decorate(cls: C) -> C:
        model = settings or _settings_of(cls)
        accepted = typing.get_args(model.model_fields["integration"].annotation)
        if accepted != (name,):
            raise TypeError(f"{model.__name__}.integration must be Literal[{name!r}] for "
                            f"@register({name!r})")
        if name in INTEGRATIONS and _path(INTEGRATIONS[name].factory) != _path(cls):
            raise TypeError(f"integration {name!r} is registered twice: by "
                            f"{_path(INTEGRATIONS[name].factory)} and {_path(cls)}")
        INTEGRATIONS[name] = Registered(model, cls)
        SETTINGS[name] = model
        return cls
    return decorate


def _settings_of(cls: object) -> type[SourceSettings]:
    """The SourceSettings subclass that ``cls`` (or a base of it) is generic over."""
    for klass in getattr(cls, "__mro__", ()):
        for base in getattr(klass, "__orig_bases__", ()):
            for arg in typing.get_args(base):
                if isinstance(arg, type) and issubclass(arg, SourceSettings):
                    return arg
    raise TypeError(f"{cls!r} names no settings model: pass it, @register(name, settings=...)")


def _path(cls: object) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"


def load(settings: SourceSettings) -> Integration:
    """The integration for validated source settings."""
    return INTEGRATIONS[settings.integration].factory(settings)


def _import_integrations() -> None:
    """Import each ``integrations/NAME/integration.py``: its class registers on import."""
    here = Path(__file__).parent
    for package in pkgutil.iter_modules([str(here)]):
        if package.ispkg and (here / package.name / "integration.py").is_file():
            import_module(f"integrations.{package.name}.integration")


_import_integrations()
