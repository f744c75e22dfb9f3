"""Integrations register themselves by decorator; paginators are built from the type -> class
map by their settings sections."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from integrations import registry
from integrations.github.integration import GithubIntegration
from integrations.github.settings import GithubSettings, Kind
from integrations.http.graphql import GraphqlPaginator
from integrations.http.paginators import PAGINATORS, SinglePage
from integrations.jira.integration import JiraIntegration
from integrations.jira.settings import JiraSettings
from integrations.paged import PagedIntegration
from integrations.rest.integration import RestIntegration
from integrations.rest.settings import AnyPagination, KindSettings, RestSettings
from integrations.settings import ApiSettings


class ToySettings(ApiSettings):
    integration: Literal["toy"]

    def kind_names(self) -> list[str]:
        return ["thing"]


@pytest.fixture
def clean_registry() -> Iterator[None]:
    integrations, settings = dict(registry.INTEGRATIONS), dict(registry.SETTINGS)
    yield
    registry.INTEGRATIONS.clear()
    registry.INTEGRATIONS.update(integrations)
    registry.SETTINGS.clear()
    registry.SETTINGS.update(settings)


def test_the_built_in_integrations_register_themselves_with_their_settings():
    built_in = {"rest": RestSettings, "github": GithubSettings, "jira": JiraSettings}
    assert built_in == registry.SETTINGS
    gh = GithubSettings.model_validate({"integration": "github", "org": "acme", "token": "t"})
    loaded = registry.load(gh)
    assert isinstance(loaded, GithubIntegration) and loaded.settings is gh
    # issue_comment, a child kind of one request per issue, is listed only when wanted.
    assert loaded.kinds() == ["repository", "issue", "pull_request"] == list(Kind)[:3]
    assert all(type(kind) is str for kind in loaded.kinds())  # plain names for keys and JSON
    jira = JiraSettings.model_validate({"integration": "jira", "base_url": "https://x",
                                        "email": "a@b.c", "api_token": "t"})
    assert isinstance(registry.load(jira), JiraIntegration)
    assert registry.INTEGRATIONS["rest"].factory is RestIntegration


def test_a_decorated_class_serves_its_name_with_the_settings_it_is_generic_over(clean_registry):
    @registry.register("toy")
    class Toy(PagedIntegration[ToySettings]):
        pass

    assert registry.SETTINGS["toy"] is ToySettings
    toy = registry.load(ToySettings.model_validate({"integration": "toy", "base_url": "http://t"}))
    assert isinstance(toy, Toy) and toy.kinds() == ["thing"]


def test_a_name_the_settings_do_not_accept_or_a_name_taken_is_refused(clean_registry):
    with pytest.raises(TypeError, match=r"ToySettings.integration must be Literal\['game'\]"):
        @registry.register("game")
        class Game(PagedIntegration[ToySettings]):
            pass

    with pytest.raises(TypeError, match="'github' is registered twice"):
        @registry.register("github")
        class Other(PagedIntegration[GithubSettings]):
            pass
    assert registry.INTEGRATIONS["github"].factory is GithubIntegration


def _union_tags() -> set[str]:
    union, _field = typing.get_args(AnyPagination)
    return {tag for model in typing.get_args(union)
            for tag in typing.get_args(model.model_fields["type"].annotation)}


def test_every_paginator_type_has_a_settings_model_that_builds_its_class():
    # graphql's class lives beside it (integrations.http.graphql), built by its own model.
    built = {**PAGINATORS, "graphql": GraphqlPaginator}
    assert set(built) == _union_tags()
    for name, cls in built.items():
        section: dict[str, Any] = {"type": name}
        section |= {"cursor": {"cursor_path": "next"}, "next_url": {"path": "next"},
                    "keyset": {"param": "after", "field": "id"},
                    "graphql": {"query": "query($after: String) { x }",
                                "connection_path": "data.x"}}.get(name, {})
        kind = KindSettings.model_validate({"path": "/k", "params": {"q": 1},
                                            "paginator": section})
        paginator = kind.paginator.build(kind.path, kind.params)
        assert type(paginator) is cls and paginator.path == "/k"
        assert paginator.params["q"] == 1
    assert type(KindSettings(path="/k").paginator.build("/k", {})) is SinglePage


def test_an_unknown_paginator_type_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ValidationError) as err:
        RestSettings.model_validate(
            {"integration": "rest", "base_url": "http://x",
             "kinds": {"k": {"path": "/k", "paginator": {"type": "links"}}}})
    message = str(err.value)
    assert "kinds.k.paginator" in message and "'links'" in message
    assert ("'cursor', 'graphql', 'keyset', 'link', 'next_url', 'offset', 'page', 'single'"
            in message)
