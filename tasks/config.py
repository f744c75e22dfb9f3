"""sluice.toml: loaded, ``${NAME}``-expanded and validated once, with errors that name the file
and the key path.

    [target]                      # sqlite (default) | postgres | http
    [sources.NAME]                # integration = "rest" | ...; the rest is the integration's
    [sources.NAME.kinds.KIND]
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from datetime import timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from integrations.errors import ConfigError
from integrations.mapping import MappingError
from integrations.registry import SETTINGS, load
from integrations.secrets import Redactor
from integrations.settings import SourceSettings, StrictModel
from tasks.digest import config_digest
from tasks.settings import get_settings


class SqliteConfig(StrictModel):
    type: Literal["sqlite"] = "sqlite"
    path: str = "sluice.db"


class PostgresConfig(StrictModel):
    type: Literal["postgres"]
    dsn: str
    table: str = Field("sluice_entities", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class HttpConfig(StrictModel):
    type: Literal["http"]
    url: str = Field(description="POST {'entities': [...]} per batch; {kind} and {source} expand")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(30.0, gt=0, description="seconds for each connect, write and read")
    deadline: float = Field(120.0, gt=0, description="seconds for one POST whole")


TargetSettings = Annotated[SqliteConfig | PostgresConfig | HttpConfig, Field(discriminator="type")]
_TARGET = TypeAdapter(TargetSettings)


class Schedule(NamedTuple):
    """When beat starts runs of a source: ``when`` is a celery crontab or a timedelta;
    ``full``: the runs read everything (incremental kinds too) and may delete."""

    when: Any
    full: bool = False


class SluiceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: Path
    target: SqliteConfig | PostgresConfig | HttpConfig
    sources: dict[str, SourceSettings]
    # Values taken from the environment (``${NAME}``): redacted wherever Sluice writes.
    secrets: frozenset[str] = frozenset()
    # sha256 of the file's text: a run records the digest it was started with.
    digest: str = ""
    # source -> when beat starts its runs (see schedule_of)
    schedules: dict[str, list[Schedule]] = Field(default_factory=dict)

    @cached_property
    def redactor(self) -> Redactor:
        """Built once per configuration (it compiles one pattern of every secret's forms)."""
        return Redactor(self.secrets)

    def run_kinds(self, source: str, wanted: list[str] | None = None) -> list[str]:
        """The kinds to start runs of: every kind that is read on its own (a child kind runs
        with its parent, in the parent's run), or the ``wanted`` ones (a child kind: its
        parent)."""
        integration = load(self.source(source))
        kinds: list[str] = []
        for kind in wanted or self.source(source).kind_names():
            root = integration.parent(kind) or kind
            if root not in kinds:
                kinds.append(root)
        return kinds

    def source(self, name: str) -> SourceSettings:
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ConfigError(f"{self.path}: no source {name!r} (sources: {known})") from None

    def kinds_to_run(self, source: str, wanted: list[str] | None = None) -> list[str]:
        """``run_kinds``, after checking that the source has every ``wanted`` kind (what
        ``sluice run`` and its start request on a worker both check)."""
        known = self.source(source).kind_names()
        for kind in wanted or []:
            if kind not in known:
                raise ConfigError(f"{self.path}: source {source!r} has no kind {kind!r}"
                                  f" (kinds: {', '.join(known)})")
        return self.run_kinds(source, wanted)


_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # names end up in Redis keys and metric labels


_EVERY = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def schedule_of(source: SourceSettings) -> list[Schedule]:
    """When beat starts the source's runs (``schedule`` or ``every``; ``full_schedule`` or
    ``full_every``). The one place schedules are checked: raises ValueError naming the key
    (sluice.toml is checked with it, so beat never meets a bad one)."""
    found = []
    for cron_key, every_key, full in (("schedule", "every", False),
                                      ("full_schedule", "full_every", True)):
        cron, every = getattr(source, cron_key), getattr(source, every_key)
        if cron is not None and every is not None:
            raise ValueError(f"{cron_key}: set either {cron_key!r} (cron) or {every_key!r}, "
                             "not both")
        if cron is not None:
            found.append(Schedule(_crontab(cron_key, cron), full))
        elif every is not None:
            found.append(Schedule(_interval(every_key, every), full))
    return found


def _crontab(key: str, text: str) -> Any:
    from celery.schedules import crontab

    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"{key}: {text!r} is not a 5-field cron string "
                         "('minute hour day-of-month month day-of-week')")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                       month_of_year=month_of_year, day_of_week=day_of_week)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _interval(key: str, text: str) -> timedelta:
    match = _EVERY.match(text)
    if not match:
        raise ValueError(f"{key}: {text!r} is not an interval like 30s, 15m, 2h, 1d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(node: Any, path: str, problems: list[str], secrets: set[str]) -> Any:
    """Replace ``${NAME}`` in every string with the environment variable NAME; every value
    used is added to ``secrets``."""
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else k, problems, secrets)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", problems, secrets) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                problems.append(f"{path}: environment variable {name} is not set")
                return ""
            secrets.add(os.environ[name])
            return os.environ[name]

        return _VAR.sub(sub, node)
    return node


def _key_path(raw: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys of ``loc`` as the user wrote them: a union's tag (not in the file) is dropped."""
    parts, node = [], raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # pydantic names the member of a tagged union; the file does not
        parts.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return parts


# A validator's message that starts with the key it is about: ``issue.properties.x: ...``.
_KEYED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*: ")


def _describe(exc: ValidationError, prefix: tuple[Any, ...], raw: Any) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join([*map(str, prefix), *_key_path(raw, err["loc"])])
        reason = str(err.get("ctx", {}).get("error", "")) if err["type"] == "value_error" else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key")
        elif _KEYED.match(reason):  # the key path goes on: sources.gh.mappings.issue.…
            lines.append(f"{loc}.{reason}")
        else:
            got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
            lines.append(f"{loc}: {err['msg']}{got}")
    return lines


def parse_config(raw: dict[str, Any], path: Path, *, digest: str = "") -> SluiceConfig:
    """Validate a decoded sluice.toml. Raises ConfigError listing every problem."""
    problems: list[str] = []
    secrets: set[str] = set()
    raw = _expand(raw, "", problems, secrets)
    for key in raw:
        if key not in ("target", "sources"):
            problems.append(f"{key}: unknown key (expected 'target' and 'sources')")
    target = _target(raw.get("target"), path, problems)
    sources: dict[str, SourceSettings] = {}
    schedules: dict[str, list[Schedule]] = {}
    tables: dict[str, str] = {}  # mapped kinds' tables -> the kind that owns each
    raw_sources = raw.get("sources")
    if not isinstance(raw_sources, dict) or not raw_sources:
        problems.append("sources: at least one [sources.NAME] section is required")
        raw_sources = {}
    for name, section in raw_sources.items():
        source = _source(name, section, problems, tables)
        if source is None:
            continue
        sources[name] = source
        if source.keeps_secrets() and not os.environ.get("SLUICE_SECRET_KEY"):
            problems.append(f"sources.{name}.auth: oauth2_refresh_token needs SLUICE_SECRET_KEY "
                            "in the environment of every worker (the rotated refresh tokens "
                            "are kept encrypted with it)")
        try:
            schedules[name] = schedule_of(source)
        except ValueError as exc:
            problems.append(f"sources.{name}.{exc}")
    if problems:
        # A refused value is quoted ("got ..."): one from the environment is a secret.
        raise ConfigError(f"{path}: invalid configuration:\n  "
                          + Redactor(secrets).text("\n  ".join(problems)))
    return SluiceConfig(path=path, target=target, sources=sources, secrets=frozenset(secrets),
                        digest=digest, schedules=schedules)


def _target(raw: Any, path: Path, problems: list[str]) -> Any:
    """The [target] section (SQLite by default, its path relative to the file's folder)."""
    target_raw = dict(raw or {})
    target_raw.setdefault("type", "sqlite")
    target: Any = None
    try:
        target = _TARGET.validate_python(target_raw)
    except ValidationError as exc:
        problems += _describe(exc, ("target",), target_raw)
    if isinstance(target, PostgresConfig) and importlib.util.find_spec("psycopg") is None:
        problems.append("target.type: the postgres target needs psycopg, which is not "
                        "installed: pip install 'psycopg[binary]' (in a source checkout of "
                        "Sluice: pip install -e '.[postgres]')")
    if isinstance(target, SqliteConfig) and not Path(target.path).is_absolute():
        target = target.model_copy(update={"path": str(path.parent.resolve() / target.path)})
    return target


def _source(name: str, section: Any, problems: list[str], tables: dict[str, str]
            ) -> SourceSettings | None:
    """A [sources.NAME] section validated by its integration's settings model; its mappings
    compiled, and their tables added to ``tables`` (table -> the kind that owns it: two mapped
    kinds writing one table would overwrite each other's rows, and one's stale deletion would
    take the other's)."""
    if not isinstance(section, dict):
        problems.append(f"sources.{name}: must be a table")
        return None
    integration = section.get("integration")
    model = SETTINGS.get(integration) if isinstance(integration, str) else None
    if model is None:
        known = ", ".join(sorted(SETTINGS))
        problems.append(f"sources.{name}.integration: missing (one of: {known})"
                        if integration is None else
                        f"sources.{name}.integration: {integration!r} is not one of: {known}")
        return None
    try:
        source = model.model_validate(section)
    except ValidationError as exc:
        problems += _describe(exc, ("sources", name), section)
        return None
    if not _NAME.match(name):
        problems.append(f"sources.{name}: a source name may hold letters, digits, '_', '-'")
    integration = load(source)
    for kind in source.kind_names():
        if not _NAME.match(kind):
            problems.append(f"sources.{name}.kinds.{kind}: a kind name may hold letters, "
                            "digits, '_', '-'")
        try:
            mapping = integration.mapping(kind)  # compiled: a jq syntax error names its key
        except MappingError as exc:
            problems.append(f"sources.{name}.{integration.mapping_key(kind)}.{exc.key}: "
                            f"{exc.detail}")
            continue
        if mapping is None:
            continue
        table, where = mapping.table(name).lower(), f"sources.{name}.kinds.{kind}"
        if table in tables:
            problems.append(f"{where}.mapping.table: {table!r} is already the table of "
                            f"{tables[table]} (a table holds one kind)")
        tables.setdefault(table, where)
    return source


def load_config(path: Path | str) -> SluiceConfig:
    """Read, expand and validate a sluice.toml. Raises ConfigError naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        hint = (" (give another with --config PATH or $SLUICE_CONFIG; the README shows one)"
                if isinstance(exc, FileNotFoundError) else "")
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}{hint}"
                          ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, path, digest=config_digest(text))


def get_config(path: Path | str | None = None) -> SluiceConfig:
    """The configuration of this process: ``path``, else ``$SLUICE_CONFIG``, else
    ./sluice.toml; read and validated once per path (``load_config`` reads it again)."""
    return _loaded(str(path or get_settings().config))


@lru_cache(maxsize=8)
def _loaded(path: str) -> SluiceConfig:
    return load_config(path)
