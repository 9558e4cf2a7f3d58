"""The project's root exception.

Every error ainode raises on purpose derives from :class:`AinodeError`, so the
node can tell a refused input or a failed analysis (a clear, audited failure)
from a programming error. It lives here, in the package every other package may
import, because ``pipelines/`` depends on nothing else of ainode.
"""

from __future__ import annotations


class AinodeError(Exception):
    """Root of every deliberate ainode error."""


class PipelineError(AinodeError):
    """A pipeline could not analyse its input; the message says why."""


class InputError(PipelineError):
    """The input series is unusable for analysis (no pixels, no geometry, ...)."""
