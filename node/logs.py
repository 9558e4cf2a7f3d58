"""Log hygiene: no element value a peer sent reaches a log line.

pydicom and pynetdicom describe malformed input with the raw value in the
message (``Invalid value for VR UI: b'...'``); a value that swallowed the
elements after it carries Patient's Name and ID. :func:`install_log_hygiene`
turns pydicom's reading validation off (ingress checks what it needs itself),
routes warnings through logging, and gives the libraries' loggers a filter
that withholds every quoted or bytes value.
"""

from __future__ import annotations

import logging
import re

from pydicom import config as pydicom_config

#: Quoted or bytes literals (``'...'``, ``"..."``, ``b'...'``), and bracketed dumps.
_VALUES = re.compile(r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*"|\[[^\]]{24,}\]""")
_WITHHELD = "<value withheld>"
#: Loggers whose messages may quote received values.
LIBRARY_LOGGERS = ("pydicom", "pynetdicom", "py.warnings", "highdicom")


def redact(message: str) -> str:
    """``message`` with every quoted value replaced by a placeholder."""
    return _VALUES.sub(_WITHHELD, message)


class RedactValues(logging.Filter):
    """Rewrites a record's message with :func:`redact` (args are formatted in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = redact(record.getMessage())
        record.msg, record.args = message, None
        return True


_FILTER = RedactValues()


def install_log_hygiene() -> None:
    """Make this process's logs free of received values (idempotent)."""
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
