"""Pipelines by name: registered (entry points), ``module:Class``, or configured MONAI bundles.

Read in the node (start-up checks, the audit record's versions) and in the
worker processes, which initialise each pipeline once and reuse it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.config import Settings
from node.errors import ConfigError, JobError
from pipelines import registry
from pipelines.base import Pipeline
from pipelines.errors import PipelineError

logger = logging.getLogger(__name__)


def pipeline_class(name: str) -> type[Pipeline]:
    """A registered pipeline by name, or ``"package.module:Class"`` for an unregistered one."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise JobError(f"cannot import pipeline {name!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
            raise JobError(f"{name!r} is not a Pipeline subclass")
        return cls
    return registry.get(name)


def configured_pipeline_class(name: str, config: dict[str, Any]) -> type[Pipeline]:
    """The class of a pipeline configured under ``pipelines:`` (a checksummed MONAI bundle).

    Only ``metadata.json`` and the label map are read here; weights load in
    ``initialize()`` in the worker, after their SHA-256 is checked.
    """
    if config.get("type") != "monai-bundle":
        raise JobError(f"pipeline {name!r}: unknown type {config.get('type')!r}")
    from pipelines.monai_bundle import MonaiBundlePipeline

    label_map = config.get("label_map")
    return MonaiBundlePipeline.configured(
        name,
        Path(config["path"]),
        config["sha256"],
        Path(label_map) if label_map else None,
        agreement_threshold=float(config.get("bf16_agreement_threshold", 0.999)),
    )


class PipelineCache:
    """Pipelines initialised once per worker process and reused across jobs."""

    def __init__(self) -> None:
        self._pipelines: dict[str, Pipeline] = {}

    def get(self, name: str, config: dict[str, Any] | None = None) -> Pipeline:
        if name not in self._pipelines:
            cls = configured_pipeline_class(name, config) if config else pipeline_class(name)
            pipeline = cls()
            pipeline.initialize()
            self._pipelines[name] = pipeline
        return self._pipelines[name]

    def close(self) -> None:
        for pipeline in self._pipelines.values():
            try:
                pipeline.finalize()
            except Exception:
                logger.exception("pipeline %s failed to finalize", pipeline.name)
        self._pipelines.clear()


def pipeline_info(name: str) -> tuple[str | None, str | None]:
    """``(version, model checksum)`` of a pipeline, for the audit record."""
    cls = pipeline_class(name)
    return cls.version, cls.model_checksum


def check_pipelines(settings: Settings) -> None:
    """Fail at start-up, not at the first study, when a route names an unknown pipeline.

    Pipelines configured under ``pipelines:`` (MONAI bundles) are checked by
    their own settings model (path exists, checksum given).
    """
    for route in settings.routes:
        for name in route.pipelines:
            try:
                if name in settings.pipelines:
                    _check_bundle(name, settings.pipelines[name].model_dump(mode="json"))
                    continue
                pipeline_class(name)
            except (PipelineError, JobError) as exc:
                raise ConfigError(f"route {route.name!r}: {exc}") from exc


def _check_bundle(name: str, config: dict[str, Any]) -> None:
    """Read a configured bundle's metadata and label map, and check its weights' SHA-256 now."""
    from pipelines.monai_bundle import WEIGHTS_FILE, sha256_of

    configured_pipeline_class(name, config)
    expected = str(config["sha256"]).lower().removeprefix("sha256:")
    weights = Path(config["path"]) / WEIGHTS_FILE
    if not weights.exists():
        raise PipelineError(f"bundle {name}: weights file {weights} is missing")
    actual = sha256_of(weights)
    if actual != expected:
        raise PipelineError(
            f"bundle {name}: weights checksum mismatch (configured {expected[:12]}..., "
            f"file {actual[:12]}...); refusing to load: check the bundle or update "
            f"pipelines.{name}.sha256"
        )


class PipelineCatalog:
    """The pipelines this node can run: registered ones and those configured under ``pipelines:``.

    Parameters
    ----------
    configured : mapping
        ``settings.pipelines``: configured (MONAI bundle) pipelines by name.
    """

    def __init__(self, configured: Mapping[str, Any]) -> None:
        self._configured = {
            name: value.model_dump(mode="json") for name, value in configured.items()
        }

    def config(self, name: str) -> dict[str, Any] | None:
        """A configured pipeline's settings (for the worker); ``None`` for a registered one."""
        return self._configured.get(name)

    def pipeline_class(self, name: str) -> type[Pipeline]:
        config = self._configured.get(name)
        return configured_pipeline_class(name, config) if config else pipeline_class(name)

    def info(self, name: str) -> tuple[str | None, str | None]:
        """``(version, model checksum)`` of a pipeline, for the audit record."""
        cls = self.pipeline_class(name)
        return cls.version, cls.model_checksum

    def known(self, name: str) -> bool:
        if name in self._configured:
            return True
        try:
            pipeline_class(name)
        except (PipelineError, JobError):
            return False
        return True

    def compares_with_prior(self, name: str) -> bool:
        """Whether the pipeline needs the node to fetch a prior series (``run_with_prior``)."""
        return name not in self._configured and hasattr(pipeline_class(name), "run_with_prior")
