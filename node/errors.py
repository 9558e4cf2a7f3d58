"""Errors raised by the node; all derive from the project's root :class:`AinodeError`."""

from __future__ import annotations

from pipelines.errors import AinodeError, InputError, PipelineError

__all__ = [
    "AinodeError",
    "ConfigError",
    "DeliveryError",
    "InputError",
    "JobError",
    "PipelineError",
    "StorageError",
]


class ConfigError(AinodeError):
    """The configuration is wrong; the message names the key and what to do."""


class StorageError(AinodeError):
    """An instance could not be stored durably (disk full, permissions, ...)."""


class JobError(AinodeError):
    """A job failed: the pipeline raised, crashed, or ran out of time."""


class DeliveryError(AinodeError):
    """A result could not be delivered to a destination."""
