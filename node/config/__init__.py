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
      cloud: {dicomweb: {url: https://pacs.example.org/dicom-web, token: "..."}}
    sources:                 # PACSs the node may pull from (inference requests)
      pacs: {dimse: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242, retrieve: c-get}}
    api:
      tokens: ["a-long-random-token"]   # or AINODE_API_TOKEN
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
from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from node.config.base import NAME, Model, check_ae_title, check_tokens
from node.config.peers import (
    Destination,
    DicomwebEndpoint,
    DimseDestination,
    DimseSource,
    ResultProfile,
    Source,
)
from node.errors import ConfigError

__all__ = [
    "ApiSettings",
    "CompletenessSettings",
    "ConfiguredPipeline",
    "Destination",
    "DicomwebEndpoint",
    "DimseDestination",
    "DimseSource",
    "EgressSettings",
    "NodeSettings",
    "ResultProfile",
    "RetrievalSettings",
    "Route",
    "RouteMatch",
    "Settings",
    "Source",
    "load_settings",
]


class ConfiguredPipeline(Model):
    """A pipeline loaded from configuration (a checksummed MONAI bundle)."""

    type: Literal["monai-bundle"]
    path: Path
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    label_map: Path | None = None
    bf16_agreement_threshold: float = Field(default=0.999, ge=0, le=1)

    @field_validator("path", "label_map")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"{value} does not exist")
        return value


class ApiSettings(Model):
    """The HTTP API and DICOMweb service: who may call them, how much they accept.

    Clients send ``Authorization: Bearer <token>``. Tokens come from
    ``tokens`` and the ``AINODE_API_TOKEN`` environment variable. With no
    token and ``auth_disabled`` false, protected endpoints answer 503 naming
    how to configure one. ``/healthz`` and ``/metrics`` carry no patient
    data and stay open unless ``protect_metrics`` is set.
    """

    tokens: tuple[SecretStr, ...] = ()
    auth_disabled: bool = False
    protect_metrics: bool = False
    max_upload_mb: int = Field(default=4096, ge=1)
    serve_inputs: bool = False
    #: Base URL clients reach the node at (behind a reverse proxy); links in DICOMweb
    #: responses (RetrieveURL, BulkDataURI) start with it. Default: from the request.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")

    _long_enough = field_validator("tokens")(check_tokens)


class CompletenessSettings(Model):
    """Evidence-based study completeness: ask the sending PACS how much a study holds.

    When the sender of a study is a configured source, after the quiet
    period the node compares what it holds with the source's
    NumberOfStudyRelatedInstances / NumberOfSeriesRelatedInstances and waits
    (up to ``max_wait_seconds`` after the last instance) for the rest.
    """

    enabled: bool = True
    max_wait_seconds: float = Field(default=300.0, ge=0)
    query_timeout_seconds: float = Field(default=10.0, gt=0)


class RouteMatch(Model):
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


class Route(Model):
    """A routing rule: series matching ``match`` run ``pipelines``, results go to ``send_to``."""

    name: str = Field(min_length=1, max_length=64)
    match: RouteMatch = RouteMatch()
    pipelines: tuple[str, ...] = Field(min_length=1)
    send_to: tuple[str, ...] = ()
    #: Content arriving after this route's jobs for a study ran. ``add``: new
    #: series get their own jobs, a series that gained instances is analysed
    #: again as a whole; earlier results stay. ``rerun``: every series of the
    #: study this route matched is analysed again in new jobs (the decision is
    #: in the ``study_complete`` audit event) and replaces the earlier results:
    #: the earlier jobs are marked superseded (a queued one is cancelled), and
    #: each new job sends an IHE IOCM rejection note (KOS "Rejected for Quality
    #: Reasons") withdrawing the earlier job's results.
    late_series: Literal["add", "rerun"] = "add"


class NodeSettings(Model):
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

    _ae = field_validator("ae_title")(check_ae_title)

    @property
    def resolved_database_url(self) -> str:
        """``database_url``, defaulting to SQLite inside ``storage_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.storage_dir / 'ainode.db').resolve()}"


class EgressSettings(Model):
    """Retry policy for deliveries: exponential backoff, capped."""

    max_attempts: int = Field(default=10, ge=1)
    backoff_initial_seconds: float = Field(default=5.0, gt=0)
    backoff_max_seconds: float = Field(default=600.0, gt=0)


class RetrievalSettings(Model):
    """Retry policy for inference requests whose retrieval failed.

    For example the PACS is down, or the study is not there yet.
    """

    max_attempts: int = Field(default=5, ge=1)
    backoff_initial_seconds: float = Field(default=10.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)


class Settings(BaseSettings):
    """All of ainode's settings (frozen). Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="AINODE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    node: NodeSettings = NodeSettings()
    destinations: dict[str, Destination] = {}
    routes: tuple[Route, ...] = ()
    egress: EgressSettings = EgressSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    sources: dict[str, Source] = {}
    pipelines: dict[str, ConfiguredPipeline] = {}
    api: ApiSettings = ApiSettings()
    completeness: CompletenessSettings = CompletenessSettings()
    #: One more API token, usually from the ``AINODE_API_TOKEN`` environment variable.
    api_token: SecretStr | None = Field(default=None, min_length=16)

    @property
    def api_tokens(self) -> tuple[str, ...]:
        """Every accepted API token (``api.tokens`` plus ``AINODE_API_TOKEN``)."""
        tokens = [t.get_secret_value() for t in self.api.tokens]
        if self.api_token is not None:
            tokens.append(self.api_token.get_secret_value())
        return tuple(tokens)

    @field_validator("destinations", "sources")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not NAME.match(name):
                raise ValueError(
                    f"name {name!r}: a name is 1-64 characters, letters, digits, '-', '_' or '.'"
                )
        return value

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
        seen: dict[str, str] = {}
        for name, source in self.sources.items():
            for token in source.api_tokens:
                value = token.get_secret_value()
                if value in seen:
                    raise ValueError(
                        f"sources.{name}.api_tokens: the same token is also given to "
                        f"source {seen[value]!r}; each sender needs its own"
                    )
                if value in self.api_tokens:
                    raise ValueError(
                        f"sources.{name}.api_tokens: a sender token must differ from "
                        "the API tokens (api.tokens, AINODE_API_TOKEN)"
                    )
                seen[value] = name
        return self

    @property
    def sender_tokens(self) -> dict[str, str]:
        """``token -> source name`` for the tokens configured sources send STOW-RS with."""
        return {
            t.get_secret_value(): name
            for name, source in self.sources.items()
            for t in source.api_tokens
        }

    def source_for_calling_ae(self, calling_ae_title: str | None) -> tuple[str, Source] | None:
        """The configured source that sends with ``calling_ae_title``, if any."""
        if not calling_ae_title:
            return None
        for name, source in self.sources.items():
            if calling_ae_title.strip().upper() in {
                a.strip().upper() for a in source.sender_ae_titles
            }:
                return name, source
        return None


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
