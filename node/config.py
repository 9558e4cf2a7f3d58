"""Settings: one frozen object, from CLI > environment (``AINODE_``) > YAML > defaults.

A YAML file looks like::

    node:
      ae_title: AINODE
      dicom_port: 11112
      http_port: 8080
      storage_dir: ./ainode-data
      database_url: sqlite:///./ainode-data/ainode.db
      study_stable_seconds: 20
    destinations:
      pacs: {dimse: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}}
    routes:
      - name: ct
        match: {Modality: CT}
        pipelines: [ct-anatomy]
        send_to: [pacs]

Environment variables override nested keys with ``__`` between levels, e.g.
``AINODE_NODE__DICOM_PORT=11113``. A wrong key or value raises
:class:`ConfigError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from node.errors import ConfigError

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, no controls


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError("an AE title is 1-16 printable characters, no backslash")
    return value.strip()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DimseDestination(_Model):
    """A DICOM peer results are sent to by C-STORE."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)

    _ae = field_validator("ae_title")(_check_ae_title)


ResultFormat = Literal["seg", "sr"]


class Destination(_Model):
    """Where results go, and which result objects this destination gets."""

    dimse: DimseDestination
    formats: tuple[ResultFormat, ...] = ("seg", "sr")


class RouteMatch(_Model):
    """Conditions on one series; all given conditions must hold.

    ``Modality``, ``BodyPartExamined``, ``SOPClassUID`` and ``CallingAETitle``
    take one value or a list (case-insensitive exact match);
    ``SeriesDescription`` and ``StudyDescription`` are regular expressions
    searched case-insensitively.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    Modality: tuple[str, ...] | None = None
    BodyPartExamined: tuple[str, ...] | None = None
    SOPClassUID: tuple[str, ...] | None = None
    CallingAETitle: tuple[str, ...] | None = None
    SeriesDescription: str | None = None
    StudyDescription: str | None = None

    @field_validator("Modality", "BodyPartExamined", "SOPClassUID", "CallingAETitle", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("SeriesDescription", "StudyDescription")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class Route(_Model):
    """A routing rule: series matching ``match`` run ``pipelines``, results go to ``send_to``."""

    name: str = Field(min_length=1, max_length=64)
    match: RouteMatch = RouteMatch()
    pipelines: tuple[str, ...] = Field(min_length=1)
    send_to: tuple[str, ...] = ()


class NodeSettings(_Model):
    """The node's own identity, ports, paths and timings."""

    ae_title: str = "AINODE"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    storage_dir: Path = Path("./ainode-data")
    database_url: str | None = None
    study_stable_seconds: float = Field(default=20.0, gt=0)
    workers: int = Field(default=1, ge=1, le=64)
    job_timeout_seconds: float = Field(default=1800.0, gt=0)
    min_free_disk_mb: int = Field(default=512, ge=0)
    network_timeout_seconds: float = Field(default=60.0, gt=0)
    max_associations: int = Field(default=16, ge=1)
    allowed_calling_ae_titles: tuple[str, ...] = ()
    worker_memory_limit_mb: int = Field(default=0, ge=0)
    institution_name: str | None = None
    seg_series_number: int = Field(default=9001, ge=1)
    sr_series_number: int = Field(default=9002, ge=1)
    poll_interval_seconds: float = Field(default=0.5, gt=0)

    _ae = field_validator("ae_title")(_check_ae_title)

    @property
    def resolved_database_url(self) -> str:
        """``database_url``, defaulting to SQLite inside ``storage_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.storage_dir / 'ainode.db').resolve()}"


class EgressSettings(_Model):
    """Retry policy for deliveries: exponential backoff, capped."""

    max_attempts: int = Field(default=6, ge=1)
    backoff_initial_seconds: float = Field(default=5.0, gt=0)
    backoff_max_seconds: float = Field(default=600.0, gt=0)


class Settings(BaseSettings):
    """All of ainode's settings (frozen). Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="AINODE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    node: NodeSettings = NodeSettings()
    destinations: dict[str, Destination] = {}
    routes: tuple[Route, ...] = ()
    egress: EgressSettings = EgressSettings()

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        names = [r.name for r in self.routes]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"route names must be unique, repeated: {sorted(dupes)}")
        for i, route in enumerate(self.routes):
            for dest in route.send_to:
                if dest not in self.destinations:
                    raise ValueError(
                        f"routes.{i}.send_to: unknown destination {dest!r} "
                        f"(configured: {sorted(self.destinations) or 'none'})"
                    )
        return self


class _MappingSource(PydanticBaseSettingsSource):
    """A settings source over an already-parsed YAML mapping."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def load_settings(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build the settings: ``overrides`` > environment > ``config_file`` > defaults.

    Raises
    ------
    ConfigError
        When the file cannot be read, or a key or value is wrong; the message
        names every offending key.
    """
    file_data = _read_yaml(config_file) if config_file is not None else {}
    where = f" in {config_file}" if config_file else ""

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _MappingSource(settings_cls, file_data))

    _Loaded.__name__ = _Loaded.__qualname__ = "Settings"
    try:
        return _Loaded(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration{where}:\n{_describe(exc)}") from exc
