"""Find the installed pipelines through the ``ainode.pipelines`` entry points.

A pipeline package declares, in its ``pyproject.toml``::

    [project.entry-points."ainode.pipelines"]
    my-pipeline = "my_package.module:MyPipeline"

The entry point's name must equal the class's ``name`` attribute.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

from pipelines.base import Pipeline
from pipelines.errors import PipelineError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ainode.pipelines"


def available() -> dict[str, type[Pipeline]]:
    """Every installed pipeline class by name.

    Raises
    ------
    PipelineError
        When an entry point cannot be imported, is not a :class:`Pipeline`
        subclass, or its name differs from the class's ``name``.
    """
    return {ep.name: _load(ep) for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Sorted names of the installed pipelines (loads none of them)."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def get(name: str) -> type[Pipeline]:
    """The pipeline class registered as ``name``.

    Raises
    ------
    PipelineError
        When no pipeline of that name is installed (the message lists the
        installed ones) or when it cannot be loaded.
    """
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(names()) or "none"
        raise PipelineError(f"unknown pipeline {name!r}; installed pipelines: {known}")
    if len(matches) > 1:
        logger.warning("pipeline %s is registered %d times; using the first", name, len(matches))
    return _load(matches[0])


def _load(entry_point: EntryPoint) -> type[Pipeline]:
    try:
        cls = entry_point.load()
    except (ImportError, AttributeError) as exc:
        raise PipelineError(
            f"pipeline {entry_point.name!r} ({entry_point.value}) cannot be imported: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
        raise PipelineError(f"pipeline {entry_point.name!r} is not a Pipeline subclass")
    if getattr(cls, "name", None) != entry_point.name:
        raise PipelineError(
            f"pipeline entry point {entry_point.name!r} names a class whose name is "
            f"{getattr(cls, 'name', None)!r}"
        )
    return cls
